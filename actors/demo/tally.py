"""A demo sink: counts `Done` reports per worker and logs the totals when it stops."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.demo.messages import Done


class TallySnapshot(msgspec.Struct, frozen=True):
    """The tally's `inspect()` (and its answer to an ask, as a dict)."""

    done: int
    by_worker: dict[str, int]


class Tally(Actor):
    """Counts `Done` messages; an ask with anything else returns the totals."""

    def __init__(self) -> None:
        super().__init__()
        self.by_worker: Counter[str] = Counter()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Done):
            self.by_worker[message.worker] += 1
            return None
        return msgspec.structs.asdict(self.inspect())

    def on_stop(self) -> None:
        self.log.info("tally.final", **msgspec.structs.asdict(self.inspect()))

    def inspect(self) -> TallySnapshot:
        return TallySnapshot(sum(self.by_worker.values()), dict(sorted(self.by_worker.items())))
