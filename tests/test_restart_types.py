"""permanent, transient and temporary children, by exit reason."""

from __future__ import annotations

import pytest

from flotilla.actors import ActorCrashed, ActorSystem, ChildSpec, SupervisorSpec
from flotilla.actors.core.messages import Normal, Shutdown
from tests.helpers import Crash, ExitNormally, ExitShutdown, Probe, Reports


def start(system: ActorSystem, restart: str) -> tuple[str, object]:
    system.start(SupervisorSpec("root", children=(ChildSpec("p", Probe, restart=restart),)))
    return "t/root/p", system.supervisor("t/root")


def status(system: ActorSystem) -> dict[str, tuple[str, int]]:
    return {c.id: (c.status, c.incarnation) for c in system.supervisor("t/root").which_children()}


def test_permanent_child_is_restarted_even_after_a_normal_exit(system: ActorSystem) -> None:
    path, _ = start(system, "permanent")
    system.ask(path, ExitNormally())
    assert status(system) == {"p": ("running", 2)}


def test_transient_child_is_not_restarted_after_normal_exit(system: ActorSystem, reports: Reports) -> None:
    path, _ = start(system, "transient")
    system.ask(path, ExitNormally())
    assert status(system) == {"p": ("stopped", 1)}
    assert isinstance(reports.of("child_exited")[0].reason, Normal)


def test_transient_child_is_not_restarted_after_shutdown(system: ActorSystem, reports: Reports) -> None:
    path, _ = start(system, "transient")
    system.ask(path, ExitShutdown())
    assert status(system) == {"p": ("stopped", 1)}
    assert reports.of("child_exited")[0].reason == Shutdown("done")


def test_transient_child_is_restarted_after_a_crash(system: ActorSystem) -> None:
    path, _ = start(system, "transient")
    with pytest.raises(ActorCrashed):
        system.ask(path, Crash())
    assert status(system) == {"p": ("running", 2)}


def test_temporary_child_is_never_restarted_and_its_spec_is_dropped(system: ActorSystem) -> None:
    path, _ = start(system, "temporary")
    with pytest.raises(ActorCrashed):
        system.ask(path, Crash())
    assert status(system) == {}
    assert system.registry.lookup(path) is None
