"""Every typed message and exit reason the runtime exchanges, in one versioned place.

All types are frozen `msgspec.Struct`s tagged with their class name, so each one is
MessagePack-encodable as it stands and decodes back into the same type
(`encode` / `decode` below). Text fields that carry user data (exception messages and
tracebacks) are truncated to documented bounds when built from an exception, so a reason
never grows without limit on its way to a supervisor, a log line or another node.
"""

from __future__ import annotations

import traceback as _traceback
from typing import Any, Literal

import msgspec

MAX_EXCEPTION_MESSAGE_CHARS = 2_000
"""An exception message longer than this is cut (the head is kept)."""

MAX_TRACEBACK_CHARS = 16_000
"""A traceback longer than this is cut (the tail, where the raise is, is kept)."""


class Message(msgspec.Struct, frozen=True, tag=True, tag_field="_type"):
    """Base of every runtime message: immutable, tagged with its class name."""


# --- exit reasons ---------------------------------------------------------------------


class Normal(Message, frozen=True, tag=True):
    """The incarnation finished its work and asked to end."""


class Shutdown(Message, frozen=True, tag=True):
    """The incarnation was stopped on request (by its supervisor, an operator or the node).

    `detail` says why, e.g. ``reached_max_restart_intensity`` when a supervisor gives up;
    like OTP's ``{shutdown, Term}`` it still counts as a clean exit for transient children.
    """

    detail: str = ""


class Crash(Message, frozen=True, tag=True):
    """A handler (tell or ask) raised: the incarnation ended with this exception."""

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> Crash:
        """Describe `exc` with its qualified type, bounded message and bounded traceback."""
        return cls(**_describe(exc))


class StartFailed(Message, frozen=True, tag=True):
    """The incarnation never started: its constructor or `on_start` raised or timed out."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> StartFailed:
        """Describe `exc` like `Crash.from_exception` does."""
        return cls(**_describe(exc))


class Killed(Message, frozen=True, tag=True):
    """The incarnation did not stop within its shutdown timeout (or was brutally killed).

    A Python thread cannot be killed: the incarnation is abandoned instead. It is cut off
    from its path at once, its mailbox is emptied into the dead letters, and whatever it
    does afterwards reaches nobody; its cleanup hook does not run (a supervisor still stops
    its children).
    """

    detail: str = ""


class NodeDown(Message, frozen=True, tag=True):
    """The node hosting the incarnation stopped answering."""

    node: str


ExitReason = Normal | Shutdown | Crash | StartFailed | Killed | NodeDown


class NodeUp(Message, frozen=True, tag=True):
    """A node joined, or came back: sent to membership subscribers (as `NodeDown` is when
    one stops answering)."""

    node: str


class NoProc(Message, frozen=True, tag=True):
    """A monitored path had no live incarnation when the monitor was set."""


class Down(Message, frozen=True, tag=True):
    """The incarnation a monitor watched at `path` ended with `reason` (or `NoProc`)."""

    path: str
    reason: Normal | Shutdown | Crash | StartFailed | Killed | NodeDown | NoProc


def is_clean_exit(reason: ExitReason) -> bool:
    """True for reasons that do not restart a transient child (OTP: normal, shutdown)."""
    return isinstance(reason, (Normal, Shutdown))


def describe_reason(reason: ExitReason) -> str:
    """One line for logs and tables: ``Crash(ValueError: boom)``, ``Shutdown``..."""
    match reason:
        case Crash(type=t, message=m) | StartFailed(type=t, message=m):
            return f"{reason.__class__.__name__}({t}: {m})" if m else f"{reason.__class__.__name__}({t})"
        case Shutdown(detail=d) | Killed(detail=d):
            return f"{reason.__class__.__name__}({d})" if d else reason.__class__.__name__
        case NodeDown(node=n):
            return f"NodeDown({n})"
        case _:
            return reason.__class__.__name__


def _describe(exc: BaseException) -> dict[str, str]:
    cls = type(exc)
    qualified = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    text = "".join(_traceback.format_exception(exc))
    return {
        "type": qualified,
        "message": str(exc)[:MAX_EXCEPTION_MESSAGE_CHARS],
        "traceback": text[-MAX_TRACEBACK_CHARS:],
    }


# --- supervision ----------------------------------------------------------------------


class ChildExited(Message, frozen=True, tag=True):
    """An incarnation ended; sent to its supervisor (the EXIT signal of OTP). `urn` is the
    incarnation's unique id, so a late notice never matches a newer incarnation."""

    path: str
    incarnation: int
    reason: ExitReason
    urn: str = ""


ChildStatus = Literal["running", "restarting", "stopped"]
ChildKind = Literal["worker", "supervisor", "pool"]


class ChildInfo(Message, frozen=True, tag=True):
    """One row of `which_children`."""

    id: str
    path: str
    kind: ChildKind
    actor: str
    status: ChildStatus
    restart: str
    restarts: int
    incarnation: int
    mailbox: int
    uptime: float
    last_exit: str
    waiting_for: str = ""
    """The node a child waits for (to start, or to restart), else empty."""


class ChildCounts(Message, frozen=True, tag=True):
    """The answer to `count_children`, with OTP's four fields, and how many children
    wait for their node (counted in `specs`, not in `active`)."""

    specs: int
    active: int
    supervisors: int
    workers: int
    waiting: int = 0


class SupervisorRequest(Message, frozen=True, tag=True):
    """Base of the requests a supervisor answers (ask its path)."""


class WhichChildren(SupervisorRequest, frozen=True, tag=True):
    """Ask for a `list[ChildInfo]`, in start order."""


class CountChildren(SupervisorRequest, frozen=True, tag=True):
    """Ask for `ChildCounts`."""


class RestartChild(SupervisorRequest, frozen=True, tag=True):
    """Start a stopped child again from its kept spec."""

    id: str


class OperatorRestart(SupervisorRequest, frozen=True, tag=True):
    """Stop a child (running, or waiting to restart) and start it again now: an operator's
    restart. It counts in the child's restarts (and so in the restart metric), never against
    the supervisor's intensity: an operator does not make a supervisor give up."""

    id: str


class TerminateChild(SupervisorRequest, frozen=True, tag=True):
    """Stop a child and keep its spec (temporary children lose theirs)."""

    id: str


class DeleteChild(SupervisorRequest, frozen=True, tag=True):
    """Remove the spec of a stopped child."""

    id: str


class ScalePool(SupervisorRequest, frozen=True, tag=True):
    """Grow or shrink a pool to `size` replicas."""

    size: int


SupervisorErrorCode = Literal[
    "running",
    "restarting",
    "not_found",
    "already_present",
    "already_started",
    "start_failed",
    "not_a_pool",
    "not_a_supervisor",
    "invalid",
]


class Ok(Message, frozen=True, tag=True):
    """A supervisor request succeeded; `path` names the child it concerned."""

    path: str = ""


class Refused(Message, frozen=True, tag=True):
    """A supervisor request was refused, with OTP's error code."""

    code: SupervisorErrorCode
    detail: str = ""


# --- reports --------------------------------------------------------------------------

ReportEvent = Literal[
    "child_started",
    "child_exited",
    "restart_scheduled",
    "waiting_for_node",
    "start_failed",
    "shutdown_timeout",
    "gave_up",
]


class SupervisorReport(Message, frozen=True, tag=True):
    """What a supervisor did, for logs, metrics and the shell (OTP's supervisor reports)."""

    supervisor: str
    event: ReportEvent
    child: str
    reason: ExitReason | None = None
    delay: float = 0.0
    restarts: int = 0
    waiting_for: str = ""
    """For `waiting_for_node`: the node the child waits for."""


# --- operators: every actor answers these, whatever its own messages --------------------


class Inspect(Message, frozen=True, tag=True):
    """Ask any actor for an `ActorSummary` (answered by the runtime, not `on_receive`)."""


class ActorSummary(Message, frozen=True, tag=True):
    """What an actor is and holds: its class, incarnation, mailbox depth, how long it has
    run, and its own `inspect()` summary."""

    path: str
    actor: str
    incarnation: int
    mailbox: int
    uptime: float
    state: dict[str, Any] = {}


class Trace(Message, frozen=True, tag=True):
    """Record the next messages the actor handles, for `seconds` (at most `limit` of them);
    answered with the `TracedMessage`s recorded by the previous trace, if any."""

    seconds: float = 5.0
    limit: int = 1000


class TracedMessage(Message, frozen=True, tag=True):
    """One message an actor handled while traced: when, its type, the start of its repr,
    and how long handling it took."""

    at: float
    type: str
    summary: str
    seconds: float


WIRE_MESSAGES: tuple[type[Message], ...] = (
    Normal,
    Shutdown,
    Crash,
    StartFailed,
    Killed,
    NodeDown,
    NodeUp,
    NoProc,
    Down,
    ChildExited,
    ChildInfo,
    ChildCounts,
    SupervisorRequest,
    WhichChildren,
    CountChildren,
    RestartChild,
    OperatorRestart,
    TerminateChild,
    DeleteChild,
    ScalePool,
    Ok,
    Refused,
    SupervisorReport,
    Inspect,
    ActorSummary,
    Trace,
    TracedMessage,
)
"""The core's message types that may cross between nodes (exit reasons, monitors, membership,
supervision, reports, operator requests): part of the wire codec's table
(`flotilla.nodes.cluster.codec`). `StartChild` is not among them: its spec holds classes."""
