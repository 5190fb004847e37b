"""A node's gate: keeps the node's `ResilienceView` in step with the fleet's control actors.

Every node runs one gate (at ``<node>/services/gate``). Every `interval` seconds it sends
what the node's fetchers and extractors recorded since the last time, and each answer brings
the current state back:

* to each breaker shard, a `TargetReport` (the outcomes of the targets that shard owns, the
  targets that drifted, the half-open targets with jobs waiting for a trial call); the shard
  answers `BreakerStates` — its breakers that are not closed, with any trial permits granted;
* to the Hold monitor, a `FleetReport` (successes, failures, probes, jobs held back); it
  answers a `HoldStatus` with any probe permits granted;
* to the proxy pool, a `ProxyReport`; it answers `ProxyStates`;
* to the rate limiter, `SlowDown` for every 429 with Retry-After, and a `TokenRequest` per
  target whose slots are wanted, at once (not on the next tick); it answers `TokenGrant`.

Because every answer carries the whole current state, a restarted gate, shard or monitor
needs no replay: the next round puts everything right. A request for slots that is not
answered within `request_timeout` is sent again (the limiter may have restarted).
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.resilience.messages import (
    BreakerStates,
    FleetReport,
    HoldStatus,
    ProxyReport,
    ProxyStates,
    SlowDown,
    TargetReport,
    TokenGrant,
    TokenRequest,
)
from flotilla.actors.resilience.view import ResilienceView


def shard_of(target: str, shards: int) -> int:
    """The breaker shard that owns `target` (stable across processes and runs)."""
    return zlib.crc32(target.encode()) % shards


DEFAULT_INTERVAL = 0.1
"""Seconds between a gate's reports (the topology's `resilience.interval`)."""


class GateSnapshot(msgspec.Struct, frozen=True):
    """A gate's `inspect()`: its rounds, and its node's resilience view."""

    rounds: int
    view: dict[str, object]


class _Tick:
    """Time to report and refresh (a timer's message)."""


class _Wanted:
    """The view asks for attention: slots are wanted, or something urgent was recorded."""


class Gate(Actor):
    """See the module docstring. Paths left out are parts the topology does not configure."""

    def __init__(
        self,
        breakers: str | None = None,
        shards: int = 1,
        limiter: str | None = None,
        hold: str | None = None,
        proxies: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        request_timeout: float = 1.0,
    ) -> None:
        super().__init__()
        if shards < 1 or interval <= 0 or request_timeout <= 0:
            raise ValueError("shards >= 1, interval > 0 and request_timeout > 0")
        self.breakers_path = breakers
        self.shards = shards
        self.limiter_path = limiter
        self.hold_path = hold
        self.proxies_path = proxies
        self.interval = interval
        self.request_timeout = request_timeout
        self.requested: dict[str, float] = {}
        self.rounds = 0

    def on_start(self) -> None:
        view = ResilienceView.of(self.system)
        view.breakers_on = self.breakers_path is not None
        view.limiter_on = self.limiter_path is not None
        view.hold_on = self.hold_path is not None
        view.proxies_on = self.proxies_path is not None
        me = self.actor_ref
        view.notify = lambda: me.tell(_Wanted())
        self.send_after(0, _Tick())

    def on_stop(self) -> None:
        ResilienceView.of(self.system).notify = lambda: None

    def on_receive(self, message: Any) -> Any:
        view = ResilienceView.of(self.system)
        if isinstance(message, BreakerStates):
            view.apply_breakers(lambda target: shard_of(target, self.shards) == message.shard, message.states)
        elif isinstance(message, HoldStatus):
            view.apply_hold(message)
        elif isinstance(message, ProxyStates):
            view.apply_proxies(message.states)
        elif isinstance(message, TokenGrant):
            view.grant(message.target, message.tokens, message.ttl)
            self.requested.pop(message.target, None)
            self._request_slots()
        elif isinstance(message, _Wanted):
            if view.urgent:
                self._report()
            self._request_slots()
        elif isinstance(message, _Tick):
            self._report()
            self._request_slots()
            self.send_after(self.interval, _Tick())
        else:
            return super().on_receive(message)
        return None

    def _request_slots(self) -> None:
        if self.limiter_path is None:
            return
        now = time.monotonic()
        limiter = self.system.ref(self.limiter_path)
        wanted_now = ResilienceView.of(self.system).wanted()
        for target in [
            t for t, asked in self.requested.items() if t not in wanted_now and now - asked >= self.request_timeout
        ]:
            del self.requested[target]  # no longer wanted, and its grant is not coming
        for target, wanted in wanted_now.items():
            asked = self.requested.get(target)
            if asked is not None and now - asked < self.request_timeout:
                continue  # one request per target at a time; its grant brings the next
            self.requested[target] = now
            limiter.tell(TokenRequest(self.path, target, wanted))

    def _report(self) -> None:
        """Send every control actor its report (each answers with the current state)."""
        reports = ResilienceView.of(self.system).take_reports()
        self.rounds += 1
        if self.breakers_path is not None:
            shards = [TargetReport(self.path, {}, {}, {}, {}, {}, []) for _ in range(self.shards)]  # all answer
            for field, found in (
                ("outcomes", reports.targets),
                ("trials", reports.trials),
                ("extractions", reports.extractions),
                ("drifted", reports.drifted),
                ("last_failure", reports.last_failure),
            ):
                for target, value in found.items():
                    getattr(shards[shard_of(target, self.shards)], field)[target] = value
            for target in sorted(reports.want_trials):
                shards[shard_of(target, self.shards)].want_trials.append(target)
            for shard, report in enumerate(shards):
                self.system.ref(f"{self.breakers_path}/{shard}").tell(report)
        if self.hold_path is not None:
            self.system.ref(self.hold_path).tell(
                FleetReport(
                    self.path,
                    reports.succeeded,
                    reports.failed,
                    reports.probes_succeeded,
                    reports.probes_failed,
                    reports.held_back,
                    reports.fleet,
                )
            )
        if self.proxies_path is not None:
            self.system.ref(self.proxies_path).tell(ProxyReport(self.path, dict(reports.proxies)))
        if self.limiter_path is not None:
            for target, seconds in reports.slowdowns.items():
                self.system.ref(self.limiter_path).tell(SlowDown(target, seconds))

    def inspect(self) -> GateSnapshot:
        return GateSnapshot(self.rounds, ResilienceView.of(self.system).snapshot())
