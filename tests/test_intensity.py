"""Restart intensity: more than `intensity` restarts in `period` and the supervisor gives
up, stopping its children in reverse order; its parent then decides, up to the root."""

from __future__ import annotations

import pytest

from flotilla.actors import ActorSystem, ChildSpec, SupervisorFlags, SupervisorSpec, Unavailable
from flotilla.actors.core.messages import Shutdown
from flotilla.actors.core.supervisor import GAVE_UP
from tests.helpers import FakeClock, Journal, Probe, Reports, crash


def test_supervisor_gives_up_on_the_restart_past_its_intensity(
    system: ActorSystem, clock: FakeClock, reports: Reports
) -> None:
    journal = Journal()
    children = tuple(ChildSpec(n, Probe, {"journal": journal}) for n in "abc")
    system.start(SupervisorSpec("root", children=children, flags=SupervisorFlags(intensity=2, period=5)))
    crash(system, "t/root/b")
    crash(system, "t/root/b")
    assert system.wait(0) is None
    crash(system, "t/root/b")
    assert system.wait(5) == Shutdown(GAVE_UP)
    assert journal.events("stop") == ["c", "a"]
    assert [r.event for r in reports.items[-2:]] == ["child_exited", "gave_up"]
    with pytest.raises(Unavailable):
        system.ask("t/root/a", "anyone?")


def test_intensity_zero_gives_up_at_the_first_restart(system: ActorSystem, clock: FakeClock) -> None:
    system.start(
        SupervisorSpec("root", children=(ChildSpec("a", Probe),), flags=SupervisorFlags(intensity=0, period=5))
    )
    crash(system, "t/root/a")
    assert system.wait(5) == Shutdown(GAVE_UP)


def test_restarts_older_than_the_period_no_longer_count(system: ActorSystem, clock: FakeClock) -> None:
    system.start(
        SupervisorSpec("root", children=(ChildSpec("a", Probe),), flags=SupervisorFlags(intensity=2, period=5))
    )
    for _ in range(10):
        crash(system, "t/root/a")
        clock.advance(2.6)  # at most two restarts are ever within 5 s of each other
    assert system.wait(0) is None
    assert system.supervisor("t/root").which_children()[0].incarnation == 11


def test_the_window_edge_is_inclusive_as_in_otp(system: ActorSystem, clock: FakeClock) -> None:
    system.start(
        SupervisorSpec("root", children=(ChildSpec("a", Probe),), flags=SupervisorFlags(intensity=1, period=5))
    )
    crash(system, "t/root/a")
    clock.advance(5)  # the first restart is exactly `period` ago: it still counts
    crash(system, "t/root/a")
    assert system.wait(5) == Shutdown(GAVE_UP)


def test_a_restart_that_fails_to_start_is_retried_and_each_try_counts(system: ActorSystem, reports: Reports) -> None:
    starts = iter([False, True, True, True, True, True])
    spec = ChildSpec("a", Probe, {"fail_start": lambda: next(starts)})
    system.start(SupervisorSpec("root", children=(spec,), flags=SupervisorFlags(intensity=3, period=60)))
    crash(system, "t/root/a")
    assert system.wait(5) == Shutdown(GAVE_UP)
    assert len(reports.of("start_failed")) == 3  # restart, then two retries; the fourth restart gives up


def test_escalation_goes_up_two_levels_to_the_root(system: ActorSystem, reports: Reports) -> None:
    leaf = ChildSpec("leaf", Probe)
    mid = SupervisorSpec("mid", children=(leaf,), flags=SupervisorFlags(intensity=1, period=60))
    top = SupervisorSpec("top", children=(mid,), flags=SupervisorFlags(intensity=1, period=60))
    system.start(SupervisorSpec("root", children=(top,), flags=SupervisorFlags(intensity=1, period=60)))
    leaf_path = "t/root/top/mid/leaf"
    # With intensity 1 at every level: every 2nd leaf crash makes mid give up; every 2nd
    # time mid gives up, top gives up; the 2nd time top gives up, the root gives up.
    for _ in range(8):
        assert system.wait(0) is None
        system.wait_started(leaf_path)
        crash(system, leaf_path)
    assert system.wait(5) == Shutdown(GAVE_UP)
    by_supervisor = [r.supervisor for r in reports.of("gave_up")]
    assert by_supervisor == ["t/root/top/mid"] * 2 + ["t/root/top"] + ["t/root/top/mid"] * 2 + ["t/root/top", "t/root"]
