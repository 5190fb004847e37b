"""Stopping: reverse start order, each child within its shutdown timeout, never forever."""

from __future__ import annotations

import threading
import time

from flotilla.actors import ActorSystem, ChildSpec, SupervisorSpec
from flotilla.actors.core.messages import Killed, Shutdown
from scripts.harness import wait_until
from tests.helpers import Block, Journal, Probe, Reports


def test_tree_stops_in_reverse_start_order_depth_first(system: ActorSystem) -> None:
    journal = Journal()
    inner = SupervisorSpec("inner", children=tuple(ChildSpec(n, Probe, {"journal": journal}) for n in "xy"))
    children = (ChildSpec("a", Probe, {"journal": journal}), inner, ChildSpec("b", Probe, {"journal": journal}))
    system.start(SupervisorSpec("root", children=children))
    assert journal.events("start") == ["a", "x", "y", "b"]
    assert system.stop(timeout=10) == Shutdown()
    assert journal.events("stop") == ["b", "y", "x", "a"]


def test_child_stuck_in_a_handler_is_abandoned_after_its_shutdown_timeout(
    system: ActorSystem, reports: Reports
) -> None:
    journal = Journal()
    stuck = ChildSpec("stuck", Probe, {"journal": journal}, shutdown=0.2)
    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe, {"journal": journal}), stuck)))
    release = threading.Event()
    block = Block(release)
    system.ref("t/root/stuck").tell(block)
    assert block.entered.wait(5)
    try:
        began = time.monotonic()
        system.stop(timeout=10)
        took = time.monotonic() - began
        assert 0.2 <= took < 2.0
        timeout_report = reports.of("shutdown_timeout", "stuck")[0]
        assert isinstance(timeout_report.reason, Killed)
        assert "did not stop within 0.2 s" in timeout_report.reason.detail
        assert journal.events("stop") == ["a"]  # the stuck one never ran on_stop in time
    finally:
        release.set()


def test_slow_on_stop_past_the_timeout_is_abandoned_and_the_next_child_still_stops(
    system: ActorSystem, reports: Reports
) -> None:
    journal = Journal()
    slow = ChildSpec("slow", Probe, {"journal": journal, "stop_delay": 1.0}, shutdown=0.1)
    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe, {"journal": journal}), slow)))
    system.stop(timeout=10)
    assert reports.of("shutdown_timeout", "slow")
    assert journal.events("stop")[0] == "a"


def test_brutal_kill_does_not_wait_at_all(system: ActorSystem) -> None:
    journal = Journal()
    spec = ChildSpec("a", Probe, {"journal": journal, "stop_delay": 1.0}, shutdown="brutal_kill")
    system.start(SupervisorSpec("root", children=(spec,)))
    root = system.supervisor("t/root")
    began = time.monotonic()
    root.terminate_child("a")
    assert time.monotonic() - began < 0.5
    assert root.which_children()[0].last_exit == "Killed(brutal_kill)"


def test_messages_queued_behind_a_stop_become_dead_letters(system: ActorSystem) -> None:
    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe),)))
    ref = system.ref("t/root/a")
    release = threading.Event()
    block = Block(release)
    blocked = ref.ask_async(block)
    assert block.entered.wait(5)
    for i in range(3):
        ref.tell(i)
    actor = system.registry.lookup("t/root/a").actor
    stopper = threading.Thread(target=system.supervisor("t/root").terminate_child, args=("a",))
    stopper.start()
    wait_until(lambda: actor.ending, what="the stop request to reach the actor")
    release.set()
    stopper.join(10)
    assert blocked.get() == "released"
    assert system.registry.dead_letters.count == 3


def test_pykkas_own_stop_ends_an_incarnation_cleanly(system: ActorSystem, reports: Reports) -> None:
    import pykka

    system.start(SupervisorSpec("root", children=(ChildSpec("a", Probe, restart="transient"),)))
    actor = system.registry.lookup("t/root/a").actor
    assert actor.actor_ref.stop() is True
    assert reports.wait_for("child_exited", "a")[0].reason == Shutdown()
    assert system.supervisor("t/root").which_children()[0].status == "stopped"
    assert pykka.ActorRegistry.get_by_urn(actor.actor_urn) is None
