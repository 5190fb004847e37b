"""A killed incarnation runs no cleanup, as in OTP: neither after `brutal_kill` nor after a
shutdown timeout does its `on_stop` (or `on_failure`) run, even once its thread comes back;
a normal stop still runs `on_stop`."""

from __future__ import annotations

import threading
from typing import Any

from flotilla.actors import Actor, ActorSystem, ChildSpec, SupervisorSpec
from flotilla.actors.core.messages import Killed
from tests.helpers import Reports


class Hang:
    """Block the handler until `release` is set, then raise if `then_raise`."""

    def __init__(self, *, then_raise: bool = False) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.then_raise = then_raise


class Cleaner(Actor):
    """Records every cleanup hook that runs, with its incarnation, in a list the test shares."""

    def __init__(self, cleanups: list[tuple[str, str, int]]) -> None:
        super().__init__()
        self.cleanups = cleanups

    def on_stop(self) -> None:
        self.cleanups.append(("on_stop", self.path.rsplit("/", 1)[-1], self.incarnation))

    def on_failure(self, *_exc_info: Any) -> None:
        self.cleanups.append(("on_failure", self.path.rsplit("/", 1)[-1], self.incarnation))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Hang):
            message.entered.set()
            message.release.wait(10)
            if message.then_raise:
                raise RuntimeError("came back after it was killed")
            return "released"
        return message


def _start(system: ActorSystem, cleanups: list[tuple[str, str, int]], **shutdowns: Any) -> Any:
    children = tuple(ChildSpec(name, Cleaner, {"cleanups": cleanups}, shutdown=s) for name, s in shutdowns.items())
    return system.start(SupervisorSpec("root", children=children))


def _incarnation(system: ActorSystem, path: str) -> Actor:
    actor = system.registry.lookup(path).actor
    assert isinstance(actor, Cleaner)
    return actor


def test_brutal_kill_of_an_idle_child_runs_no_on_stop_while_a_normal_stop_does(system: ActorSystem) -> None:
    cleanups: list[tuple[str, str, int]] = []
    root = _start(system, cleanups, killed="brutal_kill", stopped=5)
    killed = _incarnation(system, "t/root/killed")
    root.terminate_child("killed")
    assert killed.exited.wait(5)  # its thread woke up, saw the kill and ended
    root.terminate_child("stopped")
    assert cleanups == [("on_stop", "stopped", 1)]
    assert root.which_children()[0].last_exit == "Killed(brutal_kill)"


def test_brutal_kill_of_a_busy_child_runs_no_cleanup_when_its_thread_comes_back(system: ActorSystem) -> None:
    cleanups: list[tuple[str, str, int]] = []
    root = _start(system, cleanups, killed="brutal_kill")
    killed = _incarnation(system, "t/root/killed")
    hang = Hang(then_raise=True)
    system.ref("t/root/killed").tell(hang)
    assert hang.entered.wait(5)
    root.terminate_child("killed")
    root.restart_child("killed")  # the successor runs while the killed thread is still busy
    successor = _incarnation(system, "t/root/killed")
    hang.release.set()
    assert killed.exited.wait(5)  # its handler raised after the kill: no on_failure either
    assert cleanups == []
    successor.exit()  # a normal exit of the successor still cleans up
    assert successor.exited.wait(5)
    assert cleanups == [("on_stop", "killed", 2)]


def test_a_child_killed_past_its_shutdown_timeout_never_runs_on_stop(system: ActorSystem, reports: Reports) -> None:
    cleanups: list[tuple[str, str, int]] = []
    root = _start(system, cleanups, slow=0.2, prompt=5)
    slow = _incarnation(system, "t/root/slow")
    hang = Hang()
    system.ref("t/root/slow").tell(hang)
    assert hang.entered.wait(5)
    root.terminate_child("slow")
    assert isinstance(reports.of("shutdown_timeout", "slow")[0].reason, Killed)
    hang.release.set()  # its handler returns and it sees the stop it was asked for
    assert slow.exited.wait(5)
    root.terminate_child("prompt")
    assert cleanups == [("on_stop", "prompt", 1)]


def test_a_killed_supervisor_still_ends_its_subtree(system: ActorSystem) -> None:
    cleanups: list[tuple[str, str, int]] = []
    sub = SupervisorSpec("sub", children=(ChildSpec("w", Cleaner, {"cleanups": cleanups}),), shutdown="brutal_kill")
    root = system.start(SupervisorSpec("root", children=(sub,)))
    worker = _incarnation(system, "t/root/sub/w")
    root.terminate_child("sub")
    assert worker.exited.wait(5)  # stopped by its own policy, as OTP's links end it
    assert cleanups == [("on_stop", "w", 1)]
    assert root.which_children()[0].last_exit == "Killed(brutal_kill)"
