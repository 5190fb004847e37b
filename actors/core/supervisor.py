"""Supervisors as in Erlang/OTP, on Pykka: strategies, intensity, backoff, pools, the API.

The rules follow OTP's ``supervisor.erl``:

* children start in order and stop in reverse order, each within its shutdown timeout;
  a child that fails to start while the supervisor starts makes the supervisor stop the
  ones already started and fail to start itself;
* permanent children are always restarted, transient ones unless they exit `Normal` or
  `Shutdown`, temporary ones never (their spec is dropped when they exit);
* `one_for_one` restarts the child that exited, `one_for_all` stops every other child
  (in reverse order) and restarts all, `rest_for_one` does that for the children started
  after the one that exited; temporary siblings stopped this way are dropped;
* every restart counts against the intensity: more than `intensity` restarts within
  `period` seconds (edge included) and the supervisor stops all its children and exits
  with ``Shutdown("reached_max_restart_intensity")``, leaving the decision to its parent;
* a restart whose start fails is tried again after the messages already queued, and each
  try counts as a restart.

Across nodes, a child placed on a node that is not up does not fail its supervisor's start:
it waits for that node (``restarting``, reported once as ``waiting_for_node``) and starts when
the node joins, on its own and uncounted (nothing crashed); the children after it start at
once. A child whose node goes down later waits the same way, and its restart counts when the
node is back.

On top of OTP, an optional `Backoff` delays restarts; while a child waits it is
``restarting`` and its path takes dead letters.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pykka

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.child_spec import ChildSpec, PoolSpec, ShutdownPolicy, Spec, SupervisorSpec
from flotilla.actors.core.errors import SupervisorError
from flotilla.actors.core.messages import (
    ChildCounts,
    ChildExited,
    ChildInfo,
    ChildStatus,
    CountChildren,
    DeleteChild,
    ExitReason,
    NodeDown,
    NodeUp,
    Ok,
    OperatorRestart,
    Refused,
    ReportEvent,
    RestartChild,
    ScalePool,
    Shutdown,
    StartFailed,
    SupervisorReport,
    SupervisorRequest,
    TerminateChild,
    WhichChildren,
    describe_reason,
    is_clean_exit,
)
from flotilla.actors.core.registry import DEFAULT_ASK_TIMEOUT, PathRef, PoolSlot, Slot
from flotilla.actors.core.remote import REMOTE_REPLY_GRACE, RemoteIncarnation, killed_without_answer
from flotilla.actors.core.scheduler import TimerHandle
from flotilla.actors.core.stopping import stop_within

GAVE_UP = "reached_max_restart_intensity"


class StartChild(SupervisorRequest, frozen=True, tag=True):
    """Add a child spec at the end and start it. Local only: the spec holds a class; a
    `spec` that is not a `ChildSpec`, `SupervisorSpec` or `PoolSpec` is refused."""

    spec: Any


@dataclass(frozen=True)
class _RestartDue:
    """A delayed restart (backoff) or a retry of a failed restart is due."""

    child_id: str
    token: int
    count_it: bool


@dataclass
class _Child:
    """What a supervisor knows about one child."""

    spec: Spec
    slot: Slot
    actor: Actor | None = None
    status: ChildStatus = "stopped"
    incarnation: int = 0
    restarts: int = 0
    in_a_row: int = 0
    started_at: float = 0.0
    last_exit: ExitReason | None = None
    pending: TimerHandle | None = None
    token: int = 0
    node: str | None = None
    awaiting_node: str | None = None
    never_started: bool = False
    """Waiting for its node since its supervisor started: when the node joins, it starts alone."""

    @property
    def id(self) -> str:
        return self.spec.id


def instantiate(spec: Spec) -> Actor:
    """A new, not yet started incarnation for `spec`."""
    if isinstance(spec, ChildSpec):
        return spec.actor(**spec.args)
    if isinstance(spec, PoolSpec):
        return PoolSupervisor(spec)
    return Supervisor(spec)


def start_timeout(spec: Spec) -> float | None:
    """How long a start of `spec` may take; None for supervisors and pools, whose own
    children are each bounded."""
    return spec.start_timeout if isinstance(spec, ChildSpec) else None


def wire_shutdown(shutdown: float | str) -> float:
    """A shutdown policy as one number: seconds, 0 for infinity, -1 for brutal_kill."""
    if shutdown == "brutal_kill":
        return -1.0
    if shutdown == "infinity":
        return 0.0
    return float(shutdown)


def shutdown_from_wire(seconds: float) -> ShutdownPolicy:
    """The inverse of `wire_shutdown`."""
    if seconds < 0:
        return "brutal_kill"
    if seconds == 0:
        return "infinity"
    return seconds


class ChildStartError(Exception):
    """A supervisor could not start one of its children while starting itself."""

    def __init__(self, child_id: str, reason: StartFailed) -> None:
        super().__init__(f"failed_to_start_child {child_id}: {describe_reason(reason)}")
        self.child_id = child_id
        self.reason = reason


def _no_membership_watch() -> None:
    """The cancel function of a supervisor that watches no membership (no cluster link)."""


@dataclass
class _State:
    """A supervisor's whole state, in one record."""

    children: list[_Child] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)


class SupervisorSnapshot(msgspec.Struct, frozen=True):
    """A supervisor's `inspect()`: its restart policy and the restarts inside its period."""

    strategy: str
    intensity: int
    period: float
    recent_restarts: int


class PoolSnapshot(SupervisorSnapshot, frozen=True):
    """A pool's `inspect()`: a supervisor's, and how many replicas it has."""

    size: int


class Supervisor(Actor):
    """Starts, watches and restarts its children by the rules in the module docstring."""

    def __init__(self, spec: SupervisorSpec | PoolSpec) -> None:
        super().__init__()
        self.spec = spec
        self.flags = spec.flags
        self._clock: Callable[[], float] = time.monotonic
        self._rng = random.Random()
        self._state = _State()
        self._unwatch: Callable[[], None] = _no_membership_watch

    # --- life cycle -------------------------------------------------------------------

    def initial_specs(self) -> list[Spec]:
        """The children to start, in order."""
        assert isinstance(self.spec, SupervisorSpec)  # noqa: S101  a supervisor is started from its own spec
        return list(self.spec.children)

    def on_start(self) -> None:
        self._clock = self.system.clock
        link = self.system.remote
        if link is not None:
            self._unwatch = link.watch_membership(self._on_membership)
        for spec in self.initial_specs():
            self._state.children.append(self._new_child(spec))
        self._children_changed()
        for child in list(self._state.children):
            if self._node_is_down(child):
                self._wait_for_node(child, first_start=True)
                continue
            failure = self._start(child)
            if failure is not None and failure.type == "NodeDown" and child.node is not None:
                self._wait_for_node(child, first_start=True)  # its node went down before answering
            elif failure is not None:
                self._stop_children()
                raise ChildStartError(child.id, failure)

    def on_stop(self) -> None:
        self._stop_children()
        self._retire_dynamic_children()
        self._unwatch()

    def on_failure(self, *_exc_info: Any) -> None:
        self._stop_children()
        self._retire_dynamic_children()
        self._unwatch()

    def kill(self, reason: ExitReason) -> None:
        """Abandon this supervisor, but still end its subtree, as OTP's links end the children
        of a killed supervisor: when its thread comes back, it stops its children by their own
        shutdown policies (nothing else of it runs for anyone; its successor starts new ones)."""
        self.abandon(reason)

    def _on_membership(self, event: Any) -> None:
        """Runs in the transport's thread: queue node up/down news for this supervisor."""
        try:
            self.actor_ref.tell(event)
        except pykka.ActorDeadError:
            pass

    def on_receive(self, message: Any) -> Any:
        match message:
            case ChildExited():
                self._handle_exit(message)
            case _RestartDue():
                self._handle_restart_due(message)
            case WhichChildren():
                return [self._info(child) for child in self._state.children]
            case CountChildren():
                return self._counts()
            case StartChild(spec=spec):
                if not isinstance(spec, (ChildSpec, SupervisorSpec, PoolSpec)):
                    return Refused("invalid", f"not a child spec: {type(spec).__name__}")
                return self._start_child(spec)
            case RestartChild(id=child_id):
                return self._restart_child(child_id)
            case OperatorRestart(id=child_id):
                return self._operator_restart(child_id)
            case TerminateChild(id=child_id):
                return self._terminate_child(child_id)
            case DeleteChild(id=child_id):
                return self._delete_child(child_id)
            case ScalePool():
                return Refused("not_a_pool", f"{self.path} is a supervisor, not a pool")
            case NodeUp(node=node):
                for child in list(self._state.children):
                    if child.awaiting_node == node and child in self._state.children:
                        child.awaiting_node = None
                        if child.never_started:
                            self._first_start(child)
                        else:
                            self._restart_counted(child)
            case NodeDown():
                pass  # remote children hear it through their incarnations
            case _:
                # Like OTP's handle_info: a stray message must not take a subtree down.
                self.log.warning("supervisor.unexpected_message", message_type=type(message).__name__)
        return None

    def inspect(self) -> SupervisorSnapshot:
        return SupervisorSnapshot(
            self.flags.strategy, self.flags.intensity, self.flags.period, len(self._state.restarts)
        )

    # --- starting and stopping one child ----------------------------------------------

    def _new_child(self, spec: Spec) -> _Child:
        path = f"{self.path}/{spec.id}"
        node = self._node_of(path)
        if node is not None:
            return _Child(spec=spec, slot=self.system.remote.remote_slot(path), node=node)  # type: ignore[union-attr]
        return _Child(spec=spec, slot=self.system.registry.slot(path, pool=isinstance(spec, PoolSpec)))

    def _node_of(self, path: str) -> str | None:
        """The other node that runs `path`, or None if it runs here."""
        link = self.system.remote
        if link is None:
            return None
        node = link.whereis(path)
        return None if node == self.system.node else node

    def _find(self, child_id: str) -> _Child | None:
        for child in self._state.children:
            if child.id == child_id:
                return child
        return None

    def _start(self, child: _Child) -> StartFailed | None:
        """Start a new incarnation of `child` and wait for its `on_start`."""
        self._cancel_pending(child)
        child.never_started = False
        child.incarnation += 1
        if child.node is not None:
            return self._start_remote(child, child.node)
        try:
            actor = instantiate(child.spec)
        except BaseException as exc:  # noqa: BLE001 - a constructor that raises is a start failure
            return self._start_failed(child, StartFailed.from_exception(exc))
        actor.attach(
            path=child.slot.path,
            incarnation=child.incarnation,
            system=self.system,
            slot=child.slot,
            on_exit=self._on_child_exit,
        )
        actor.launch()
        return self._await_start(child, actor, start_timeout(child.spec))

    def _start_remote(self, child: _Child, node: str) -> StartFailed | None:
        """Ask `node` to start the child; a `NodeDown` failure at once if it is not up (no
        waiting here: a supervisor's mailbox must keep moving)."""
        link = self.system.remote
        assert link is not None  # noqa: S101  only remote children get here
        if not link.is_up(node):
            return self._start_failed(child, StartFailed("NodeDown", f"node {node} is not up"))
        incarnation = RemoteIncarnation(
            path=child.slot.path,
            incarnation=child.incarnation,
            node=node,
            parent=self.path,
            link=link,
            on_exit=self._on_child_exit,
        )
        incarnation.shutdown_seconds = wire_shutdown(child.spec.shutdown)
        child.slot.bind(incarnation)  # type: ignore[arg-type]
        incarnation.launch()
        timeout = start_timeout(child.spec)
        return self._await_start(child, incarnation, timeout + REMOTE_REPLY_GRACE if timeout else None)

    def _await_start(self, child: _Child, actor: Any, timeout: float | None) -> StartFailed | None:
        if not actor.started.wait(timeout):
            failure = StartFailed("StartTimeout", f"on_start did not finish within {timeout:g} s")
            actor.abandon(failure)
            return self._start_failed(child, failure)
        if actor.start_failure is not None:
            return self._start_failed(child, actor.start_failure)
        child.actor = actor
        child.status = "running"
        child.started_at = self._clock()
        self._report("child_started", child)
        return None

    def _start_failed(self, child: _Child, failure: StartFailed) -> StartFailed:
        child.actor = None
        child.status = "stopped"
        child.last_exit = failure
        self._report("start_failed", child, failure)
        return failure

    def _on_child_exit(self, actor: Actor, reason: ExitReason) -> None:
        """Runs in the child's thread when it ends: queue the news for this supervisor."""
        try:
            self.actor_ref.tell(ChildExited(actor.path, actor.incarnation, reason, actor.actor_urn))
        except pykka.ActorDeadError:
            pass

    def _terminate(self, child: _Child) -> None:
        """Stop `child` within its shutdown policy (`stopping.py`); kill it past the timeout."""
        self._cancel_pending(child)
        actor = child.actor
        child.actor = None
        child.status = "stopped"
        if actor is None:
            return
        if isinstance(actor, RemoteIncarnation):
            node = actor.node
            stopped = stop_within(
                actor,
                child.spec.shutdown,
                grace=REMOTE_REPLY_GRACE,
                timed_out=lambda seconds: killed_without_answer(node, seconds),
            )
        else:
            stopped = stop_within(actor, child.spec.shutdown)
        if stopped.timed_out:
            self._report("shutdown_timeout", child, stopped.reason)
        actor.drain()
        child.last_exit = stopped.reason

    def _stop_children(self) -> None:
        for child in reversed(self._state.children):
            self._terminate(child)

    def _remove(self, child: _Child) -> None:
        self._cancel_pending(child)
        self._state.children.remove(child)
        self.system.registry.retire(child.slot.path, with_descendants=True)
        self._children_changed()

    def _retire_dynamic_children(self) -> None:
        """At the end of an incarnation, forget the paths of children its successor will
        not have (started with start_child, or pool replicas beyond the spec's size)."""
        kept = {spec.id for spec in self.initial_specs()}
        for child in self._state.children:
            if child.id not in kept:
                self.system.registry.retire(child.slot.path, with_descendants=True)

    def _children_changed(self) -> None:
        """Hook for pools: the set of children changed."""

    # --- exits and restarts -----------------------------------------------------------

    def _handle_exit(self, exited: ChildExited) -> None:
        child = next((c for c in self._state.children if c.slot.path == exited.path), None)
        if child is None or child.actor is None or child.actor.actor_urn != exited.urn:
            return  # an incarnation this supervisor already stopped or replaced
        actor = child.actor
        child.actor = None
        child.status = "stopped"
        child.last_exit = exited.reason
        actor.drain()
        self._report("child_exited", child, exited.reason)
        backoff = self.flags.backoff
        if backoff is not None and self._clock() - child.started_at >= backoff.healthy_after:
            child.in_a_row = 0
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and is_clean_exit(exited.reason)):
            if restart == "temporary":
                self._remove(child)
            return
        self._restart_counted(child)

    def _node_is_down(self, child: _Child) -> bool:
        """True for a remote child whose node is not up."""
        link = self.system.remote
        return child.node is not None and link is not None and not link.is_up(child.node)

    def _wait_for_node(self, child: _Child, *, first_start: bool) -> None:
        """Park `child` until its node joins (`NodeUp`). Membership is watched from this
        supervisor's start on, so a node that joins after the check is heard."""
        self._cancel_pending(child)
        child.status = "restarting"
        child.awaiting_node = child.node
        child.never_started = first_start
        self._report("waiting_for_node", child, child.last_exit)

    def _first_start(self, child: _Child) -> None:
        """Start a child that waited for its node since this supervisor started: alone and
        uncounted, its siblings untouched. A start that fails is retried as a failed restart is."""
        failure = self._start(child)
        if failure is None:
            return
        if failure.type == "NodeDown" and self._node_is_down(child):
            self._wait_for_node(child, first_start=True)
        else:
            self._retry(child)

    def _restart_counted(self, child: _Child) -> None:
        """Count one restart; give up past the intensity, else restart now or after backoff.
        A remote child whose node is down waits for the node instead, uncounted."""
        if self._node_is_down(child):
            self._wait_for_node(child, first_start=child.never_started)
            return
        if not self._add_restart():
            self._give_up(child)
            return
        child.restarts += 1
        backoff = self.flags.backoff
        if backoff is None:
            self._restart(child)
            return
        delay = backoff.delay(child.in_a_row, self._rng)
        child.in_a_row += 1
        self._schedule_restart(child, delay, count_it=False)
        self._report("restart_scheduled", child, child.last_exit, delay=delay)

    def _add_restart(self) -> bool:
        """Record a restart now; False when that makes more than `intensity` in `period`."""
        now = self._clock()
        window_start = now - self.flags.period
        restarts = [t for t in self._state.restarts if t >= window_start]
        restarts.append(now)
        self._state.restarts = restarts
        return len(restarts) <= self.flags.intensity

    def _give_up(self, child: _Child) -> None:
        self._report("gave_up", child, child.last_exit)
        self._stop_children()
        self.exit(Shutdown(GAVE_UP))

    def _schedule_restart(self, child: _Child, delay: float, *, count_it: bool) -> None:
        self._cancel_pending(child)
        child.status = "restarting"
        child.token += 1
        due = _RestartDue(child.id, child.token, count_it)
        if delay <= 0:
            self.actor_ref.tell(due)
        else:
            child.pending = self.send_after(delay, due)

    def _cancel_pending(self, child: _Child) -> None:
        if child.pending is not None:
            child.pending.cancel()
            child.pending = None
        child.awaiting_node = None
        child.token += 1

    def _handle_restart_due(self, due: _RestartDue) -> None:
        child = self._find(due.child_id)
        if child is None or child.status != "restarting" or child.token != due.token:
            return  # cancelled by terminate_child, delete_child or an earlier restart
        child.pending = None
        if due.count_it:
            self._restart_counted(child)
        else:
            self._restart(child)

    def _restart(self, child: _Child) -> None:
        """Apply the strategy to restart `child` (and siblings); retry whatever fails."""
        children = self._state.children
        strategy = self.flags.strategy
        if strategy == "one_for_one":
            group = [child]
        else:
            first = 0 if strategy == "one_for_all" else children.index(child)
            group = children[first:]
            for sibling in reversed(group):
                if sibling is child:
                    continue
                self._terminate(sibling)
                if sibling.spec.restart == "temporary":
                    self._remove(sibling)
            group = [c for c in group if c in self._state.children]
        for member in group:
            if self._node_is_down(member):
                self._wait_for_node(member, first_start=member.never_started)  # the rest still start
                continue
            if self._start(member) is not None:
                self._retry(member)
                return

    def _retry(self, child: _Child) -> None:
        """Try a failed restart again after the queued messages; each try counts (and,
        with a backoff, waits its delay like any restart)."""
        self._schedule_restart(child, 0.0, count_it=True)

    # --- the API ----------------------------------------------------------------------

    def _info(self, child: _Child) -> ChildInfo:
        actor = child.actor
        return ChildInfo(
            id=child.id,
            path=child.slot.path,
            kind=child.spec.kind,  # type: ignore[arg-type]
            actor=child.spec.actor_name,
            status=child.status,
            restart=child.spec.restart,
            restarts=child.restarts,
            incarnation=child.incarnation,
            mailbox=actor.mailbox_depth if actor is not None else 0,
            uptime=round(self._clock() - child.started_at, 3) if actor is not None else 0.0,
            last_exit=describe_reason(child.last_exit) if child.last_exit is not None else "",
            waiting_for=child.awaiting_node or "",
        )

    def _counts(self) -> ChildCounts:
        children = self._state.children
        return ChildCounts(
            specs=len(children),
            active=sum(1 for c in children if c.actor is not None),
            supervisors=sum(1 for c in children if c.spec.kind != "worker"),
            workers=sum(1 for c in children if c.spec.kind == "worker"),
            waiting=sum(1 for c in children if c.awaiting_node is not None),
        )

    def _start_child(self, spec: Spec) -> Ok | Refused:
        wanted = getattr(spec, "node", None) or (getattr(spec, "replica_nodes", None) or [None])[0]
        if wanted is not None and self.system.whereis(f"{self.path}/{spec.id}") != wanted:
            return Refused(
                "invalid",
                "a child on another node must be placed in the topology; "
                "start_child runs children on its supervisor's node",
            )
        existing = self._find(spec.id)
        if existing is not None:
            if existing.actor is not None:
                return Refused("already_started", existing.slot.path)
            return Refused("already_present", existing.slot.path)
        child = self._new_child(spec)
        self._state.children.append(child)
        self._children_changed()
        failure = self._start(child)
        if failure is not None:
            self._remove(child)
            return Refused("start_failed", describe_reason(failure))
        return Ok(child.slot.path)

    def _stopped_child(self, child_id: str) -> _Child | Refused:
        """The child, if it exists and is neither running nor waiting to restart."""
        child = self._find(child_id)
        if child is None:
            return Refused("not_found", child_id)
        if child.actor is not None:
            return Refused("running", child.slot.path)
        if child.status == "restarting":
            return Refused("restarting", child.slot.path)
        return child

    def _restart_child(self, child_id: str) -> Ok | Refused:
        child = self._stopped_child(child_id)
        if isinstance(child, Refused):
            return child
        failure = self._start(child)
        if failure is not None:
            return Refused("start_failed", describe_reason(failure))
        return Ok(child.slot.path)

    def _operator_restart(self, child_id: str) -> Ok | Refused:
        """Stop the child and start it again, one restart more in its count (reported with
        its start, so the restart metric counts it) but none against the intensity. A child
        waiting for its node is left waiting (refused as `restarting`). A start that fails is
        retried as any failed restart is (counted, and against the intensity: the failure is
        the child's own), so the child is never left stopped."""
        child = self._find(child_id)
        if child is None:
            return Refused("not_found", child_id)
        if child.awaiting_node is not None:
            return Refused("restarting", f"{child.slot.path} waits for node {child.awaiting_node}")
        self._terminate(child)
        child.restarts += 1
        failure = self._start(child)
        if failure is None:
            return Ok(child.slot.path)
        if failure.type == "NodeDown" and self._node_is_down(child):
            self._wait_for_node(child, first_start=False)
        else:
            self._retry(child)
        return Refused("start_failed", describe_reason(failure))

    def _terminate_child(self, child_id: str) -> Ok | Refused:
        child = self._find(child_id)
        if child is None:
            return Refused("not_found", child_id)
        self._terminate(child)
        if child.spec.restart == "temporary":
            self._remove(child)
        return Ok(child.slot.path)

    def _delete_child(self, child_id: str) -> Ok | Refused:
        child = self._stopped_child(child_id)
        if isinstance(child, Refused):
            return child
        self._remove(child)
        return Ok(child.slot.path)

    def _report(
        self, event: ReportEvent, child: _Child, reason: ExitReason | None = None, *, delay: float = 0.0
    ) -> None:
        self.system.report(
            SupervisorReport(
                supervisor=self.path,
                event=event,
                child=child.slot.path,
                reason=reason,
                delay=round(delay, 6),
                restarts=child.restarts,
                waiting_for=(child.awaiting_node or "") if event == "waiting_for_node" else "",
            )
        )


class PoolSupervisor(Supervisor):
    """Supervises `size` replicas of one worker spec and scales them on `ScalePool`."""

    spec: PoolSpec

    def initial_specs(self) -> list[Spec]:
        return [self.spec.replica(i) for i in range(self.spec.size)]

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ScalePool):
            return self._scale(message.size)
        if isinstance(message, StartChild):
            return Refused("invalid", "a pool's replicas come from its spec; scale it instead")
        return super().on_receive(message)

    def inspect(self) -> PoolSnapshot:
        return PoolSnapshot(**msgspec.structs.asdict(super().inspect()), size=len(self._state.children))

    def _children_changed(self) -> None:
        if isinstance(self._slot, PoolSlot):
            self._slot.set_replicas([child.slot for child in self._state.children])

    def _scale(self, size: int) -> Ok | Refused:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return Refused("invalid", f"pool size {size!r} must be an integer >= 0")
        children = self._state.children
        while len(children) > size:
            victim = max(children, key=lambda c: int(c.id))
            self._terminate(victim)
            self._remove(victim)
        used = {int(c.id) for c in children}
        free = (i for i in range(size * 2 + 1) if i not in used)
        while len(children) < size:
            child = self._new_child(self.spec.replica(next(free)))
            children.append(child)
            self._children_changed()
            if self._node_is_down(child):
                self._wait_for_node(child, first_start=True)
                continue
            failure = self._start(child)
            if failure is not None:
                self._retry(child)
        return Ok(self.path)


class SupervisorClient:
    """The supervisor API over a path: raises `SupervisorError` where OTP returns an error.

    Queries wait `timeout` seconds; calls that start or stop children wait
    `change_timeout`, since a start may take its `start_timeout` and a stop its `shutdown`.
    """

    def __init__(
        self, ref: PathRef, timeout: float | None = DEFAULT_ASK_TIMEOUT, change_timeout: float | None = 120.0
    ) -> None:
        self.ref = ref
        self.timeout = timeout
        self.change_timeout = change_timeout

    @property
    def path(self) -> str:
        return self.ref.path

    def _call(self, request: SupervisorRequest, timeout: float | None) -> Any:
        result = self.ref.ask(request, timeout=timeout)
        if isinstance(result, Refused):
            raise SupervisorError(self.path, result.code, result.detail)
        return result

    def which_children(self) -> list[ChildInfo]:
        """Every child in start order, with status, restarts and mailbox depth."""
        return self._call(WhichChildren(), self.timeout)

    def count_children(self) -> ChildCounts:
        """OTP's specs/active/supervisors/workers counts."""
        return self._call(CountChildren(), self.timeout)

    def start_child(self, spec: Spec) -> str:
        """Add and start a child; returns its path."""
        return self._call(StartChild(spec), self.change_timeout).path

    def restart_child(self, child_id: str) -> str:
        """Start a stopped child again; returns its path."""
        return self._call(RestartChild(child_id), self.change_timeout).path

    def operator_restart(self, child_id: str) -> str:
        """Stop a child and start it again, counted in its restarts but not against the
        supervisor's intensity (an operator's restart); returns its path."""
        return self._call(OperatorRestart(child_id), self.change_timeout).path

    def terminate_child(self, child_id: str) -> None:
        """Stop a child and keep its spec (temporary children lose it)."""
        self._call(TerminateChild(child_id), self.change_timeout)

    def delete_child(self, child_id: str) -> None:
        """Forget a stopped child's spec."""
        self._call(DeleteChild(child_id), self.change_timeout)

    def scale(self, size: int) -> None:
        """Grow or shrink a pool to `size` replicas."""
        self._call(ScalePool(size), self.change_timeout)
