"""The node's observers (actors/core/observers.py): every attached observer sees each event in
order, a failing one is skipped without failing the publisher, a detached one sees nothing
more, and the runtime publishes `IncarnationEnded` for each incarnation that leaves its path
(after a crash as after a stop), so an observer can forget what that incarnation published."""

from __future__ import annotations

from flotilla.actors import ActorSystem, ChildSpec, SupervisorFlags, SupervisorSpec
from flotilla.actors.core.observers import IncarnationEnded, Observation, Observers
from flotilla.actors.demo.flaky import FlakyWorker
from flotilla.actors.demo.messages import Work
from scripts.harness import wait_until


class Seen(Observation, frozen=True):
    n: int


def test_observers_see_events_in_order_and_a_failing_one_is_skipped() -> None:
    observers = Observers()
    assert not observers.active
    first: list[Observation] = []
    last: list[Observation] = []

    def broken(_event: Observation) -> None:
        raise RuntimeError("an observer's bug")

    observers.attach(first.append)
    observers.attach(broken)
    detach = observers.attach(last.append)
    assert observers.active
    observers.publish(Seen(1))
    observers.publish(Seen(2))
    detach()
    observers.publish(Seen(3))
    assert first == [Seen(1), Seen(2), Seen(3)]
    assert last == [Seen(1), Seen(2)]


def test_each_incarnation_that_leaves_its_path_is_published(system: ActorSystem) -> None:
    ended: list[IncarnationEnded] = []
    system.observers.attach(lambda event: ended.append(event) if isinstance(event, IncarnationEnded) else None)
    spec = SupervisorSpec(
        "root",
        children=[ChildSpec("worker", FlakyWorker, args={"crash_rate": 1.0})],
        flags=SupervisorFlags(intensity=10),
    )
    system.start(spec)
    first = system.wait_started("t/root/worker")
    system.ref("t/root/worker").tell(Work(1))  # crashes it; its supervisor starts the next incarnation
    second = system.wait_started("t/root/worker", other_than=first)
    wait_until(lambda: IncarnationEnded("t/root/worker", first) in ended, what="the crashed incarnation published")
    system.supervisor("t/root").terminate_child("worker")
    wait_until(lambda: IncarnationEnded("t/root/worker", second) in ended, what="the stopped incarnation published")
    assert [e for e in ended if e.path == "t/root/worker"] == [
        IncarnationEnded("t/root/worker", first),
        IncarnationEnded("t/root/worker", second),
    ]
