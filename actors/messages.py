"""Every typed message and exit reason the runtime exchanges, in one versioned place.

All types are frozen `msgspec.Struct`s tagged with their class name, so each one is
MessagePack-encodable as it stands and decodes back into the same type
(`encode` / `decode` below). Text fields that carry user data (exception messages and
tracebacks) are truncated to documented bounds when built from an exception, so a reason
never grows without limit on its way to a supervisor, a log line or another node.
"""

from __future__ import annotations

import traceback as _traceback
from typing import Any, Literal, Union

import msgspec

PROTOCOL_VERSION = 1
"""Bumped whenever a message's fields change incompatibly."""

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
    does afterwards reaches nobody.
    """

    detail: str = ""


class NodeDown(Message, frozen=True, tag=True):
    """The node hosting the incarnation stopped answering."""

    node: str


ExitReason = Union[Normal, Shutdown, Crash, StartFailed, Killed, NodeDown]


class NodeUp(Message, frozen=True, tag=True):
    """A node joined, or came back: sent to membership subscribers (as `NodeDown` is when
    one stops answering)."""

    node: str


class NoProc(Message, frozen=True, tag=True):
    """A monitored path had no live incarnation when the monitor was set."""


class Down(Message, frozen=True, tag=True):
    """The incarnation a monitor watched at `path` ended with `reason` (or `NoProc`)."""

    path: str
    reason: Union[Normal, Shutdown, Crash, StartFailed, Killed, NodeDown, NoProc]


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


class ChildCounts(Message, frozen=True, tag=True):
    """The answer to `count_children`, with OTP's four fields."""

    specs: int
    active: int
    supervisors: int
    workers: int


class SupervisorRequest(Message, frozen=True, tag=True):
    """Base of the requests a supervisor answers (ask its path)."""


class WhichChildren(SupervisorRequest, frozen=True, tag=True):
    """Ask for a `list[ChildInfo]`, in start order."""


class CountChildren(SupervisorRequest, frozen=True, tag=True):
    """Ask for `ChildCounts`."""


class RestartChild(SupervisorRequest, frozen=True, tag=True):
    """Start a stopped child again from its kept spec."""

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
    "running", "restarting", "not_found", "already_present", "already_started",
    "start_failed", "not_a_pool", "not_a_supervisor", "invalid",
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


# --- demo work ------------------------------------------------------------------------


class Work(Message, frozen=True, tag=True):
    """A unit of demo work (the `ticker` sends them, `flaky` workers handle them)."""

    seq: int


class Done(Message, frozen=True, tag=True):
    """A worker finished `Work(seq)`."""

    seq: int
    worker: str


# --- the ingestion pipeline ------------------------------------------------------------

FailureKind = Literal["TRANSIENT", "BLOCKED", "DRIFT", "HARD"]


class Failure(Message, frozen=True, tag=True):
    """An expected failure of the outside world — not a crash. `kind` decides the policy:
    TRANSIENT (timeouts, resets, 5xx) retries with backoff; BLOCKED (403, 429, challenge
    pages) retries after `retry_after`; DRIFT (a 200 page without the required fields) parks
    the job; HARD (404, 410, 401, too large, too many redirects) goes to the dead letters."""

    kind: FailureKind
    detail: str
    status: int = 0
    retry_after: float | None = None
    evidence: str = ""
    """What was seen (headers and the start of the body), kept in the attempt history."""


class Returned(Message, frozen=True, tag=True):
    """Attempt `token` of job `key` never reached an actor that could take it (`reason`:
    nothing lives at the path it was sent to, or that node is down): the job is due again,
    and the attempt is not counted. Sent to the job's `reply_to` by the node where it was
    dead-lettered (see `FetchJob.returned`)."""

    key: str
    token: int
    reason: str


class FetchJob(Message, frozen=True, tag=True):
    """Fetch `url` for attempt `token` of job `key`, extract with `rules`, report to `reply_to`.
    `tries` counts this job's attempts since submission or replay, this one included: 1
    means it has not failed at its target yet (half-open breakers prefer such jobs as trials)."""

    key: str
    url: str
    rules: str
    token: int
    reply_to: str
    tries: int = 1

    def returned(self, reason: str) -> Returned:
        """What the sender is told when this job is dead-lettered."""
        return Returned(self.key, self.token, reason)


class Deferred(Message, frozen=True, tag=True):
    """Attempt `token` of job `key` was not made: its target may not be asked now (a breaker
    is open, the fleet holds, no rate-limit slot came in time, no proxy is usable). The job
    waits `delay` seconds, durably, and the attempt is not counted."""

    key: str
    token: int
    delay: float
    reason: str
    budget: bool = True
    """The wait spends the job's wait budget (False for a wait in line for a rate-limit
    slot: the target is being served, the job's turn comes)."""


class ExtractJob(Message, frozen=True, tag=True):
    """Apply `rules` to the page fetched for attempt `token` of job `key`."""

    key: str
    url: str
    rules: str
    token: int
    status: int
    body: bytes
    content_hash: str
    reply_to: str
    proxy: str = ""
    """The proxy the page came through ("" for a direct connection)."""
    probe: bool = False
    """The fetch was one of the fleet's recovery probes during Hold."""
    trial: bool = False
    """The fetch was a trial call of the target's half-open breaker."""
    headers: dict[str, str] = {}
    """The response's headers that can mark a challenge page (`actors.rules.CHALLENGE_HEADERS`)."""

    def returned(self, reason: str) -> Returned:
        """What the sender is told when this job is dead-lettered."""
        return Returned(self.key, self.token, reason)


class Fetched(Message, frozen=True, tag=True):
    """The page of attempt `token` of job `key` was fetched; extraction starts."""

    key: str
    token: int


class JobOutcome(Message, frozen=True, tag=True):
    """How attempt `token` of job `key` ended: `fields` (with the page's `content_hash`), or
    a `failure`."""

    key: str
    token: int
    fields: dict[str, Any] | None = None
    content_hash: str = ""
    failure: Failure | None = None
    elapsed: float = 0.0


# --- alerts -------------------------------------------------------------------------------

AlertSeverity = Literal["info", "warning", "critical"]


class Alert(Message, frozen=True, tag=True):
    """Something an operator should know now: a target drifting, a breaker opening, the
    fleet entering Hold. Sent to the alert sink, which logs, counts and forwards it."""

    severity: AlertSeverity
    source: str
    title: str
    detail: str = ""
    at: float = 0.0


# --- resilience: node gates and the fleet's control actors --------------------------------
# Every node's gate reports what its fetchers saw, in batches, and gets the current state
# back; see actors/gate.py for the protocol.

BreakerStateName = Literal["closed", "open", "half_open"]


class TargetReport(Message, frozen=True, tag=True):
    """A gate's outcomes per target since its last report (True = success, in order; the
    half-open trial calls' apart), its extracted pages per target (True = the page had its
    required fields, False = drifted) with samples of the drifted ones, the latest failure
    seen per target, and the targets whose jobs wait for a trial call."""

    gate: str
    outcomes: dict[str, list[bool]] = {}
    trials: dict[str, list[bool]] = {}
    extractions: dict[str, list[bool]] = {}
    drifted: dict[str, list[str]] = {}
    last_failure: dict[str, str] = {}
    want_trials: list[str] = []


class BreakerStatus(Message, frozen=True, tag=True):
    """One target's breaker as a gate needs it: open for `open_for` more seconds, and the
    trial calls granted to this gate (new permits, to be added)."""

    state: BreakerStateName
    open_for: float = 0.0
    trials: int = 0
    reason: str = ""


class BreakerStates(Message, frozen=True, tag=True):
    """Every breaker of `shard` that is not closed (all others are)."""

    shard: int
    states: dict[str, BreakerStatus] = {}


class BreakerCommand(Message, frozen=True, tag=True):
    """An operator opens (`trip`) or closes (`reset`) the breaker of `target`."""

    target: str
    action: Literal["trip", "reset"]


class FleetReport(Message, frozen=True, tag=True):
    """A gate's fetch outcomes since its last report, for the fleet's health: successes and
    failures, of which probes, how many jobs it held back because of Hold, and per target
    [succeeded, failed] for the calls made while that target's breaker was closed."""

    gate: str
    succeeded: int = 0
    failed: int = 0
    probes_succeeded: int = 0
    probes_failed: int = 0
    held_back: int = 0
    targets: dict[str, list[int]] = {}


HoldMode = Literal["auto", "on", "off"]


class HoldStatus(Message, frozen=True, tag=True):
    """The fleet's Hold as a gate needs it: `probes` new probe permits for this gate."""

    on: bool
    mode: HoldMode = "auto"
    reason: str = ""
    since: float = 0.0
    success_rate: float | None = None
    probes: int = 0


class HoldCommand(Message, frozen=True, tag=True):
    """An operator forces Hold `on` or `off`, or gives it back to the fleet's health
    (`auto`); None only asks for the status. Answered with a `HoldStatus`."""

    mode: HoldMode | None = None


class ProxyReport(Message, frozen=True, tag=True):
    """A gate's outcomes per proxy since its last report (True = success, in order)."""

    gate: str
    outcomes: dict[str, list[bool]] = {}


class ProxyStatus(Message, frozen=True, tag=True):
    """A proxy's breaker state and health (share of recent successes, 1.0 when unknown)."""

    state: BreakerStateName
    health: float = 1.0
    open_for: float = 0.0


class ProxyStates(Message, frozen=True, tag=True):
    """Every proxy of the pool (in the topology's order) and its status."""

    states: dict[str, ProxyStatus] = {}


class TokenRequest(Message, frozen=True, tag=True):
    """A gate wants `wanted` fetch slots for `target` (its fetchers are waiting)."""

    gate: str
    target: str
    wanted: int


class TokenGrant(Message, frozen=True, tag=True):
    """`tokens` fetch slots for `target`, to be used within `ttl` seconds."""

    target: str
    tokens: int
    ttl: float


class SlowDown(Message, frozen=True, tag=True):
    """`target` answered 429 with Retry-After `seconds`: slow it down that long."""

    target: str
    seconds: float


# --- the codec ------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()


def encode(message: Message) -> bytes:
    """Encode a runtime message as MessagePack."""
    return _encoder.encode(message)


def decode(data: bytes, type: object) -> Message:  # noqa: A002
    """Decode MessagePack produced by `encode` into `type` (a class or a Union of them).

    Raises `msgspec.ValidationError` (a `msgspec.DecodeError`) on anything else.
    """
    return msgspec.msgpack.decode(data, type=type)
