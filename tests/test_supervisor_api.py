"""which_children, count_children, start_child, restart_child, terminate_child, delete_child."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flotilla.actors import ActorSystem, ChildSpec, PoolSpec, SupervisorError, SupervisorSpec, Unavailable
from flotilla.actors.core.messages import ChildCounts
from tests.helpers import Probe


@pytest.fixture
def root(system: ActorSystem):  # noqa: ANN201
    children = (
        ChildSpec("a", Probe),
        SupervisorSpec("sub", children=(ChildSpec("x", Probe),)),
        PoolSpec("pool", ChildSpec("w", Probe), size=2),
    )
    return system.start(SupervisorSpec("root", children=children))


def codes(call: Callable[..., object], *args: object) -> str:
    with pytest.raises(SupervisorError) as raised:
        call(*args)
    return raised.value.code


def test_which_children_lists_children_in_start_order_with_their_state(root) -> None:  # noqa: ANN001
    rows = root.which_children()
    assert [(r.id, r.kind, r.status, r.path) for r in rows] == [
        ("a", "worker", "running", "t/root/a"),
        ("sub", "supervisor", "running", "t/root/sub"),
        ("pool", "pool", "running", "t/root/pool"),
    ]
    assert rows[0].actor == "tests.helpers:Probe"


def test_count_children_has_otps_four_fields(root) -> None:  # noqa: ANN001
    assert root.count_children() == ChildCounts(specs=3, active=3, supervisors=2, workers=1)
    root.terminate_child("a")
    assert root.count_children() == ChildCounts(specs=3, active=2, supervisors=2, workers=1)


def test_start_child_adds_a_child_at_the_end(system: ActorSystem, root) -> None:  # noqa: ANN001
    assert root.start_child(ChildSpec("b", Probe)) == "t/root/b"
    assert [r.id for r in root.which_children()] == ["a", "sub", "pool", "b"]
    assert system.ask("t/root/b", "hi") == "hi"


def test_start_child_refuses_an_id_in_use(root) -> None:  # noqa: ANN001
    assert codes(root.start_child, ChildSpec("a", Probe)) == "already_started"
    root.terminate_child("a")
    assert codes(root.start_child, ChildSpec("a", Probe)) == "already_present"


def test_start_child_that_fails_to_start_is_not_kept(root) -> None:  # noqa: ANN001
    assert codes(root.start_child, ChildSpec("b", Probe, {"fail_init": True})) == "start_failed"
    assert [r.id for r in root.which_children()] == ["a", "sub", "pool"]


def test_terminate_then_restart_child(system: ActorSystem, root) -> None:  # noqa: ANN001
    root.terminate_child("a")
    with pytest.raises(Unavailable):
        system.ask("t/root/a", "hi")
    assert codes(root.restart_child, "sub") == "running"
    assert root.restart_child("a") == "t/root/a"
    assert system.ask("t/root/a", "whoami") == ("t/root/a", 2)


def test_delete_child_only_when_stopped(system: ActorSystem, root) -> None:  # noqa: ANN001
    assert codes(root.delete_child, "a") == "running"
    root.terminate_child("a")
    root.delete_child("a")
    assert system.registry.lookup("t/root/a") is None
    assert codes(root.restart_child, "a") == "not_found"
    assert codes(root.terminate_child, "a") == "not_found"
    assert codes(root.delete_child, "a") == "not_found"


def test_terminating_a_subtree_stops_its_children_and_restarting_brings_them_back(system: ActorSystem, root) -> None:  # noqa: ANN001
    root.terminate_child("sub")
    with pytest.raises(Unavailable):
        system.ask("t/root/sub/x", "hi")
    root.restart_child("sub")
    assert system.ask("t/root/sub/x", "whoami") == ("t/root/sub/x", 1)


def test_start_child_refuses_a_child_placed_on_another_node(root) -> None:  # noqa: ANN001
    assert codes(root.start_child, SupervisorSpec("far", node="elsewhere")) == "invalid"
