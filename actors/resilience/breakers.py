"""Breaker shards: the circuit breakers of the fleet's targets, one shard per pool replica.

A target belongs to shard ``crc32(target) % shards`` (`flotilla.actors.resilience.gate.shard_of`), so each
breaker has exactly one owner and every node's gate reports a target's outcomes to the same
place. A shard feeds the outcomes into the target's `Breaker` (actors/resilience/breaker.py), grants the
half-open trial calls (at most `trial_calls` in all, across the nodes that ask) and answers
each report with every breaker it owns that is not closed. When a breaker opens or closes,
every node that reported lately is told at once.

Drift is judged per target over a window, not per page: the shard keeps each target's last
`drift_window` extracted pages, and trips its breaker only once at least `drift_minimum`
pages are in the window and the share of drifted ones reaches `drift_threshold` (a template
change makes every page drift; a few pages without a price are the site, not drift). A
half-open trial whose page drifted fails like any failed call.

An incident raises one `Alert` when the breaker opens from closed (a drift with the count and
sample pages), reopenings while half-open only log, and closing raises an info alert. Trials granted but not
reported within `trial_timeout` are forgotten, so a node that died holding them does not
keep the breaker half-open for ever. Breakers nobody reported on for `forget_after` are
dropped (an open one simply opens again if its target is still bad).
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, ClassVar

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.human import human_duration
from flotilla.actors.resilience.alerts import raise_alert
from flotilla.actors.resilience.breaker import Breaker, BreakerSettings
from flotilla.actors.resilience.messages import (
    BreakerCommand,
    BreakerStates,
    BreakerStatus,
    TargetReport,
)

DRIFT_WINDOW = 20
"""Extracted pages per target over which drift is judged (docs/resilience.md)."""
DRIFT_MINIMUM = 10
"""Pages that must be in the window before drift can trip a breaker."""
DRIFT_THRESHOLD = 0.5
"""Share of drifted pages in the window that trips the target's breaker."""
GATE_FORGOTTEN = 30.0
"""A gate not heard from this long is no longer told of changes (its node left)."""
SWEEP_EVERY = 60.0
"""Seconds between looks for idle closed breakers to drop."""


def _open_for(seconds: float) -> str:
    """What an open breaker's alert says of its time: open for how long, then what."""
    return f"open for {human_duration(max(0.0, seconds))}; trial calls after that"


class NotClosedBreaker(msgspec.Struct, frozen=True):
    """One target whose breaker is not closed, in a shard's `inspect()`: `open_for` seconds
    more, why, and the share of failed calls that opened it (None when it was tripped by
    drift or an operator: `Breaker.opened_at_rate`)."""

    state: str
    open_for: float
    reason: str
    opened_at_rate: float | None


class ShardSnapshot(msgspec.Struct, frozen=True):
    """A breaker shard's `inspect()`: its number, targets known, breakers it opened, and the
    targets whose breaker is not closed."""

    shard: int
    targets: int
    opened: int
    not_closed: dict[str, NotClosedBreaker]


class BreakerShard(Actor):
    """One shard of the fleet's target breakers (its index is its pool replica id)."""

    PATH_ARGS: ClassVar[dict[str, str]] = {"alerts": "alerts"}

    def __init__(
        self,
        alerts: str | None = None,
        window: int = 20,
        minimum_calls: int = 10,
        failure_threshold: float = 0.5,
        open_base: float = 5.0,
        open_cap: float = 300.0,
        jitter: float = 0.2,
        trial_calls: int = 3,
        trial_timeout: float = 30.0,
        forget_after: float = 600.0,
        drift_window: int = DRIFT_WINDOW,
        drift_minimum: int = DRIFT_MINIMUM,
        drift_threshold: float = DRIFT_THRESHOLD,
    ) -> None:
        super().__init__()
        if not 1 <= drift_minimum <= drift_window or not 0 < drift_threshold <= 1:
            raise ValueError("need 1 <= drift_minimum <= drift_window and 0 < drift_threshold <= 1")
        self.drift_window = drift_window
        self.drift_minimum = drift_minimum
        self.drift_threshold = drift_threshold
        self.pages: dict[str, deque[bool]] = {}
        """Per target, its last extracted pages: True = drifted."""
        self.drift_samples: dict[str, deque[str]] = {}
        self.settings = BreakerSettings(
            window, minimum_calls, failure_threshold, open_base, open_cap, jitter, trial_calls
        )
        self.alerts_path = alerts
        self.trial_timeout = trial_timeout
        self.forget_after = forget_after
        self.breakers: dict[str, Breaker] = {}
        self.touched: dict[str, float] = {}
        self.trials_granted_at: dict[str, float] = {}
        self.opened = 0
        self.rng = random.Random()
        self._last_sweep = time.monotonic()
        self.gates: dict[str, float] = {}
        self.alerts: list[tuple[str, str, str]] = []
        """Alerts to raise once every node has been told of the change (severity, title, detail)."""

    def on_start(self) -> None:
        last = self.path.rsplit("/", 1)[-1]
        self.shard = int(last) if last.isdigit() else 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TargetReport):
            self._report(message)
            return None
        if isinstance(message, BreakerCommand):
            return self._command(message)
        return super().on_receive(message)

    def _breaker(self, target: str, now: float) -> Breaker:
        self.touched[target] = now
        breaker = self.breakers.get(target)
        if breaker is None:
            breaker = self.breakers[target] = Breaker(self.settings, self.rng)
        return breaker

    def _report(self, report: TargetReport) -> None:
        now = time.monotonic()
        for target in report.outcomes.keys() | report.trials.keys():
            breaker = self._breaker(target, now)
            if target in report.last_failure:
                breaker.last_failure = report.last_failure[target]
            trials = report.trials.get(target, [])
            # Half-open, only the trial calls decide; calls made before it opened do not.
            outcomes = trials if breaker.state == "half_open" else report.outcomes.get(target, []) + trials
            for success in outcomes:
                before = breaker.state
                drifting = before == "half_open" and breaker.reason.startswith("layout drift")
                after = breaker.record(success, now, breaker.reason if drifting and not success else "")
                if after != before:
                    self._transition(target, breaker, before)
        for target, pages in report.extractions.items():
            self._judge_drift(target, pages, report.drifted.get(target, []), now)
        granted: dict[str, int] = {}
        for target in report.want_trials:
            tripped = self.breakers.get(target)
            if tripped is None or tripped.state == "closed":
                continue  # closed meanwhile: the answer tells the node so
            self.touched[target] = now
            started = self.trials_granted_at.get(target)
            if started is not None and now - started > self.trial_timeout:
                tripped.forget_trials()  # granted long ago and never reported
            count = 0
            while count < self.settings.trial_calls and tripped.allows(now):
                count += 1
            if count:
                granted[target] = count
                self.trials_granted_at[target] = now
        self._forget_idle(now)
        self.gates[report.gate] = now
        states = self._states(now, granted)
        self.system.ref(report.gate).tell(BreakerStates(self.shard, states))
        if self.alerts:
            self._tell_every_gate(now, states, but=report.gate)

    def _judge_drift(self, target: str, pages: list[bool], samples: list[str], now: float) -> None:
        """Add a report's extracted pages (True = had its fields) to the target's drift window;
        trip its breaker once drifted pages reach their share of a full enough window."""
        window = self.pages.setdefault(target, deque(maxlen=self.drift_window))
        window.extend(not ok for ok in pages)
        kept = self.drift_samples.setdefault(target, deque(maxlen=3))
        kept.extend(samples)
        breaker = self._breaker(target, now)
        drifted = sum(window)
        if (
            breaker.state != "closed"
            or len(window) < self.drift_minimum
            or drifted < self.drift_threshold * len(window)
        ):
            return
        self.trials_granted_at.pop(target, None)
        reason = (
            f"layout drift: {drifted} of the last {len(window)} pages lacked required fields (e.g. {'; '.join(kept)})"
        )
        breaker.trip(now, reason[:1000])
        window.clear()
        self._transition(target, breaker, "closed")

    def _states(self, now: float, granted: dict[str, int]) -> dict[str, BreakerStatus]:
        return {
            target: BreakerStatus(b.state, max(0.0, b.open_until - now), granted.get(target, 0), b.reason)
            for target, b in self.breakers.items()
            if b.state != "closed"
        }

    def _tell_every_gate(self, now: float, states: dict[str, BreakerStatus], but: str = "") -> None:
        """A breaker opened or closed: every node that reported lately hears of it now, not on
        its next report; then the alerts go out."""
        plain = {t: msgspec.structs.replace(status, trials=0) for t, status in states.items()}
        for gate, seen in list(self.gates.items()):
            if now - seen > GATE_FORGOTTEN:
                del self.gates[gate]
            elif gate != but:
                self.system.ref(gate).tell(BreakerStates(self.shard, plain))
        for severity, title, detail in self.alerts:
            raise_alert(self, self.alerts_path, severity, title, detail)  # type: ignore[arg-type]
        self.alerts.clear()

    def _transition(self, target: str, breaker: Breaker, before: str) -> None:
        """One alert per incident: when the breaker opens from closed (reopening after a
        failed trial only logs), and an info alert when it closes again."""
        self.trials_granted_at.pop(target, None)
        if breaker.state == "open":
            self.opened += 1
            open_for = breaker.open_until - time.monotonic()
            if before == "closed":
                drift = breaker.reason.startswith("layout drift")
                self.alerts.append(
                    (
                        "warning",
                        f"layout drift on {target}: breaker open" if drift else f"breaker open: {target}",
                        f"{breaker.reason}; {_open_for(open_for)}",
                    )
                )
            else:
                self.log.info("breaker.reopened", target=target, open_for=round(open_for, 1), reason=breaker.reason)
        elif breaker.state == "closed" and before == "half_open":
            self.pages.pop(target, None)
            self.drift_samples.pop(target, None)
            self.alerts.append(("info", f"breaker closed: {target}", "trial calls succeeded"))

    def _forget_idle(self, now: float) -> None:
        if now - self._last_sweep < SWEEP_EVERY:
            return
        self._last_sweep = now
        for target in [t for t, at in self.touched.items() if now - at > self.forget_after]:
            del self.breakers[target], self.touched[target]  # nobody asked for it in a long while
            self.trials_granted_at.pop(target, None)
            self.pages.pop(target, None)
            self.drift_samples.pop(target, None)

    def _command(self, command: BreakerCommand) -> BreakerStatus:
        now = time.monotonic()
        breaker = self._breaker(command.target, now)
        self.trials_granted_at.pop(command.target, None)
        if command.action == "trip":
            breaker.trip(now, "opened by an operator")
            self.opened += 1
        else:
            breaker.reset()
            self.pages.pop(command.target, None)
            self.drift_samples.pop(command.target, None)
        self.log.warning("breaker.command", target=command.target, action=command.action)
        detail = _open_for(breaker.open_until - now) if command.action == "trip" else "closed: calls go through again"
        self.alerts.append(("warning", f"breaker {command.action} by an operator: {command.target}", detail))
        self._tell_every_gate(now, self._states(now, {}))
        return BreakerStatus(breaker.state, max(0.0, breaker.open_until - now), 0, breaker.reason)

    def inspect(self) -> ShardSnapshot:
        now = time.monotonic()
        return ShardSnapshot(
            shard=getattr(self, "shard", 0),
            targets=len(self.breakers),
            opened=self.opened,
            not_closed={
                t: NotClosedBreaker(
                    state=b.state,
                    open_for=round(max(0.0, b.open_until - now), 2),
                    reason=b.reason,
                    opened_at_rate=None if b.opened_at_rate is None else round(b.opened_at_rate, 3),
                )
                for t, b in self.breakers.items()
                if b.state != "closed"
            },
        )
