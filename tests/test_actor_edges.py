"""Edge cases of an incarnation's life found in review: each once lost a message or a notice."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from flotilla.actors import Actor, ActorSystem, ChildSpec, PoolSpec, SupervisorError, SupervisorSpec, Unavailable
from flotilla.actors.core.messages import Normal, Shutdown
from flotilla.actors.demo.flaky import FlakyWorker
from flotilla.actors.demo.messages import Work
from tests.helpers import Journal, Probe, Reports


class EndsInOnStart(Actor):
    def on_start(self) -> None:
        self.exit(Normal())


class FailsToStart(Actor):
    hooks: list[str] = []

    def on_start(self) -> None:
        raise RuntimeError("no")

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        FailsToStart.hooks.append(f"on_failure {exc_type.__name__}: {exc}")


class _EndsOnFirstCheck(threading.Event):
    """An `actor_stopped` whose first `is_set()` lets the incarnation end completely before
    answering "not stopped": the window between a sender's check and its put."""

    def __init__(self, end: Any) -> None:
        super().__init__()
        self._end = end

    def is_set(self) -> bool:
        if self._end is not None:
            end, self._end = self._end, None
            end()
            return False
        return super().is_set()


def test_a_message_landing_as_the_incarnation_ends_is_refused_not_stranded(system: ActorSystem) -> None:
    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe, restart="temporary"),)))
    actor = system.registry.lookup("t/root/a").actor

    def end_now() -> None:
        actor.request_stop(Shutdown())
        assert actor.exited.wait(5)

    actor.actor_stopped = _EndsOnFirstCheck(end_now)
    future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
    assert actor.deliver("late", future) is True
    with pytest.raises(Unavailable):
        future.get(timeout=1)
    assert system.registry.dead_letters.count == 1


def test_exit_called_in_on_start_ends_the_incarnation_at_once(system: ActorSystem, reports: Reports) -> None:
    system.start(SupervisorSpec("root", children=(ChildSpec("a", EndsInOnStart, restart="transient"),)))
    assert reports.wait_for("child_exited", "a")[0].reason == Normal()


def test_on_failure_runs_when_on_start_raises(system: ActorSystem) -> None:
    FailsToStart.hooks.clear()
    root = system.start(SupervisorSpec("root"))
    with pytest.raises(SupervisorError):
        root.start_child(ChildSpec("a", FailsToStart))
    assert FailsToStart.hooks == ["on_failure RuntimeError: no"]


def test_a_raising_dead_letter_listener_does_not_break_supervision(system: ActorSystem, reports: Reports) -> None:
    def broken(_letter: Any) -> None:
        raise RuntimeError("listener bug")

    system.registry.dead_letters.listeners.append(broken)
    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe),)))
    system.ref("t/root/nobody").tell("x")  # must not raise
    release = threading.Event()
    from tests.helpers import Block, Crash

    ref = system.ref("t/root/a")
    block = Block(release)
    blocked = ref.ask_async(block)
    block.entered.wait(5)
    ref.tell(Crash())
    ref.tell("queued: becomes a dead letter while the incarnation ends")
    release.set()
    blocked.get()
    reports.wait_for("child_exited", "a")
    assert system.wait_started("t/root/a", other_than=1) == 2


def test_start_child_sent_to_a_pool_is_answered_by_its_supervisor(system: ActorSystem) -> None:
    system.start(SupervisorSpec("root", children=(PoolSpec("pool", ChildSpec("w", Probe), size=2),)))
    with pytest.raises(SupervisorError) as raised:
        system.supervisor("t/root/pool").start_child(ChildSpec("x", Probe))
    assert raised.value.code == "invalid"
    assert [c.incarnation for c in system.supervisor("t/root/pool").which_children()] == [1, 1]


def test_a_supervisor_request_to_a_worker_is_refused_without_crashing_it(system: ActorSystem) -> None:
    system.start(SupervisorSpec("root", children=(ChildSpec("a", FlakyWorker, {"crash_rate": 0.0}),)))
    with pytest.raises(SupervisorError) as raised:
        system.supervisor("t/root/a").which_children()
    assert raised.value.code == "not_a_supervisor"
    assert system.ask("t/root/a", Work(1)) == 1
    assert system.supervisor("t/root").which_children()[0].incarnation == 1


def test_start_child_with_something_that_is_not_a_spec_is_refused(system: ActorSystem) -> None:
    root = system.start(SupervisorSpec("root"))
    with pytest.raises(SupervisorError) as raised:
        root.start_child({"id": "x"})  # type: ignore[arg-type]
    assert raised.value.code == "invalid"
    assert root.count_children().specs == 0


def test_a_supervised_actor_cannot_be_started_on_its_own() -> None:
    with pytest.raises(TypeError, match="supervised actor"):
        Probe.start()


def test_an_actor_abandoned_at_start_still_runs_on_stop_when_its_start_returns(system: ActorSystem) -> None:
    journal = Journal()
    root = system.start(SupervisorSpec("root"))
    with pytest.raises(SupervisorError, match="StartTimeout"):
        root.start_child(ChildSpec("slow", Probe, {"journal": journal, "start_delay": 0.3}, start_timeout=0.05))
    from scripts.harness import wait_until

    wait_until(lambda: journal.events("stop") == ["slow"], what="on_stop of the abandoned incarnation")
    assert journal.events("start") == ["slow"]


def test_the_root_must_be_a_supervisor(system: ActorSystem) -> None:
    with pytest.raises(TypeError, match="SupervisorSpec"):
        system.start(PoolSpec("pool", ChildSpec("w", Probe)))  # type: ignore[arg-type]
