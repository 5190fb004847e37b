"""The token bucket behind the per-domain rate limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.actors.resilience.ratelimit import TokenBucket


def test_a_full_bucket_gives_its_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, tokens=5)
    assert bucket.take(8, now=0) == 5
    assert bucket.take(1, now=0) == 0
    assert bucket.wait_for(1, now=0) == pytest.approx(0.1)
    assert bucket.take(10, now=0.5) == 5
    assert bucket.take(10, now=100) == 5  # never more than the burst


def test_a_429_empties_it_and_slows_the_refill_until_retry_after() -> None:
    bucket = TokenBucket(rate=10, burst=10, tokens=10)
    bucket.slow_down(now=0, seconds=2, factor=0.25)
    assert bucket.take(10, now=0) == 0
    assert bucket.take(10, now=1) == 2  # 2.5 tokens at a quarter of the rate
    assert bucket.take(10, now=3) == 10  # past the slow-down: full rate again, capped
    slow = TokenBucket(rate=10, burst=100)
    slow.slow_down(now=0, seconds=1, factor=0.5)
    assert slow.take(100, now=2) == 15  # 5 in the slow second, 10 in the next


@given(st.lists(st.tuples(st.floats(0, 2), st.integers(1, 20)), min_size=1, max_size=100))
def test_never_more_than_burst_plus_rate_times_elapsed(steps: list[tuple[float, int]]) -> None:
    bucket = TokenBucket(rate=50, burst=10, tokens=10)
    now = taken = 0.0
    for gap, wanted in steps:
        now += gap
        taken += bucket.take(wanted, now)
        assert taken <= 10 + 50 * now + 1e-9


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
