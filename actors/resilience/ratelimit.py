"""Rate limiting per target domain.

`TokenBucket` is the arithmetic (no threads, no clock of its own): a bucket fills at `rate`
tokens per second up to `burst`; taking tokens succeeds only if they are there. A 429 with
Retry-After `slows` the domain: the bucket is emptied and refills at a fraction of its rate
until the slow-down ends. The fleet's limiter actor (actors/resilience/limiter.py) hands tokens out to
nodes in small leases from one bucket per target, so that a fetch asks its own node, not the
limiter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """Tokens for one domain. Every method takes the current time `now` (seconds)."""

    rate: float
    burst: float
    tokens: float = 0.0
    updated: float = 0.0
    slow_until: float = 0.0
    slow_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")

    def _refill(self, now: float) -> None:
        if now <= self.updated:
            return
        slow_end = min(now, max(self.updated, self.slow_until))
        added = (slow_end - self.updated) * self.rate * self.slow_factor + (now - slow_end) * self.rate
        self.tokens = min(self.burst, self.tokens + added)
        self.updated = now

    def available(self, now: float) -> float:
        """Tokens there now (possibly a fraction)."""
        self._refill(now)
        return self.tokens

    def take(self, wanted: float, now: float) -> float:
        """Take up to `wanted` whole tokens; return how many were taken (possibly 0)."""
        self._refill(now)
        granted = float(min(int(self.tokens), int(wanted)))
        self.tokens -= granted
        return granted

    def wait_for(self, wanted: float, now: float) -> float:
        """Seconds until `wanted` tokens will be there (0 if they are now)."""
        self._refill(now)
        missing = wanted - self.tokens
        if missing <= 0:
            return 0.0
        rate = self.rate * (self.slow_factor if now < self.slow_until else 1.0)
        return missing / rate

    def slow_down(self, now: float, seconds: float, factor: float = 0.25) -> None:
        """The domain said 429 with Retry-After `seconds`: empty the bucket, and refill at
        `factor` of the rate until then."""
        self._refill(now)
        self.tokens = 0.0
        self.slow_until = max(self.slow_until, now + seconds)
        self.slow_factor = factor
