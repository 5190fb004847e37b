"""Stopping one incarnation within its shutdown policy: OTP's shutdown-then-kill.

`brutal_kill` kills the incarnation at once. Otherwise it is asked to stop (`Shutdown`,
taking effect after the message it is handling) and given its shutdown time in seconds
(`infinity`: as long as it takes); if it has not ended by then, it is killed. A Python
thread cannot be killed, so a killed incarnation is *abandoned*: cut off from its path
and its mailbox emptied now, and — as in OTP, where a killed process runs nothing more —
its cleanup hook (`on_stop` or `on_failure`) never runs, even once its thread comes back,
so it cannot overlap its successor. Supervisors (`supervisor.py`) and the node that hosts
children for parents elsewhere (`flotilla.nodes.cluster.host`) both stop children this way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flotilla.actors.core.child_spec import ShutdownPolicy
from flotilla.actors.core.messages import ExitReason, Killed, Shutdown


class Stoppable(Protocol):
    """What stopping needs of an incarnation (a local `Actor` or a `RemoteIncarnation`)."""

    @property
    def exited(self) -> threading.Event: ...

    @property
    def final_reason(self) -> ExitReason | None: ...

    def request_stop(self, reason: ExitReason) -> None: ...

    def kill(self, reason: Killed) -> None: ...


@dataclass(frozen=True)
class Stopped:
    """How a stop ended: the incarnation's exit reason, and whether it was killed because it
    did not stop within its shutdown time."""

    reason: ExitReason
    timed_out: bool = False


def not_stopped_in_time(seconds: float) -> Killed:
    """The reason of a local incarnation killed past its shutdown time."""
    return Killed(f"did not stop within {seconds:g} s; thread abandoned")


def stop_within(
    incarnation: Stoppable,
    shutdown: ShutdownPolicy,
    *,
    grace: float = 0.0,
    timed_out: Callable[[float], Killed] = not_stopped_in_time,
) -> Stopped:
    """Stop `incarnation` by `shutdown` (seconds, ``brutal_kill`` or ``infinity``), waiting
    `grace` seconds more than the shutdown time (for a stop confirmed over the network);
    past that it is killed with ``timed_out(seconds waited)``."""
    if shutdown == "brutal_kill":
        killed = Killed("brutal_kill")
        incarnation.kill(killed)
        return Stopped(killed)
    incarnation.request_stop(Shutdown())
    if shutdown == "infinity":
        incarnation.exited.wait()
        return Stopped(incarnation.final_reason or Shutdown())
    wait = float(shutdown) + grace
    if incarnation.exited.wait(wait):
        return Stopped(incarnation.final_reason or Shutdown())
    killed = timed_out(wait)
    incarnation.kill(killed)
    return Stopped(killed, timed_out=True)
