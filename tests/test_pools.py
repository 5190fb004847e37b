"""Pools: N replicas of one spec behind one path, restarted one by one, scalable live."""

from __future__ import annotations

import pytest

from flotilla.actors import ActorSystem, ChildSpec, PoolSpec, SupervisorError, SupervisorFlags, SupervisorSpec
from flotilla.actors.core.registry import PoolSlot, Slot
from tests.helpers import Probe, crash


def start_pool(system: ActorSystem, size: int = 3) -> str:
    pool = PoolSpec("pool", ChildSpec("w", Probe), size=size, flags=SupervisorFlags(intensity=10))
    system.start(SupervisorSpec("root", children=(pool,)))
    return "t/root/pool"


def test_messages_to_the_pool_path_go_round_robin_to_the_replicas(system: ActorSystem) -> None:
    path = start_pool(system)
    answers = [system.ask(path, "whoami")[0] for _ in range(6)]
    assert sorted(answers) == sorted([f"{path}/{i}" for i in range(3)] * 2)


def test_a_crashed_replica_is_restarted_alone_and_the_pool_keeps_serving(system: ActorSystem) -> None:
    path = start_pool(system)
    crash(system, f"{path}/1")
    replicas = system.supervisor(path).which_children()
    assert [(c.id, c.incarnation) for c in replicas] == [("0", 1), ("1", 2), ("2", 1)]
    assert {system.ask(path, "whoami")[0] for _ in range(3)} == {f"{path}/{i}" for i in range(3)}


def test_pool_skips_replicas_without_a_live_incarnation(system: ActorSystem) -> None:
    path = start_pool(system)
    pool = system.supervisor(path)
    pool.terminate_child("0")
    pool.terminate_child("2")
    assert {system.ask(path, "whoami")[0] for _ in range(4)} == {f"{path}/1"}
    assert system.registry.dead_letters.count == 0


def test_pool_scales_up_and_down_at_run_time(system: ActorSystem) -> None:
    path = start_pool(system, size=2)
    pool = system.supervisor(path)
    pool.scale(5)
    assert [c.id for c in pool.which_children()] == ["0", "1", "2", "3", "4"]
    assert {system.ask(path, "whoami")[0] for _ in range(10)} == {f"{path}/{i}" for i in range(5)}
    pool.scale(1)
    assert [c.id for c in pool.which_children()] == ["0"]
    assert system.registry.lookup(f"{path}/3") is None
    assert pool.count_children().active == 1


def test_an_empty_pool_takes_dead_letters(system: ActorSystem) -> None:
    path = start_pool(system, size=0)
    system.ref(path).tell("nobody home")
    assert system.registry.dead_letters.count == 1


def test_scaling_something_that_is_not_a_pool_is_refused(system: ActorSystem) -> None:
    start_pool(system)
    with pytest.raises(SupervisorError) as raised:
        system.supervisor("t/root").scale(3)
    assert raised.value.code == "not_a_pool"
    with pytest.raises(SupervisorError) as raised:
        system.supervisor("t/root/pool").scale(-1)
    assert raised.value.code == "invalid"


class _Elsewhere(Slot):
    """A replica on another node as a pool's slot sees it: live, with no actor here; what
    reaches it is kept."""

    def __init__(self, path: str, system: ActorSystem) -> None:
        super().__init__(path, system.registry.dead_letters)
        self.told: list[object] = []

    @property
    def live(self) -> bool:
        return True

    def tell(self, message: object) -> None:
        self.told.append(message)


def test_pool_work_goes_to_the_replicas_on_this_node_first(system: ActorSystem) -> None:
    path = start_pool(system, size=2)
    slot = system.registry.lookup(path)
    assert isinstance(slot, PoolSlot)
    here = [system.registry.lookup(f"{path}/{i}") for i in range(2)]
    elsewhere = [_Elsewhere(f"{path}/{i}", system) for i in (2, 3)]
    slot.set_replicas([elsewhere[0], here[0], elsewhere[1], here[1]])  # as a pool spread over nodes has them
    assert sorted(system.ask(path, "whoami")[0] for _ in range(6)) == sorted([f"{path}/0", f"{path}/1"] * 3)
    system.ref(path).tell("to a local replica")
    assert not elsewhere[0].told and not elsewhere[1].told
    pool = system.supervisor(path)
    pool.terminate_child("0")
    pool.terminate_child("1")
    for n in range(4):
        system.ref(path).tell(n)
    assert sorted(elsewhere[0].told + elsewhere[1].told) == [0, 1, 2, 3]
    assert elsewhere[0].told and elsewhere[1].told  # round-robin over the others once none is here
