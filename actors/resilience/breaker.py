"""Circuit breaking for one target: closed, open, half-open.

`Breaker` is the state machine (no threads, no clock of its own): outcomes of calls to a
target are recorded in a sliding window of the last `window` calls; once at least
`minimum_calls` are in the window and the share of failures reaches `failure_threshold`, the
breaker opens. An open breaker refuses calls until its open time is over; the open time
doubles each time it opens again in a row (from `open_base` up to `open_cap`, stretched by up
to `jitter` at random, so a fleet does not come back all at once). Then it is half-open: up
to `trial_calls` calls go through; if they all succeed it closes (and forgets its window), if
one fails it opens again for longer. A drifting target (DRIFT) trips it open at once.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from flotilla.actors.core.backoff import backoff_delay

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerSettings:
    """Thresholds and timings (defaults close to resilience4j's, with backoff on the open time)."""

    window: int = 20
    minimum_calls: int = 10
    failure_threshold: float = 0.5
    open_base: float = 5.0
    open_cap: float = 300.0
    jitter: float = 0.2
    trial_calls: int = 3

    def __post_init__(self) -> None:
        if not (1 <= self.minimum_calls <= self.window):
            raise ValueError("need 1 <= minimum_calls <= window")
        if not 0 < self.failure_threshold <= 1:
            raise ValueError("failure_threshold must be in (0, 1]")
        if not 0 < self.open_base <= self.open_cap:
            raise ValueError("need 0 < open_base <= open_cap")
        if not 0 <= self.jitter <= 1 or self.trial_calls < 1:
            raise ValueError("jitter must be in [0, 1] and trial_calls >= 1")


@dataclass
class Breaker:
    """The breaker of one target. Every method takes the current time `now` (seconds)."""

    settings: BreakerSettings = field(default_factory=BreakerSettings)
    rng: random.Random = field(default_factory=random.Random)
    state: BreakerState = "closed"
    open_until: float = 0.0
    opened_in_a_row: int = 0
    reason: str = ""
    last_failure: str = ""
    """What the latest failed call saw (its evidence ends the breaker's reason)."""
    opened_at_rate: float | None = None
    """While not closed: the share of failed calls in the window that opened it (the window
    itself is emptied when it opens); None when it was tripped instead (drift, an operator).
    Reopening after a failed trial keeps it: it is the incident's."""
    _window: deque[bool] = field(default_factory=deque)
    _trials_started: int = 0
    _trials_succeeded: int = 0

    @property
    def failure_rate(self) -> float:
        """Share of failures among the calls in the window (0 when empty: always, while the
        breaker is not closed; see `opened_at_rate`)."""
        return self._window.count(False) / len(self._window) if self._window else 0.0

    def allows(self, now: float) -> bool:
        """May a call go to the target now? (In half-open, each True starts one trial.)"""
        if self.state == "open":
            if now < self.open_until:
                return False
            self.state = "half_open"
            self._trials_started = self._trials_succeeded = 0
        if self.state == "half_open":
            if self._trials_started >= self.settings.trial_calls:
                return False
            self._trials_started += 1
            return True
        return True

    def record(self, success: bool, now: float, reason: str = "") -> BreakerState:
        """Record the outcome of a call; return the state after it."""
        if self.state == "half_open":
            if not success:
                self._open(now, reason or self._with_last("a trial call failed"))
            else:
                self._trials_succeeded += 1
                if self._trials_succeeded >= self.settings.trial_calls:
                    self._close()
            return self.state
        if self.state == "open":
            return self.state  # a late outcome of a call made before it opened
        self._window.append(success)
        if len(self._window) > self.settings.window:
            self._window.popleft()
        rate = self.failure_rate
        if len(self._window) >= self.settings.minimum_calls and rate >= self.settings.failure_threshold:
            self._open(now, reason or self._with_last(f"{rate:.0%} of the last {len(self._window)} calls failed"))
            self.opened_at_rate = rate
        return self.state

    def _with_last(self, reason: str) -> str:
        return f"{reason}; last: {self.last_failure}" if self.last_failure else reason

    def forget_trials(self) -> None:
        """Half-open trial calls that never reported (their jobs went elsewhere, or their
        node died) stop counting, so new trials may start."""
        if self.state == "half_open":
            self._trials_started = self._trials_succeeded

    def trip(self, now: float, reason: str) -> None:
        """Open at once (a drifting target; an operator)."""
        self._open(now, reason)
        self.opened_at_rate = None

    def reset(self) -> None:
        """Close and forget everything (an operator)."""
        self._close()

    def open_time(self) -> float:
        """How long the next opening lasts."""
        s = self.settings
        return backoff_delay(s.open_base, s.open_cap, self.opened_in_a_row, jitter=s.jitter, rng=self.rng)

    def _open(self, now: float, reason: str) -> None:
        self.open_until = now + self.open_time()
        self.opened_in_a_row += 1
        self.state = "open"
        self.reason = reason
        self._window.clear()

    def _close(self) -> None:
        self.state = "closed"
        self.opened_in_a_row = 0
        self.reason = ""
        self.opened_at_rate = None
        self._window.clear()
        self._trials_started = self._trials_succeeded = 0
