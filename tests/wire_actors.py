"""A user's own actor and message types, as a project outside flotilla would write them: one
type declared for the wire (`Quote`), one not (`Memo`)."""

from __future__ import annotations

from typing import Any

from flotilla.actors import Actor
from flotilla.actors.core.messages import Message


class Quote(Message, frozen=True, tag=True):
    """A price for `sku`, in cents."""

    sku: str
    cents: int


class Memo(Message, frozen=True, tag=True):
    """A message type no actor declares: it may not leave its node."""

    note: str


class QuoteDesk(Actor):
    """Answers a `Quote` with the same quote one cent dearer, and anything else with its type."""

    wire_messages = (Quote,)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Quote):
            return Quote(message.sku, message.cents + 1)
        return type(message).__name__
