"""one_for_one, one_for_all and rest_for_one restart exactly the children OTP restarts."""

from __future__ import annotations

from flotilla.actors import ActorSystem, ChildSpec, SupervisorFlags, SupervisorSpec
from tests.helpers import Journal, Probe, Reports, crash


def start_four(
    system: ActorSystem, strategy: str, journal: Journal, restart_types: tuple[str, ...] = ("permanent",) * 4
) -> None:
    children = tuple(
        ChildSpec(name, Probe, {"journal": journal}, restart=restart)
        for name, restart in zip("abcd", restart_types, strict=True)
    )
    system.start(SupervisorSpec("root", children=children, flags=SupervisorFlags(strategy=strategy, intensity=10)))


def incarnations(system: ActorSystem) -> dict[str, int]:
    return {c.id: c.incarnation for c in system.supervisor("t/root").which_children()}


def crash_child(system: ActorSystem, name: str) -> None:
    crash(system, f"t/root/{name}")


def test_one_for_one_restarts_only_the_child_that_crashed(system: ActorSystem) -> None:
    journal = Journal()
    start_four(system, "one_for_one", journal)
    crash_child(system, "b")
    assert incarnations(system) == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert journal.events("stop") == []


def test_one_for_all_stops_the_others_in_reverse_order_and_restarts_all_in_order(system: ActorSystem) -> None:
    journal = Journal()
    start_four(system, "one_for_all", journal)
    crash_child(system, "b")
    assert incarnations(system) == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert journal.events("stop") == ["d", "c", "a"]
    assert journal.events("start") == ["a", "b", "c", "d", "a", "b", "c", "d"]


def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it(system: ActorSystem) -> None:
    journal = Journal()
    start_four(system, "rest_for_one", journal)
    crash_child(system, "b")
    assert incarnations(system) == {"a": 1, "b": 2, "c": 2, "d": 2}
    assert journal.events("stop") == ["d", "c"]
    assert journal.events("start")[4:] == ["b", "c", "d"]


def test_temporary_siblings_stopped_by_one_for_all_are_dropped_not_restarted(system: ActorSystem) -> None:
    journal = Journal()
    start_four(system, "one_for_all", journal, ("permanent", "permanent", "temporary", "transient"))
    crash_child(system, "a")
    assert incarnations(system) == {"a": 2, "b": 2, "d": 2}
    assert system.registry.lookup("t/root/c") is None


def test_siblings_stopped_by_an_operator_come_back_with_one_for_all(system: ActorSystem, reports: Reports) -> None:
    journal = Journal()
    start_four(system, "one_for_all", journal)
    root = system.supervisor("t/root")
    root.terminate_child("c")
    crash_child(system, "a")
    statuses = {c.id: c.status for c in root.which_children()}
    assert statuses == {"a": "running", "b": "running", "c": "running", "d": "running"}


def test_rest_for_one_leaves_children_started_before_untouched_even_when_stopped(system: ActorSystem) -> None:
    journal = Journal()
    start_four(system, "rest_for_one", journal)
    root = system.supervisor("t/root")
    root.terminate_child("a")
    crash_child(system, "c")
    statuses = {c.id: c.status for c in root.which_children()}
    assert statuses == {"a": "stopped", "b": "running", "c": "running", "d": "running"}
    assert incarnations(system) == {"a": 1, "b": 1, "c": 2, "d": 2}
