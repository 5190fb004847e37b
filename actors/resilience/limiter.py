"""The rate limiter: one token bucket per target, shared by the whole fleet.

Each target gets `rates[target]` requests per second (`default_rate` for the others), and
bursts of at most `burst_seconds` worth of them, so that no second sees more than the rate
plus that burst. Nodes do not ask per request: their gates ask for the slots their fetchers
are waiting for (`TokenRequest`), and get them in leases (`TokenGrant`) valid for
`token_ttl` seconds — unused slots expire rather than pile up on a node.

Requests the bucket cannot serve at once queue, one per gate and target, and are served in
turn as tokens come (each gets at most its fair share of what is there), so nodes — and, in
each node's arrival-order queue, jobs — take turns. A `SlowDown` (a 429 with Retry-After)
empties the target's bucket and refills it at `slow_factor` of its rate for that long.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, defaultdict
from typing import Any

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.resilience.messages import SlowDown, TokenGrant, TokenRequest
from flotilla.actors.resilience.ratelimit import TokenBucket

MIN_TICK = 0.005
"""Queued requests are looked at again no sooner than this (seconds)."""


SWEEP_EVERY = 60.0
"""Seconds between looks for idle buckets to drop."""


class TargetLimit(msgspec.Struct, frozen=True):
    """One target's bucket in the limiter's `inspect()`."""

    rate: float
    tokens: float
    granted: int
    queued: int
    slowed_for: float
    slow_downs: int


class LimiterSnapshot(msgspec.Struct, frozen=True):
    """The limiter's `inspect()`: its rates and each target's bucket."""

    default_rate: float
    rates: dict[str, float]
    targets: dict[str, TargetLimit]


class _Sweep:
    """Time to drop idle buckets (a timer's message)."""


class _Serve:
    """Time to serve the queued requests of `target` (a timer's message)."""

    def __init__(self, target: str) -> None:
        self.target = target


class RateLimiter(Actor):
    """See the module docstring."""

    def __init__(
        self,
        default_rate: float = 10.0,
        rates: dict[str, float] | None = None,
        burst_seconds: float = 0.05,
        token_ttl: float = 0.5,
        slow_factor: float = 0.25,
        max_slow_down: float = 300.0,
    ) -> None:
        super().__init__()
        rates = dict(rates or {})
        for target, rate in {"default_rate": default_rate, **rates}.items():
            if not isinstance(rate, (int, float)) or rate <= 0:
                raise ValueError(f"rate for {target!r} must be a number > 0 (requests per second), not {rate!r}")
        if burst_seconds <= 0 or token_ttl <= 0 or not 0 < slow_factor <= 1 or max_slow_down <= 0:
            raise ValueError("burst_seconds > 0, token_ttl > 0, 0 < slow_factor <= 1 and max_slow_down > 0")
        self.default_rate = float(default_rate)
        self.rates = {target.lower(): float(rate) for target, rate in rates.items()}
        self.burst_seconds = burst_seconds
        self.token_ttl = token_ttl
        self.slow_factor = slow_factor
        self.max_slow_down = max_slow_down
        self.buckets: dict[str, TokenBucket] = {}
        self.queues: dict[str, OrderedDict[str, int]] = defaultdict(OrderedDict)
        self.timers: dict[str, Any] = {}
        self.granted: dict[str, int] = defaultdict(int)
        self.slowed: dict[str, int] = defaultdict(int)

    def rate_of(self, target: str) -> float:
        return self.rates.get(target, self.default_rate)

    def _bucket(self, target: str, now: float) -> TokenBucket:
        bucket = self.buckets.get(target)
        if bucket is None:
            rate = self.rate_of(target)
            burst = max(1.0, rate * self.burst_seconds)
            bucket = self.buckets[target] = TokenBucket(rate, burst, tokens=burst, updated=now)
        return bucket

    def on_start(self) -> None:
        self.send_after(SWEEP_EVERY, _Sweep())

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Sweep):
            self._forget_idle(time.monotonic())
            self.send_after(SWEEP_EVERY, _Sweep())
        elif isinstance(message, TokenRequest):
            if message.wanted > 0:
                self.queues[message.target][message.gate] = message.wanted
                self._serve(message.target)
        elif isinstance(message, _Serve):
            self.timers.pop(message.target, None)
            self._serve(message.target)
        elif isinstance(message, SlowDown):
            seconds = min(self.max_slow_down, max(0.0, message.seconds))
            self._bucket(message.target, time.monotonic()).slow_down(time.monotonic(), seconds, self.slow_factor)
            self.slowed[message.target] += 1
            self.log.info("limiter.slow_down", target=message.target, seconds=seconds, factor=self.slow_factor)
        else:
            return super().on_receive(message)
        return None

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that are full, not slowed and have nobody waiting: a fresh bucket is
        the same (memory stays bounded with many targets)."""
        for target, bucket in list(self.buckets.items()):
            if (
                bucket.available(now) >= bucket.burst
                and now >= bucket.slow_until
                and not self.queues.get(target)
                and target not in self.timers
            ):
                del self.buckets[target]
                self.queues.pop(target, None)
                self.granted.pop(target, None)
                self.slowed.pop(target, None)

    def _serve(self, target: str) -> None:
        """Grant what the bucket holds to the queued gates in turn (fair shares)."""
        queue = self.queues.get(target)
        if not queue:
            return
        now = time.monotonic()
        bucket = self._bucket(target, now)
        while queue:
            share = max(1, math.ceil(bucket.available(now) / len(queue)))
            gate, wanted = next(iter(queue.items()))
            taken = int(bucket.take(min(wanted, share), now))
            if taken < 1:
                break
            del queue[gate]
            self.granted[target] += taken
            self.system.ref(gate).tell(TokenGrant(target, taken, self.token_ttl))
        if queue and target not in self.timers:
            delay = max(MIN_TICK, bucket.wait_for(1, now))
            self.timers[target] = self.send_after(delay, _Serve(target))

    def inspect(self) -> LimiterSnapshot:
        now = time.monotonic()
        return LimiterSnapshot(
            default_rate=self.default_rate,
            rates=dict(self.rates),
            targets={
                t: TargetLimit(
                    rate=b.rate,
                    tokens=round(b.tokens, 2),
                    granted=self.granted.get(t, 0),
                    queued=len(self.queues.get(t, ())),
                    slowed_for=round(max(0.0, b.slow_until - now), 2),
                    slow_downs=self.slowed.get(t, 0),
                )
                for t, b in self.buckets.items()
            },
        )
