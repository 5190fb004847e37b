"""Optional restart backoff with jitter (Akka's formula), on top of OTP's rules."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.actors import ActorSystem, Backoff, ChildSpec, SupervisorFlags, SupervisorSpec, Unavailable
from flotilla.actors.core.backoff import backoff_delay
from tests.helpers import FakeClock, Probe, Reports, crash


@given(attempt=st.integers(0, 200), seed=st.integers(0, 2**32))
def test_delay_doubles_from_min_up_to_max_then_stretches_by_at_most_the_random_factor(attempt: int, seed: int) -> None:
    backoff = Backoff(min=0.1, max=10.0, random_factor=0.2)
    delay = backoff.delay(attempt, random.Random(seed))
    base = min(10.0, 0.1 * 2**attempt)
    assert base <= delay <= base * 1.2


def test_the_helper_doubles_from_the_base_and_stops_at_the_cap() -> None:
    assert [backoff_delay(0.5, 5.0, n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_delay(0.5, 5.0, -3) == 0.5  # a negative count is no doubling
    assert backoff_delay(0.5, 5.0, 10**6) == 5.0  # a count far past any float is the cap


@given(base=st.floats(1e-3, 10), extra=st.floats(0, 100), doublings=st.integers(-5, 5000), jitter=st.floats(0, 1))
def test_the_helper_stays_within_its_bounds(base: float, extra: float, doublings: int, jitter: float) -> None:
    cap = base + extra
    capped = cap if doublings > 60 else min(cap, base * 2.0 ** max(0, doublings))  # 1e-3 * 2**60 > any cap here
    delay = backoff_delay(base, cap, doublings, jitter=jitter, rng=random.Random(7))
    assert base <= capped <= delay <= capped * (1 + jitter) <= cap * (1 + jitter)


def test_the_helper_jitter_is_one_draw_of_a_seeded_random() -> None:
    draws = random.Random(42)
    expected = [min(8.0, 1.0 * 2**n) * (1 + draws.random() * 0.25) for n in range(5)]
    rng = random.Random(42)
    assert [backoff_delay(1.0, 8.0, n, jitter=0.25, rng=rng) for n in range(5)] == expected
    assert len({round(d / min(8.0, 2**n), 9) for n, d in enumerate(expected)}) == 5  # the stretch varies


def test_the_helper_draws_even_with_no_jitter_and_never_without_an_rng() -> None:
    rng, twin = random.Random(3), random.Random(3)
    assert backoff_delay(1.0, 8.0, 2, jitter=0.0, rng=rng) == 4.0
    twin.random()
    assert rng.random() == twin.random()  # one draw was taken, as Backoff.delay always took one
    assert backoff_delay(1.0, 8.0, 2, jitter=0.9) == 4.0  # no rng: no jitter


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="min <= max"):
        Backoff(min=2, max=1)
    with pytest.raises(ValueError, match="random_factor"):
        Backoff(random_factor=1.5)


def test_restart_waits_for_the_backoff_and_the_path_takes_dead_letters_meanwhile(
    system: ActorSystem, reports: Reports
) -> None:
    flags = SupervisorFlags(intensity=10, backoff=Backoff(min=1.0, max=2.0, random_factor=0.0))
    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe),), flags=flags))
    crashed_at = time.monotonic()
    crash(system, "t/root/a")
    assert system.supervisor("t/root").which_children()[0].status == "restarting"
    with pytest.raises(Unavailable):
        system.ask("t/root/a", "hello?")
    scheduled = reports.wait_for("restart_scheduled", "a")[0]
    assert scheduled.delay == pytest.approx(1.0)
    system.wait_started("t/root/a", other_than=1)
    assert time.monotonic() - crashed_at >= 1.0


def test_delays_grow_for_restarts_in_a_row(system: ActorSystem, reports: Reports) -> None:
    flags = SupervisorFlags(intensity=10, backoff=Backoff(min=0.01, max=0.04, random_factor=0.0, reset_after=60))
    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe),), flags=flags))
    for incarnation in range(1, 5):
        system.wait_started("t/root/a", other_than=incarnation - 1)
        crash(system, "t/root/a")
    delays = [r.delay for r in reports.wait_for("restart_scheduled", "a", count=4)]
    assert delays == [0.01, 0.02, 0.04, 0.04]


def test_a_child_that_ran_healthy_long_enough_restarts_from_the_minimum_again(
    system: ActorSystem, clock: FakeClock, reports: Reports
) -> None:
    flags = SupervisorFlags(intensity=10, backoff=Backoff(min=0.01, max=0.04, random_factor=0.0, reset_after=30))
    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe),), flags=flags))
    crash(system, "t/root/a")
    system.wait_started("t/root/a", other_than=1)
    crash(system, "t/root/a")
    system.wait_started("t/root/a", other_than=2)
    system.supervisor("t/root").which_children()  # the supervisor has finished that restart
    clock.advance(31)
    crash(system, "t/root/a")
    delays = [r.delay for r in reports.wait_for("restart_scheduled", "a", count=3)]
    assert delays == [0.01, 0.02, 0.01]


def test_operator_restart_during_backoff_is_refused_as_restarting(system: ActorSystem) -> None:
    flags = SupervisorFlags(intensity=10, backoff=Backoff(min=5, max=5, random_factor=0.0))
    root = system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe),), flags=flags))
    crash(system, "t/root/a")
    from flotilla.actors import SupervisorError

    with pytest.raises(SupervisorError) as raised:
        root.restart_child("a")
    assert raised.value.code == "restarting"
    root.terminate_child("a")  # cancels the pending restart
    assert root.restart_child("a") == "t/root/a"


def test_a_failed_restart_under_backoff_waits_one_growing_delay_per_try(system: ActorSystem, reports: Reports) -> None:
    starts = iter([False, True, False])  # first start ok, first restart fails, retry ok
    flags = SupervisorFlags(intensity=10, backoff=Backoff(min=0.05, max=1.0, random_factor=0.0))
    system.start(
        SupervisorSpec("root", children=(ChildSpec("a", Probe, {"fail_start": lambda: next(starts)}),), flags=flags)
    )
    began = time.monotonic()
    crash(system, "t/root/a")
    system.wait_started("t/root/a", other_than=1, timeout=5)
    took = time.monotonic() - began
    assert [r.delay for r in reports.of("restart_scheduled")] == [0.05, 0.1]
    assert 0.15 <= took < 1.0  # the two delays, not the max (1 s) nor a lost wake-up; slack for a busy machine


def test_an_operator_restart_whose_start_fails_is_retried_and_never_leaves_the_child_stopped(
    system: ActorSystem,
) -> None:
    starts = iter([False, True, False])  # first start ok, the operator's restart fails, its retry ok
    root = system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe, {"fail_start": lambda: next(starts)}),)))
    from flotilla.actors import SupervisorError

    with pytest.raises(SupervisorError) as raised:
        root.operator_restart("a")
    assert raised.value.code == "start_failed"
    assert system.wait_started("t/root/a", other_than=2) == 3  # retried as a failed restart is
    (info,) = root.which_children()
    assert info.status == "running" and info.restarts == 2  # the operator's restart and its retry
