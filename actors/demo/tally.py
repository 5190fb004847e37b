"""A demo sink: counts `Done` reports per worker and logs the totals when it stops."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flotilla.actors.core.actor import Actor
from flotilla.actors.demo.messages import Done


class Tally(Actor):
    """Counts `Done` messages; an ask with anything else returns the totals."""

    def __init__(self) -> None:
        super().__init__()
        self.by_worker: Counter[str] = Counter()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Done):
            self.by_worker[message.worker] += 1
            return None
        return self.inspect()

    def on_stop(self) -> None:
        self.log.info("tally.final", **self.inspect())

    def inspect(self) -> dict[str, Any]:
        return {"done": sum(self.by_worker.values()), "by_worker": dict(sorted(self.by_worker.items()))}
