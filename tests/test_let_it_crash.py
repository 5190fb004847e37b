"""An exception anywhere in a handler or start hook ends the incarnation, uniformly."""

from __future__ import annotations

import threading

import pytest

from flotilla.actors import (
    ActorCrashed,
    ActorSystem,
    ChildSpec,
    RootStartError,
    SupervisorFlags,
    SupervisorSpec,
    Timeout,
    Unavailable,
)
from flotilla.actors.core.messages import Crash as CrashReason
from flotilla.actors.core.messages import Normal, StartFailed
from tests.helpers import Block, Crash, ExitNormally, Journal, Probe, Reports

TOLERANT = SupervisorFlags(intensity=100, period=60)


def start_probe(system: ActorSystem, **args: object) -> str:
    system.start(SupervisorSpec("root", children=(ChildSpec("p", Probe, args),), flags=TOLERANT))
    return "t/root/p"


def test_crash_on_the_ask_path_gives_the_asker_a_typed_error_and_ends_the_incarnation(
    system: ActorSystem, reports: Reports
) -> None:
    path = start_probe(system)
    with pytest.raises(ActorCrashed) as raised:
        system.ask(path, Crash())
    assert raised.value.reason.type == "ValueError"
    assert "crash requested" in raised.value.reason.message
    assert "raise ValueError" in raised.value.reason.traceback
    exited = reports.wait_for("child_exited", "p")[0]
    assert isinstance(exited.reason, CrashReason)
    assert system.wait_started(path, other_than=1) == 2


def test_crash_on_the_tell_path_ends_the_incarnation_and_tells_the_supervisor(
    system: ActorSystem, reports: Reports
) -> None:
    path = start_probe(system)
    system.ref(path).tell(Crash())
    exited = reports.wait_for("child_exited", "p")[0]
    assert isinstance(exited.reason, CrashReason) and exited.reason.type == "ValueError"
    assert system.wait_started(path, other_than=1) == 2
    assert system.ask(path, "whoami") == (path, 2)


def test_asker_that_sees_the_crash_can_count_on_the_supervisor_knowing(system: ActorSystem) -> None:
    path = start_probe(system)
    root = system.supervisor("t/root")
    for incarnation in range(1, 20):
        with pytest.raises(ActorCrashed):
            system.ask(path, Crash())
        info = root.which_children()[0]
        assert info.restarts == incarnation and info.incarnation == incarnation + 1


def test_on_failure_runs_after_a_crash_and_on_stop_after_a_clean_exit(system: ActorSystem, reports: Reports) -> None:
    journal = Journal()
    path = start_probe(system, journal=journal)
    with pytest.raises(ActorCrashed):
        system.ask(path, Crash())
    system.wait_started(path, other_than=1)
    assert system.ask(path, ExitNormally()) == "exiting"
    exited = reports.wait_for("child_exited", "p", count=2)
    assert isinstance(exited[1].reason, Normal)
    assert [e for e, _, _ in journal.entries if e in ("failure", "stop")] == ["failure", "stop"]


def test_on_start_failure_is_a_start_failure_of_the_tree(system: ActorSystem) -> None:
    with pytest.raises(RootStartError) as raised:
        start_probe(system, fail_start=lambda: True)
    assert "failed_to_start_child p" in str(raised.value)
    assert "on_start failed on purpose" in str(raised.value)
    assert isinstance(system.wait(0), StartFailed)


def test_constructor_failure_is_a_start_failure_too(system: ActorSystem) -> None:
    with pytest.raises(RootStartError, match="constructor failed on purpose"):
        start_probe(system, fail_init=True)


def test_start_that_hangs_past_its_timeout_fails_and_is_abandoned(system: ActorSystem) -> None:
    spec = ChildSpec("p", Probe, {"start_delay": 0.6}, start_timeout=0.1)
    with pytest.raises(RootStartError, match="StartTimeout"):
        system.start(SupervisorSpec("root", children=(spec,)))


def test_queued_asks_fail_with_unavailable_when_the_incarnation_crashes(system: ActorSystem) -> None:
    path = start_probe(system)
    ref = system.ref(path)
    release = threading.Event()
    blocked = ref.ask_async(Block(release))
    crash = ref.ask_async(Crash())
    queued = [ref.ask_async(i) for i in range(5)]
    release.set()
    assert blocked.get() == "released"
    with pytest.raises(ActorCrashed):
        crash.get()
    for reply in queued:
        with pytest.raises(Unavailable):
            reply.get()


def test_queued_tells_become_dead_letters_when_the_incarnation_crashes(system: ActorSystem) -> None:
    path = start_probe(system)
    ref = system.ref(path)
    release = threading.Event()
    blocked = ref.ask_async(Block(release))
    ref.tell(Crash())
    for i in range(7):
        ref.tell(i)
    release.set()
    blocked.get()
    system.wait_started(path, other_than=1)
    assert system.registry.dead_letters.count == 7
    assert {d.path for d in system.registry.dead_letters.recent} == {path}


def test_message_to_a_path_with_no_live_incarnation_is_a_dead_letter(system: ActorSystem) -> None:
    start_probe(system)
    root = system.supervisor("t/root")
    root.terminate_child("p")
    ref = system.ref("t/root/p")
    ref.tell("lost")
    with pytest.raises(Unavailable):
        ref.ask("lost too")
    with pytest.raises(Unavailable):
        system.ask("t/root/nobody", "hello")
    letters = system.registry.dead_letters
    assert letters.count == 3
    assert [(d.path, d.was_ask) for d in letters.recent] == [
        ("t/root/p", False),
        ("t/root/p", True),
        ("t/root/nobody", True),
    ]


def test_ask_without_a_reply_in_time_raises_timeout(system: ActorSystem) -> None:
    path = start_probe(system)
    release = threading.Event()
    try:
        with pytest.raises(Timeout) as raised:
            system.ref(path).ask(Block(release), timeout=0.05)
        assert isinstance(raised.value, TimeoutError)
    finally:
        release.set()


def test_a_ref_keeps_working_across_restarts(system: ActorSystem) -> None:
    path = start_probe(system)
    ref = system.ref(path)
    for expected in range(1, 6):
        assert ref.ask("whoami") == (path, expected)
        with pytest.raises(ActorCrashed):
            ref.ask(Crash())
        system.wait_started(path, other_than=expected)
