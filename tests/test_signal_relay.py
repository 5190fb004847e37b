"""Stop signals: a handler that asks for the stop event through `SignalRelay` takes no lock, so
it cannot deadlock the main thread, whatever point of `Event.wait` a signal interrupts. (A
handler that called `Event.set` itself could block for good on the lock the interrupted wait
held: a node stuck after SIGTERM, about 1 stop in 40. That race is too narrow to provoke on
purpose here; `tests/test_cli.py`'s node-stop tests are where it showed.) This test drives the
relay with a storm of real signals while the main thread waits, as a node's does."""

from __future__ import annotations

import os
import signal
import threading
import time

from flotilla.nodes.runtime.signal_relay import SignalRelay


def test_signals_that_land_anywhere_in_event_wait_never_deadlock_and_each_sets_the_event() -> None:
    stop_sending = threading.Event()
    event = threading.Event()
    relay = SignalRelay(event)
    pokes = 0

    def handler(_signum: int, _frame: object) -> None:
        nonlocal pokes
        pokes += 1
        relay.poke()

    def send() -> None:
        while not stop_sending.is_set():
            os.kill(os.getpid(), signal.SIGUSR2)
            stop_sending.wait(0.0002)  # a storm: one signal every 0.2 ms until told to stop

    previous = signal.signal(signal.SIGUSR2, handler)
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # the main thread in and out of Event.wait, as a node's is
            event.wait(0.0001)
        assert event.is_set() and pokes > 100, pokes
    finally:
        stop_sending.set()
        sender.join(5)
        signal.signal(signal.SIGUSR2, previous)
