"""A demo worker that crashes on purpose now and then, to show supervision at work."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.demo.messages import Done, Work


class FlakySnapshot(msgspec.Struct, frozen=True):
    """A flaky worker's `inspect()`."""

    handled: int
    crash_rate: float


class DeliberateCrash(Exception):
    """Raised by `FlakyWorker` to simulate a bug."""


class FlakyWorker(Actor):
    """Handles `Work`, reporting `Done` to `report_to`; crashes with probability `crash_rate`.

    With `fail_start_rate`, `on_start` fails with that probability too.
    """

    def __init__(
        self,
        crash_rate: float = 0.05,
        report_to: str | None = None,
        fail_start_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= crash_rate <= 1 or not 0 <= fail_start_rate <= 1:
            raise ValueError("crash_rate and fail_start_rate must be within [0, 1]")
        self.crash_rate = crash_rate
        self.fail_start_rate = fail_start_rate
        self.report_to = report_to
        self.random = random.Random(seed)
        self.handled = 0

    def on_start(self) -> None:
        if self.random.random() < self.fail_start_rate:
            raise DeliberateCrash("failed to start, on purpose")
        self.report = self.system.ref(self.report_to) if self.report_to else None

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, Work):
            return super().on_receive(message)
        if self.random.random() < self.crash_rate:
            raise DeliberateCrash(f"crashed on purpose on work {message.seq}")
        self.handled += 1
        if self.report is not None:
            self.report.tell(Done(message.seq, self.path))
        return message.seq

    def inspect(self) -> FlakySnapshot:
        return FlakySnapshot(self.handled, self.crash_rate)
