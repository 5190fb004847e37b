"""The node-to-node transport on its own: two transports in this process over loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flotilla.nodes.cluster.transport import Transport
from scripts.harness import free_ports, wait_until

MAX_BYTES = 64 * 1024


class Received:
    """What one transport was given by its peers, frame by frame (I/O thread writes)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.undeliverable: list[tuple[Any, str]] = []


def _transport(node: str, ports: dict[str, int], received: Received) -> Transport:
    return Transport(
        node=node,
        address=f"tcp://127.0.0.1:{ports[node]}",
        peers={name: f"tcp://127.0.0.1:{port}" for name, port in ports.items() if name != node},
        max_message_bytes=MAX_BYTES,
        high_water_mark=1000,
        backlog=1000,
        tick=0.05,
        on_frames=lambda _peer, frames: received.frames.extend(frames),
        on_undeliverable=lambda token, reason: received.undeliverable.append((token, reason)),
        on_tick=lambda: None,
        boot="test",
    )


@pytest.fixture
def pair() -> Iterator[tuple[Transport, Transport, Received, Received]]:
    """`alpha` started; `beta` built but not started (the test starts it)."""
    alpha_port, beta_port = free_ports(2)
    ports = {"alpha": alpha_port, "beta": beta_port}
    at_alpha, at_beta = Received(), Received()
    alpha, beta = _transport("alpha", ports, at_alpha), _transport("beta", ports, at_beta)
    alpha.start()
    try:
        yield alpha, beta, at_alpha, at_beta
    finally:
        alpha.close()
        if beta._thread.is_alive():  # noqa: SLF001 - started by the test
            beta.close()


def test_frames_of_each_sender_arrive_in_order_while_queued_ones_drain(
    pair: tuple[Transport, Transport, Received, Received],
) -> None:
    """Frames given before the peer listens wait in the backlog; frames given while they
    drain, direct ones (asks, answers) among them, must not overtake them (a sender writes
    to the socket itself only when nothing for that peer waits), and none is lost."""
    alpha, beta, _, at_beta = pair
    per_sender = 3000
    for i in range(200):  # beta does not listen yet: these can only wait
        alpha.send("beta", b"A:%d" % i)
    beta.start()

    def send(name: bytes, first: int) -> None:
        for i in range(first, per_sender):
            alpha.send("beta", b"%s:%d" % (name, i), direct=i % 2 == 0)

    senders = [
        threading.Thread(target=send, args=(b"A", 200)),
        threading.Thread(target=send, args=(b"B", 0)),
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    wait_until(lambda: len(at_beta.frames) >= 2 * per_sender, timeout=30, what="every frame at beta")
    for name in (b"A", b"B"):
        sequence = [int(f.split(b":")[1]) for f in at_beta.frames if f.startswith(name + b":")]
        assert sequence == list(range(per_sender)), f"frames of sender {name!r} out of order or lost"
    assert alpha.stats.sent_frames["beta"] == 2 * per_sender
    alpha.send("beta", b"C", direct=True)  # nothing waits any more: written by this thread
    wait_until(lambda: at_beta.frames[-1:] == [b"C"], what="a frame sent directly")


def test_a_frame_too_large_is_handed_back_even_when_nothing_waits(
    pair: tuple[Transport, Transport, Received, Received],
) -> None:
    alpha, beta, at_alpha, at_beta = pair
    beta.start()
    alpha.send("beta", b"first")
    wait_until(lambda: at_beta.frames == [b"first"], what="the first frame")
    alpha.send("beta", b"x" * (MAX_BYTES + 1), "too large", direct=True)
    alpha.send("beta", b"after", direct=True)
    wait_until(lambda: at_beta.frames == [b"first", b"after"], what="the frame after the large one")
    assert at_alpha.undeliverable == [("too large", f"message of {MAX_BYTES + 1} bytes exceeds {MAX_BYTES}")]
