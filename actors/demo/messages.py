"""Typed messages of the demo actors."""

from __future__ import annotations

from flotilla.actors.core.messages import Message

# --- demo work ------------------------------------------------------------------------


class Work(Message, frozen=True, tag=True):
    """A unit of demo work (the `ticker` sends them, `flaky` workers handle them)."""

    seq: int


class Done(Message, frozen=True, tag=True):
    """A worker finished `Work(seq)`."""

    seq: int
    worker: str


WIRE_MESSAGES: tuple[type[Message], ...] = (
    Work,
    Done,
)
"""The message types of the demo actors that may cross between nodes: part of the wire
codec's table (`flotilla.nodes.cluster.codec`)."""
