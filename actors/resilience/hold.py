"""The Hold monitor: senses the health of the whole fleet and pauses it when it collapses.

Every node's gate reports its fetch successes and failures per target (TRANSIENT and BLOCKED
fail; dead pages and drifted pages count as answers; waiting jobs do not count), only for the
calls made while that target's breaker was closed: a target its own breaker isolates is not
the fleet's problem. Hold is for the fleet failing as a whole — the seeds' proxy pool
collapsing, the network going, many targets failing at once — never for one dead host or a
few bad pages. So the monitor judges targets, not calls: over the last `window` seconds, a
target with at least `target_minimum` calls is failing when its share of successes is below
`threshold`; the fleet enters Hold when at least `min_targets` targets are failing and they
are at least `failing_share` of the targets judged. Then fresh fetches pause (their jobs wait
in the journal), result queries are marked stale, and a critical `Alert` goes out. In Hold,
every `probe_interval` seconds `probes` probe permits go to a node that has jobs held back;
Hold ends by itself once the last `recovery_probes` probes all succeeded.

An operator may force Hold `on` (it stays on, whatever the probes say) or `off` (it never
enters), and give it back to the fleet's health with `auto`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, ClassVar

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.human import human_duration
from flotilla.actors.resilience.alerts import raise_alert
from flotilla.actors.resilience.messages import FleetReport, HoldCommand, HoldMode, HoldStatus


class HoldSnapshot(msgspec.Struct, frozen=True):
    """The Hold monitor's `inspect()`."""

    on: bool
    mode: HoldMode
    reason: str
    since: float
    success_rate: float | None
    entered: int
    recent_probes: list[bool]


class HoldMonitor(Actor):
    """See the module docstring."""

    PATH_ARGS: ClassVar[dict[str, str]] = {"alerts": "alerts"}

    def __init__(
        self,
        alerts: str | None = None,
        threshold: float = 0.6,
        window: float = 30.0,
        target_minimum: int = 5,
        min_targets: int = 3,
        failing_share: float = 0.5,
        probe_interval: float = 2.0,
        probes: int = 2,
        recovery_probes: int = 3,
        mode: HoldMode = "auto",
    ) -> None:
        super().__init__()
        if not 0 < threshold <= 1 or window <= 0 or target_minimum < 1 or min_targets < 1:
            raise ValueError("0 < threshold <= 1, window > 0, target_minimum >= 1 and min_targets >= 1")
        if not 0 < failing_share <= 1:
            raise ValueError("0 < failing_share <= 1")
        if probe_interval <= 0 or probes < 1 or recovery_probes < 1:
            raise ValueError("probe_interval > 0, probes >= 1 and recovery_probes >= 1")
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"mode must be auto, on or off, not {mode!r}")
        self.alerts_path = alerts
        self.threshold = threshold
        self.window = window
        self.target_minimum = target_minimum
        self.min_targets = min_targets
        self.failing_share = failing_share
        self.probe_interval = probe_interval
        self.probes = probes
        self.recovery_probes = recovery_probes
        self.mode: HoldMode = mode
        self.on = mode == "on"
        self.since = time.time() if self.on else 0.0
        self.reason = "forced on by the topology" if self.on else ""
        self.samples: deque[tuple[float, int, int]] = deque()
        self.target_samples: dict[str, deque[tuple[float, int, int]]] = {}
        self.recent_probes: deque[bool] = deque(maxlen=recovery_probes)
        self.next_probe_at = 0.0
        self.entered = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, FleetReport):
            granted = self._report(message)
            self.system.ref(message.gate).tell(self._status(granted))
            return None
        if isinstance(message, HoldCommand):
            if message.mode is not None:
                self._command(message.mode)
            return self._status(0)
        return super().on_receive(message)

    def success_rate(self, now: float) -> tuple[float | None, int]:
        """Share of successes of every call over the window (None if there were none), and calls."""
        _expire(self.samples, now - self.window)
        succeeded = sum(s for _, s, _ in self.samples)
        total = succeeded + sum(f for _, _, f in self.samples)
        return (succeeded / total if total else None), total

    def failing_targets(self, now: float) -> tuple[list[str], int]:
        """The targets failing over the window (most failing first) and how many were judged
        (those with at least `target_minimum` calls)."""
        rates: dict[str, float] = {}
        for target in list(self.target_samples):
            samples = self.target_samples[target]
            _expire(samples, now - self.window)
            if not samples:
                del self.target_samples[target]
                continue
            succeeded = sum(s for _, s, _ in samples)
            total = succeeded + sum(f for _, _, f in samples)
            if total >= self.target_minimum:
                rates[target] = succeeded / total
        failing = sorted((t for t, rate in rates.items() if rate < self.threshold), key=rates.__getitem__)
        return failing, len(rates)

    def _report(self, report: FleetReport) -> int:
        now = time.monotonic()
        if not self.on:
            if report.succeeded or report.failed:
                self.samples.append((now, report.succeeded, report.failed))
            second = float(int(now))  # one sample per target and second: memory bounded by the window
            for target, (succeeded, failed) in report.targets.items():
                samples = self.target_samples.setdefault(target, deque())
                if samples and samples[-1][0] == second:
                    _, s, f = samples.pop()
                    succeeded, failed = succeeded + s, failed + f
                samples.append((second, succeeded, failed))
            failing, judged = self.failing_targets(now)
            if self.mode == "auto" and len(failing) >= self.min_targets and len(failing) >= self.failing_share * judged:
                named = ", ".join(failing[:5]) + (f" and {len(failing) - 5} more" if len(failing) > 5 else "")
                self._enter(
                    f"{len(failing)} of {judged} targets failing over {self.window:g} s "
                    f"(under {self.threshold:.0%} successes): {named}"
                )
            return 0
        self.recent_probes.extend([True] * report.probes_succeeded + [False] * report.probes_failed)
        if self.mode == "auto" and len(self.recent_probes) == self.recovery_probes and all(self.recent_probes):
            self._leave(f"the last {self.recovery_probes} probes succeeded")
            return 0
        if report.held_back > 0 and now >= self.next_probe_at:
            self.next_probe_at = now + self.probe_interval
            return self.probes
        return 0

    def _enter(self, reason: str) -> None:
        self.on = True
        self.since = time.time()
        self.reason = reason
        self.entered += 1
        self.recent_probes.clear()
        self.next_probe_at = 0.0
        self.log.critical("hold.entered", reason=reason)
        raise_alert(self, self.alerts_path, "critical", "fleet in Hold: fresh fetches paused", reason)

    def _leave(self, reason: str) -> None:
        self.on = False
        self.samples.clear()
        self.target_samples.clear()
        held_for = time.time() - self.since
        self.log.warning("hold.left", reason=reason, held_for=round(held_for, 1))
        raise_alert(
            self,
            self.alerts_path,
            "info",
            "fleet out of Hold: fetching resumed",
            f"{reason}; held for {human_duration(held_for)}",
        )
        self.reason = ""
        self.since = 0.0

    def _command(self, mode: HoldMode) -> None:
        self.log.warning("hold.command", mode=mode)
        self.mode = mode
        if mode == "on" and not self.on:
            self._enter("forced on by an operator")
        elif mode == "off" and self.on:
            self._leave("forced off by an operator")

    def _status(self, probes: int) -> HoldStatus:
        rate, _ = self.success_rate(time.monotonic())
        return HoldStatus(self.on, self.mode, self.reason, self.since, rate, probes)

    def inspect(self) -> HoldSnapshot:
        status = self._status(0)
        return HoldSnapshot(
            status.on,
            status.mode,
            status.reason,
            status.since,
            status.success_rate,
            self.entered,
            list(self.recent_probes),
        )


def _expire(samples: deque[tuple[float, int, int]], before: float) -> None:
    while samples and samples[0][0] < before:
        samples.popleft()
