"""The circuit breaker's state machine, step by step and against a simple model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.actors.resilience.breaker import Breaker, BreakerSettings

SETTINGS = BreakerSettings(
    window=10, minimum_calls=5, failure_threshold=0.5, open_base=1.0, open_cap=8.0, jitter=0.0, trial_calls=2
)


def breaker() -> Breaker:
    return Breaker(SETTINGS, random.Random(1))


def test_it_stays_closed_until_the_minimum_number_of_calls() -> None:
    b = breaker()
    for _ in range(4):
        assert b.record(False, now=0) == "closed"
    assert b.record(False, now=0) == "open"
    assert "100% of the last 5 calls failed" in b.reason


def test_failures_below_the_threshold_keep_it_closed() -> None:
    b = breaker()
    for i in range(50):
        b.record(i % 3 != 0, now=i)  # a third fail
    assert b.state == "closed" and b.failure_rate < 0.5


def test_an_open_breaker_keeps_the_failure_rate_that_opened_it_until_it_closes() -> None:
    b = breaker()
    for success in (True, True, False, False, False):  # opens at the fifth call: 3 of 5 failed
        b.record(success, now=0)
    assert b.state == "open" and b.failure_rate == 0.0  # its window starts again when it opens
    assert b.opened_at_rate == pytest.approx(3 / 5)
    assert b.allows(1.0) and b.record(False, now=1.0) == "open"  # a failed trial: the same incident
    assert b.opened_at_rate == pytest.approx(3 / 5)
    b.reset()
    assert b.opened_at_rate is None
    b.trip(2.0, "layout drift: 10 of the last 10 pages lacked required fields")
    assert b.state == "open" and b.opened_at_rate is None  # no rate opened it


def test_open_refuses_then_half_open_lets_a_few_trials_through() -> None:
    b = breaker()
    for _ in range(5):
        b.record(False, now=10)
    assert not b.allows(10.5)
    assert b.allows(11.0) and b.state == "half_open"
    assert b.allows(11.0)
    assert not b.allows(11.0)  # only trial_calls trials
    b.record(True, now=11.1)
    assert b.record(True, now=11.2) == "closed"
    assert b.opened_in_a_row == 0


def test_a_failed_trial_opens_it_again_for_twice_as_long_up_to_the_cap() -> None:
    b = breaker()
    for _ in range(5):
        b.record(False, now=0)
    opened_for = []
    now = 0.0
    for _ in range(6):
        opened_for.append(b.open_until - now)
        now = b.open_until
        assert b.allows(now)
        b.record(False, now=now)
    assert opened_for == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_trip_opens_at_once_and_reset_closes() -> None:
    b = breaker()
    b.trip(now=0, reason="drift: missing price")
    assert b.state == "open" and b.reason == "drift: missing price" and not b.allows(0.5)
    b.reset()
    assert b.state == "closed" and b.allows(0.5)


def test_jitter_stretches_the_open_time_by_at_most_its_factor() -> None:
    b = Breaker(BreakerSettings(open_base=10, open_cap=10, jitter=0.2), random.Random(3))
    times = [b.open_time() for _ in range(200)]
    assert min(times) >= 10 and max(times) <= 12 and len(set(times)) > 100


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        BreakerSettings(window=5, minimum_calls=6)
    with pytest.raises(ValueError):
        BreakerSettings(failure_threshold=0)


@given(st.lists(st.booleans(), max_size=200))
def test_while_closed_it_opens_exactly_when_the_window_rule_says(outcomes: list[bool]) -> None:
    b = breaker()
    window: list[bool] = []
    for outcome in outcomes:
        if b.state != "closed":
            return
        window = (window + [outcome])[-SETTINGS.window :]
        b.record(outcome, now=0)
        should_open = len(window) >= SETTINGS.minimum_calls and window.count(False) / len(window) >= 0.5
        assert (b.state == "open") == should_open
