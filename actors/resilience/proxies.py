"""The proxy pool: the topology's forward proxies, their health and their breakers.

Nodes pick proxies themselves from their `ResilienceView` (each target sticks to one proxy
while it works; a BLOCKED answer moves that target to another proxy at once and keeps it off
the blocked one for a while). The pool keeps the fleet-wide picture: every gate reports how
each proxy did (a block, or a failure to reach the proxy, counts against it; anything the
target answered counts for it), each proxy has a `Breaker` (open: no node uses it; half-open:
each node may try it once) and a health score (share of successes among its last
`health_window` calls). Each report is answered with every proxy's state, in the topology's
order. A proxy whose breaker opens raises an `Alert`; so does the pool running out of
usable proxies.
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, ClassVar
from urllib.parse import urlsplit

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.human import human_duration
from flotilla.actors.resilience.alerts import raise_alert
from flotilla.actors.resilience.breaker import Breaker, BreakerSettings
from flotilla.actors.resilience.messages import ProxyReport, ProxyStates, ProxyStatus


class ProxySnapshot(msgspec.Struct, frozen=True):
    """One proxy in the pool's `inspect()` (which maps each proxy to one of these)."""

    state: str
    health: float
    open_for: float
    calls: int
    failed: int


class ProxyPool(Actor):
    """See the module docstring."""

    PATH_ARGS: ClassVar[dict[str, str]] = {"alerts": "alerts"}

    def __init__(
        self,
        proxies: list[str],
        alerts: str | None = None,
        window: int = 10,
        minimum_calls: int = 5,
        failure_threshold: float = 0.5,
        open_base: float = 30.0,
        open_cap: float = 600.0,
        jitter: float = 0.2,
        health_window: int = 50,
    ) -> None:
        super().__init__()
        if not proxies:
            raise ValueError("proxies must list at least one proxy URL (leave the pool out for direct connections)")
        for proxy in proxies:
            parts = urlsplit(proxy) if isinstance(proxy, str) else None
            if parts is None or parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"proxy {proxy!r} must be an http:// URL (http://HOST:PORT)")
        if len(set(proxies)) != len(proxies):
            raise ValueError("proxies lists a proxy twice")
        self.proxies = list(proxies)
        self.alerts_path = alerts
        settings = BreakerSettings(window, minimum_calls, failure_threshold, open_base, open_cap, jitter, 1)
        rng = random.Random()
        self.breakers = {p: Breaker(settings, rng) for p in self.proxies}
        self.recent: dict[str, deque[bool]] = {p: deque(maxlen=health_window) for p in self.proxies}
        self.calls = {p: 0 for p in self.proxies}
        self.failed = {p: 0 for p in self.proxies}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ProxyReport):
            self._report(message)
            self.system.ref(message.gate).tell(self.states())
            return None
        return super().on_receive(message)

    def _report(self, report: ProxyReport) -> None:
        now = time.monotonic()
        for proxy, outcomes in report.outcomes.items():
            breaker = self.breakers.get(proxy)
            if breaker is None:
                continue  # not (or no longer) in the pool
            for success in outcomes:
                self.calls[proxy] += 1
                self.failed[proxy] += not success
                self.recent[proxy].append(success)
                before = breaker.state
                if breaker.record(success, now) == "open" and before != "open":
                    raise_alert(
                        self,
                        self.alerts_path,
                        "warning",
                        f"proxy out of the pool: {proxy}",
                        f"{breaker.reason}; out of the pool for {human_duration(breaker.open_until - now)}; "
                        "trial calls after that",
                    )
                    if all(b.state == "open" for b in self.breakers.values()):
                        raise_alert(
                            self, self.alerts_path, "critical", "no usable proxy left", "every proxy's breaker is open"
                        )
        for breaker in self.breakers.values():
            if breaker.state == "open" and now >= breaker.open_until:
                breaker.allows(now)  # half-open: nodes may try it
                breaker.forget_trials()

    def states(self) -> ProxyStates:
        now = time.monotonic()
        return ProxyStates(
            {p: ProxyStatus(b.state, self.health(p), max(0.0, b.open_until - now)) for p, b in self.breakers.items()}
        )

    def health(self, proxy: str) -> float:
        recent = self.recent[proxy]
        return sum(recent) / len(recent) if recent else 1.0

    def inspect(self) -> dict[str, ProxySnapshot]:
        """Each proxy's state, by proxy."""
        return {
            p: ProxySnapshot(
                state=s.state,
                health=round(s.health, 3),
                open_for=round(s.open_for, 1),
                calls=self.calls[p],
                failed=self.failed[p],
            )
            for p, s in self.states().states.items()
        }
