"""Setting a `threading.Event` from a signal handler, safely.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds the very lock `Event.set` takes (inside `Event.wait`): setting the event there can
deadlock the process for good. So a handler only writes a byte to a pipe (`poke`, which takes
no lock), and a thread of the relay's own, blocked on that pipe, sets the event. The pipe
stays open for the life of the process: a late signal must never write into a reused fd.
"""

from __future__ import annotations

import contextlib
import os
import threading


class SignalRelay:
    """Sets `event` soon after `poke()`, which is safe from a signal handler."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._relay, name="signal-relay", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Ask for the event to be set (a write to a pipe: no lock, never blocks)."""
        with contextlib.suppress(OSError):  # full (a poke is pending already) or closed
            os.write(self._write, b"!")

    def _relay(self) -> None:
        with contextlib.suppress(OSError):
            if os.read(self._read, 1):
                self.event.set()
