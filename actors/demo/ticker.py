"""A demo producer: sends numbered `Work` to a path at a steady rate."""

from __future__ import annotations

from typing import Any

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.scheduler import TimerHandle
from flotilla.actors.demo.messages import Work


class TickerSnapshot(msgspec.Struct, frozen=True):
    """A ticker's `inspect()`."""

    sent: int
    target: str


class _Tick:
    """Time to send the next batch."""


class Ticker(Actor):
    """Every `interval` seconds, tells `batch` `Work` messages to `target`."""

    def __init__(self, target: str, interval: float = 0.02, batch: int = 1) -> None:
        super().__init__()
        if interval <= 0 or batch < 1:
            raise ValueError("interval must be > 0 and batch >= 1")
        self.target_path = target
        self.interval = interval
        self.batch = batch
        self.sent = 0
        self._timer: TimerHandle | None = None

    def on_start(self) -> None:
        self.target = self.system.ref(self.target_path)
        self._schedule()

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, _Tick):
            return super().on_receive(message)
        for _ in range(self.batch):
            self.sent += 1
            self.target.tell(Work(self.sent))
        self._schedule()
        return None

    def _schedule(self) -> None:
        self._timer = self.send_after(self.interval, _Tick())

    def inspect(self) -> TickerSnapshot:
        return TickerSnapshot(self.sent, self.target_path)
