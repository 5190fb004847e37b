"""One node's place in the cluster: remote refs, membership, remote children and monitors.

`Cluster` implements the actor layer's `RemoteLink` on top of the `Transport`:

* **Remote refs.** A path that runs on another node (by the `Directory`) resolves to a
  `RemoteSlot` (a pool's path to a `PoolRoute`, which prefers the pool's replicas on this
  node and goes through the `RemoteSlot` only when none runs here): a tell becomes a `Tell`
  envelope, an ask an `Ask` with a fresh reference whose `Reply` or `Fail` completes the
  asker's future. Asks to a node that is down fail at once with `NodeUnreachable`; asks in
  flight when it goes down fail then. A tell to a node that is down is a dead letter,
  counted and logged, never silent.
* **Membership.** Every node sends a `Heartbeat` to every peer each `heartbeat_interval`;
  a peer silent for `heartbeat_timeout` is down (killed, frozen, cut off alike); a peer
  heard again is up, and a new boot id means it restarted (down, then up). Subscribers get
  `NodeUp` / `NodeDown` messages.
* **Remote children.** A supervisor's child placed on another node is started with
  `Spawn` and stopped with `Halt`; the node that runs it (the host) answers `Spawned` and
  `Exited`. When a parent's node goes down, the host stops the children that parent started
  (as links do in Erlang); the parent sees them exit with `NodeDown`.
* **Monitors.** `Monitor` / `MonitorDown` carry monitors across nodes.

Inbound envelopes are handled in the transport's I/O thread and never block it: starting
and stopping hosted children runs on the host's per-path threads (`nodes/cluster/host.py`).
Envelopes that change state are accepted only from the peer they concern.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka
import structlog

from flotilla.actors.core.child_spec import PoolSpec, actor_classes
from flotilla.actors.core.errors import ActorCrashed, NodeUnreachable, NoSuchActor, RemoteFailure, Unavailable
from flotilla.actors.core.errors import Timeout as AskTimeout
from flotilla.actors.core.messages import Crash, Down, ExitReason, NodeDown, NodeUp, NoProc
from flotilla.actors.core.registry import DEFAULT_ASK_TIMEOUT, PendingReply, PoolRoute, Slot
from flotilla.actors.core.remote import RemoteIncarnation
from flotilla.actors.core.system import ActorSystem
from flotilla.actors.core.throttle import Throttle
from flotilla.actors.pipeline.leases import OwnerLease
from flotilla.nodes.cluster.codec import (
    Ask,
    Codec,
    Demonitor,
    Envelope,
    Exited,
    Fail,
    FrameError,
    Halt,
    Heartbeat,
    Monitor,
    MonitorDown,
    Reply,
    Spawn,
    Spawned,
    Tell,
    declared_messages,
)
from flotilla.nodes.cluster.host import Host
from flotilla.nodes.cluster.transport import Transport
from flotilla.nodes.config.directory import Directory
from flotilla.nodes.config.topology import Topology
from flotilla.nodes.security.keys import CurveKeys
from flotilla.nodes.serving.refusals import refusals

ASK_GRACE = 5.0
"""Seconds an unanswered remote ask is remembered beyond its timeout before it is dropped."""
MAX_MONITORS_PER_PEER = 10_000
"""Monitors one peer may hold on this node's actors at a time; more are refused (counted and
logged), so a peer cannot grow the node's memory by sending `Monitor` envelopes."""
MAX_ASKS_PER_PEER = 10_000
"""Asks from one peer this node works on at a time (an ask is done when answered or when
its asker's timeout and `ASK_GRACE` have passed); more are answered `unavailable` at once."""
STOP_POLL = 0.05
"""Seconds between two looks at a stop request while `hear_peers` waits."""
UNDELIVERABLE_LOG_INTERVAL = 10.0
"""Seconds between two `cluster.tell_undeliverable` log lines of one kind (the first at once;
`since` in each line counts the tells since the last, `count` all of them)."""

_log = structlog.get_logger("flotilla.cluster")


@dataclass
class PeerState:
    """What this node knows of one peer."""

    up: bool = False
    boot: str | None = None
    last_seen: float = 0.0
    downs: int = 0
    lost_children: list[tuple[str, str]] = field(default_factory=list)
    """(path, urn) of the children it ran for us when it went down."""


@dataclass
class _PendingAsk:
    reply_to: Any
    node: str
    path: str
    expires: float


@dataclass
class _OutMonitor:
    node: str
    path: str
    deliver: Callable[[Down], None]


class RemoteAnswer(pykka.Future[Any]):
    """The answer to one remote ask: set once (by the I/O thread that reads the `Reply`, or
    by whatever fails the ask), waited for by the asker. A plain lock held until the answer
    is there, so setting it is one release that wakes the asker, with no condition variable
    in between; a second `set` is ignored (the first answer stands)."""

    def __init__(self) -> None:
        super().__init__()
        self._ready = threading.Lock()
        self._ready.acquire()
        self._sets = itertools.count()  # next() is atomic: one setter wins
        self._value: Any = None
        self._exc_info: Any = None

    def get(self, *, timeout: float | None = None) -> Any:
        """The answer (raised if it is an error); `pykka.Timeout` after `timeout` seconds."""
        wait = -1 if timeout is None else min(max(0.0, timeout), threading.TIMEOUT_MAX)
        if not self._ready.acquire(timeout=wait):
            raise pykka.Timeout(f"{timeout} seconds")
        self._ready.release()  # every later `get` returns at once
        if self._exc_info is not None:
            raise self._exc_info[1]
        return self._value

    def set(self, value: Any = None) -> None:
        self._answer(value, None)

    def set_exception(self, exc_info: Any = None) -> None:
        self._answer(None, exc_info if exc_info is not None else sys.exc_info())

    def _answer(self, value: Any, exc_info: Any) -> None:
        if next(self._sets):
            return
        self._value, self._exc_info = value, exc_info
        self._ready.release()


class RemoteSlot(Slot):
    """The stand-in for a path that runs on another node."""

    __slots__ = ("node", "cluster", "_incarnation")

    def __init__(self, path: str, node: str, cluster: Cluster) -> None:
        super().__init__(path, cluster.system.registry.dead_letters)
        self.node = node
        self.cluster = cluster
        self._incarnation: RemoteIncarnation | None = None

    def bind(self, actor: Any) -> None:
        self._incarnation = actor

    def unbind(self, actor: Any) -> None:
        if self._incarnation is actor:
            self._incarnation = None

    @property
    def live(self) -> bool:
        """The node is up (and, for a child supervised here, its incarnation runs)."""
        incarnation = self._incarnation
        if incarnation is not None and incarnation.exited.is_set():
            return False
        return self.cluster.is_up(self.node)

    @property
    def actor(self) -> Any:
        return None

    def tell(self, message: Any) -> None:
        self.cluster.send_tell(self, message)

    def ask(self, message: Any, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> PendingReply:
        future = RemoteAnswer()
        self.cluster.send_ask(self, message, future, timeout)
        return PendingReply(self.path, future, timeout)

    def deliver(self, message: Any, reply_to: Any) -> bool:
        self.cluster.send_ask(self, message, reply_to, DEFAULT_ASK_TIMEOUT)
        return True


class _RemoteReply:
    """Receives a local actor's answer to an ask from another node and sends it back."""

    __slots__ = ("cluster", "peer", "ref", "path")

    def __init__(self, cluster: Cluster, peer: str, ref: int, path: str) -> None:
        self.cluster = cluster
        self.peer = peer
        self.ref = ref
        self.path = path

    def set(self, value: Any = None) -> None:
        self.cluster.ask_done(self.peer, self.ref)
        try:
            body, typed = self.cluster.codec.encode_body(value)
            frame = self.cluster.codec.encode(Reply(self.ref, body, typed))
        except (TypeError, FrameError) as exc:
            self.fail("unencodable", f"the answer cannot be sent: {exc}")
            return
        self.cluster.transport.send(self.peer, frame, direct=True)

    def set_exception(self, exc_info: Any = None) -> None:
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, ActorCrashed):
            self.fail("crashed", str(exc), exc.reason)
        elif isinstance(exc, NodeUnreachable):
            self.fail("node_down", str(exc))
        elif isinstance(exc, Unavailable):
            self.fail("unavailable", str(exc))
        else:
            self.fail("crashed", f"{type(exc).__name__}: {exc}")

    def fail(self, kind: str, detail: str, crash: Crash | None = None) -> None:
        """Answer the asking node with a `Fail` of `kind` instead of a value."""
        self.cluster.ask_done(self.peer, self.ref)
        frame = self.cluster.codec.encode(Fail(self.ref, kind, self.path, detail[:2000], crash))  # type: ignore[arg-type]
        self.cluster.transport.send(self.peer, frame, direct=True)


class Cluster:
    """This node's membership, remote refs, remote children and monitors."""

    def __init__(
        self,
        topology: Topology,
        node: str,
        system: ActorSystem,
        keys: CurveKeys | None = None,
        on_give_up: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        """`keys`: this node's CURVE keys; None takes them from the topology (generated on
        first start unless it names a key directory or opts into plaintext)."""
        config = topology.transport
        if keys is None:
            keys = CurveKeys.for_node(topology, node)
        self.topology = topology
        self.node = node
        self.system = system
        self.directory = Directory(topology)
        self.heartbeat_timeout = config.heartbeat_timeout
        self.boot = uuid.uuid4().hex[:16]
        self.codec = Codec(config.max_message_bytes, declared_messages(actor_classes(topology.tree)))
        self.peers = {name: PeerState() for name in topology.nodes if name != node}
        self.rejected: Counter[str] = Counter()
        self.undeliverable: Counter[str] = Counter()
        self._undeliverable_log = Throttle(UNDELIVERABLE_LOG_INTERVAL)
        self._lock = threading.RLock()
        self._up_changed = threading.Condition(self._lock)
        self._listeners: list[Callable[[Any], None]] = []
        self._pending: dict[int, _PendingAsk] = {}
        self._refs = itertools.count(1)
        self._seq = itertools.count(1)
        self._remote_slots: dict[str, RemoteSlot] = {}
        self._pool_routes: dict[str, PoolRoute] = {}
        self.owner_token = 0
        """The tree's lease token while this node owns the tree (0: it does not)."""
        self._children: dict[str, RemoteIncarnation] = {}
        self._out_monitors: dict[int, _OutMonitor] = {}
        self._in_monitors: dict[tuple[str, int], Callable[[], None]] = {}
        self._monitors_by_peer: Counter[str] = Counter()
        self._asks_in: dict[str, dict[int, float]] = {name: {} for name in self.peers}
        """Per peer: the refs of its asks this node works on, and when each is given up."""
        self.host = Host(node, self.directory, system, self._send)
        self.transport = Transport(
            node=node,
            address=topology.nodes[node].address,
            peers={n: topology.nodes[n].address for n in self.peers},
            max_message_bytes=config.max_message_bytes,
            high_water_mark=config.high_water_mark,
            backlog=config.backlog,
            tick=config.heartbeat_interval,
            on_frames=self._on_frames,
            on_undeliverable=self._on_undeliverable,
            on_tick=self._tick,
            keys=keys,
            on_give_up=on_give_up,
            boot=self.boot,
        )
        system.remote = self
        system.registry.resolver = self._resolve

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Listen, connect to the peers and start heartbeating."""
        self.transport.start()

    def close(self) -> None:
        """Stop the children hosted here, fail the asks still waiting, stop the transport."""
        self.host.stop_all()
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for ask in pending:
            error = RemoteFailure(ask.path, f"{self.node} is stopping")
            ask.reply_to.set_exception((RemoteFailure, error, None))
        self.transport.close()

    # --- RemoteLink: what supervisors and refs use ----------------------------------------

    def whereis(self, path: str) -> str:
        return self.directory.whereis(path)

    def is_up(self, node: str) -> bool:
        if node == self.node:
            return True
        peer = self.peers.get(node)
        return peer is not None and peer.up

    def wait_up(self, node: str, timeout: float) -> bool:
        """Wait up to `timeout` s for `node` to be up."""
        deadline = time.monotonic() + timeout
        with self._up_changed:
            while not self.is_up(node):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._up_changed.wait(remaining)
        return True

    def hear_peers(self, timeout: float, stop: threading.Event) -> list[str]:
        """Wait up to `timeout` s for every peer to be up, or until `stop` is set; return the
        peers not heard by then (a node that just started hears its peers one by one)."""
        deadline = time.monotonic() + timeout
        with self._up_changed:
            while True:
                missing = [name for name, peer in self.peers.items() if not peer.up]
                remaining = deadline - time.monotonic()
                if not missing or remaining <= 0 or stop.is_set():
                    return missing
                self._up_changed.wait(min(remaining, STOP_POLL))

    def up_nodes(self) -> list[str]:
        return [self.node] + [n for n, p in self.peers.items() if p.up]

    def remote_slot(self, path: str) -> RemoteSlot:
        with self._lock:
            slot = self._remote_slots.get(path)
            if slot is None:
                slot = self._remote_slots[path] = RemoteSlot(path, self.whereis(path), self)
            return slot

    def _resolve(self, path: str) -> Slot | None:
        node = self.whereis(path)
        if node == self.node or node not in self.peers:
            return None
        if isinstance(self.directory.spec_at(path), PoolSpec):  # its replicas here, if any, go first
            with self._lock:
                route = self._pool_routes.get(path)
                if route is None:
                    route = self._pool_routes[path] = PoolRoute(path, self.remote_slot(path), self.system.registry)
                return route
        return self.remote_slot(path)

    def watch_membership(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def cancel() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return cancel

    def spawn(self, incarnation: RemoteIncarnation) -> None:
        with self._lock:
            self._children[incarnation.actor_urn] = incarnation
        if not self.is_up(incarnation.node):
            incarnation.node_down()
            return
        self._send(
            incarnation.node,
            Spawn(incarnation.path, incarnation.incarnation, incarnation.parent, incarnation.actor_urn, self.boot),
            ("child", incarnation.actor_urn),
        )

    def halt(self, incarnation: RemoteIncarnation, shutdown: float) -> None:
        if not self.is_up(incarnation.node):
            incarnation.node_down()
            return
        self._send(
            incarnation.node, Halt(incarnation.path, incarnation.actor_urn, shutdown), ("child", incarnation.actor_urn)
        )

    def forget(self, incarnation: RemoteIncarnation) -> None:
        with self._lock:
            self._children.pop(incarnation.actor_urn, None)

    def monitor(self, path: str, deliver: Callable[[Down], None]) -> Callable[[], None]:
        node = self.whereis(path)
        if not self.is_up(node):
            deliver(Down(path, NodeDown(node)))
            return lambda: None
        ref = next(self._refs)
        with self._lock:
            self._out_monitors[ref] = _OutMonitor(node, path, deliver)
        self._send(node, Monitor(path, ref))

        def cancel() -> None:
            with self._lock:
                entry = self._out_monitors.pop(ref, None)
            if entry is not None and self.is_up(node):
                self._send(node, Demonitor(ref))

        return cancel

    # --- sending ------------------------------------------------------------------------

    def _send(self, node: str, envelope: Envelope, token: Any = None) -> None:
        self.transport.send(node, self.codec.encode(envelope), token)

    def send_tell(self, slot: RemoteSlot, message: Any) -> None:
        """Send a tell; raises TypeError at once if `message` cannot cross nodes."""
        body, typed = self.codec.encode_body(message)
        if not self.is_up(slot.node):
            slot.dead_letter(message, was_ask=False)
            return
        try:
            frame = self.codec.encode(Tell(slot.path, body, typed))
        except FrameError as exc:
            raise ValueError(f"cannot send to {slot.path}: {exc.reason}") from None
        returnable = message if hasattr(message, "returned") else None  # returned if undeliverable
        self.transport.send(slot.node, frame, ("tell", slot.path, type(message).__name__, returnable))

    def send_ask(self, slot: RemoteSlot, message: Any, reply_to: Any, timeout: float | None) -> None:
        """Send an ask answered through `reply_to`; raises TypeError if `message` cannot
        cross nodes; fails `reply_to` with `NodeUnreachable` if the node is down."""
        body, typed = self.codec.encode_body(message)
        if not self.is_up(slot.node):
            slot.dead_letter(message, was_ask=True)
            reply_to.set_exception((NodeUnreachable, NodeUnreachable(slot.path, slot.node), None))
            return
        ref = next(self._refs)
        seconds = timeout if timeout is not None else 3600.0
        try:
            frame = self.codec.encode(Ask(slot.path, body, typed, ref, seconds))
        except FrameError as exc:
            raise ValueError(f"cannot send to {slot.path}: {exc.reason}") from None
        with self._lock:
            self._pending[ref] = _PendingAsk(reply_to, slot.node, slot.path, time.monotonic() + seconds + ASK_GRACE)
        self.transport.send(slot.node, frame, ref, direct=True)

    def _on_undeliverable(self, token: Any, reason: str) -> None:
        """The transport could not send an envelope (I/O thread)."""
        if isinstance(token, tuple) and token[0] == "child":
            with self._lock:
                child = self._children.pop(token[1], None)
            if child is not None:
                child.node_down()
            return
        if isinstance(token, int):
            with self._lock:
                pending = self._pending.pop(token, None)
            if pending is not None:
                error = (
                    NodeUnreachable(pending.path, pending.node)
                    if "down" in reason
                    else RemoteFailure(pending.path, reason)
                )
                pending.reply_to.set_exception((type(error), error, None))
        elif isinstance(token, tuple) and token[0] == "tell":
            self.system.registry.dead_letters.record(token[1], token[3], was_ask=False, type_name=token[2])
            kind = reason.split(" (", 1)[0]
            self.undeliverable[kind] += 1
            since = self._undeliverable_log.hit(kind)
            if since:
                total = sum(self.undeliverable.values())
                _log.warning("cluster.tell_undeliverable", path=token[1], reason=reason, count=total, since=since)

    # --- receiving (I/O thread) ---------------------------------------------------------

    def _on_frames(self, peer: str, frames: list[bytes]) -> None:
        self.peers[peer].last_seen = time.monotonic()  # any traffic shows the peer is alive
        codec = self.codec
        for frame in frames:
            try:
                envelope = codec.decode(frame)
                self._handle(peer, envelope)
            except FrameError as exc:
                self._rejected(peer, exc.reason)
            except Exception as exc:  # noqa: BLE001 - one bad envelope must not stop the node
                refusals.refuse(
                    "transport",
                    "failed",
                    f"{type(exc).__name__}: {exc}",
                    event="cluster.envelope_failed",
                    peer=peer,
                    exc_info=True,
                )

    def _rejected(self, peer: str, reason: str, kind: str = "malformed") -> None:
        self.rejected[peer] += 1
        refusals.refuse("transport", kind, reason, event="cluster.frame_rejected", peer=peer)

    def _handle(self, peer: str, envelope: Envelope) -> None:
        match envelope:
            case Tell():
                self._deliver_tell(peer, envelope)
            case Ask():
                self._deliver_ask(peer, envelope)
            case Reply() | Fail():
                self._complete_ask(peer, envelope)
            case Heartbeat():
                self._heard(peer, envelope)
            case Monitor(path=path, ref=ref):
                self._watch_for(peer, path, ref)
            case Demonitor(ref=ref):
                with self._lock:
                    cancel = self._in_monitors.pop((peer, ref), None)
                    if cancel is not None:
                        self._monitors_by_peer[peer] -= 1
                if cancel is not None:
                    cancel()
            case MonitorDown(ref=ref, path=path, reason=reason):
                with self._lock:
                    entry = self._out_monitors.get(ref)
                    if entry is None or entry.node != peer:
                        return
                    del self._out_monitors[ref]
                entry.deliver(Down(path, reason))
            case Spawn():
                self.host.spawn(peer, envelope)
            case Halt():
                self.host.halt(peer, envelope)
            case Spawned(urn=urn, failure=failure):
                child = self._child(peer, urn)
                if child is not None:
                    child.spawned(failure)
            case Exited(urn=urn, reason=reason):
                child = self._child(peer, urn)
                if child is not None:
                    self.forget(child)
                    child.ended(reason)

    def _local_slot(self, peer: str, path: str) -> Slot | None:
        slot = self.system.registry.lookup_local(path)
        if slot is None and self.whereis(path) != self.node:
            self._rejected(peer, f"{path} does not run on {self.node}", "misrouted")
        return slot

    def _deliver_tell(self, peer: str, envelope: Tell) -> None:
        try:
            body = self.codec.decode_body(envelope.body, envelope.typed)
        except FrameError as exc:
            self._rejected(peer, f"tell to {envelope.to}: {exc.reason}")
            return
        slot = self._local_slot(peer, envelope.to)
        if slot is None:
            self.system.registry.dead_letters.record(envelope.to, body, was_ask=False)
        else:
            slot.tell(body)

    def _deliver_ask(self, peer: str, envelope: Ask) -> None:
        reply = _RemoteReply(self, peer, envelope.ref, envelope.to)
        if not self._ask_taken(peer, envelope.ref, envelope.timeout):
            self._rejected(peer, f"more than {MAX_ASKS_PER_PEER} asks in flight", "over_limit")
            reply.fail("unavailable", f"{self.node} works on {MAX_ASKS_PER_PEER} asks from {peer} already")
            return
        try:
            body = self.codec.decode_body(envelope.body, envelope.typed)
        except FrameError as exc:
            self._rejected(peer, f"ask to {envelope.to}: {exc.reason}")
            reply.fail("undecodable", exc.reason)
            return
        slot = self._local_slot(peer, envelope.to)
        if slot is None:
            if self.directory.spec_at(envelope.to) is None:
                reply.fail("no_such_actor", f"{envelope.to} is not in the tree")
            else:
                self.system.registry.dead_letters.record(envelope.to, body, was_ask=True)
                reply.fail("unavailable", f"{envelope.to} has no live incarnation")
            return
        if not slot.deliver(body, reply):
            reply.fail("unavailable", f"{envelope.to} has no live incarnation")

    def _ask_taken(self, peer: str, ref: int, timeout: float) -> bool:
        """Count an ask from `peer` as in flight, unless it has `MAX_ASKS_PER_PEER` already
        (those past their asker's deadline are forgotten first)."""
        now = time.monotonic()
        with self._lock:
            asks = self._asks_in.setdefault(peer, {})
            if len(asks) >= MAX_ASKS_PER_PEER:
                for done in [r for r, until in asks.items() if until <= now]:
                    del asks[done]
                if len(asks) >= MAX_ASKS_PER_PEER:
                    return False
            seconds = timeout if 0 < timeout < 3600.0 else 3600.0  # NaN and nonsense alike
            asks[ref] = now + seconds + ASK_GRACE
            return True

    def ask_done(self, peer: str, ref: int) -> None:
        """Forget the ask `ref` from `peer`: it is answered and no longer counts against its limit."""
        with self._lock:
            asks = self._asks_in.get(peer)
            if asks is not None:
                asks.pop(ref, None)

    def _complete_ask(self, peer: str, envelope: Reply | Fail) -> None:
        with self._lock:
            pending = self._pending.get(envelope.ref)
            if pending is None or pending.node != peer:
                return  # late (the asker gave up), or not that peer's to answer
            del self._pending[envelope.ref]
        if isinstance(envelope, Reply):
            try:
                value = self.codec.decode_body(envelope.body, envelope.typed)
            except FrameError as exc:
                self._rejected(peer, f"reply: {exc.reason}")
                error: Exception = RemoteFailure(pending.path, f"the answer could not be decoded: {exc.reason}")
                pending.reply_to.set_exception((type(error), error, None))
                return
            pending.reply_to.set(value)
            return
        error = _error_for(envelope, pending.node)
        pending.reply_to.set_exception((type(error), error, None))

    def _watch_for(self, peer: str, path: str, ref: int) -> None:
        """A peer monitors a path that runs here (only here: nothing is forwarded). A ref the
        peer already uses is ignored; beyond `MAX_MONITORS_PER_PEER` monitors are refused."""
        with self._lock:
            if (peer, ref) in self._in_monitors:
                self._rejected(peer, f"monitor {ref} exists already", "duplicate")
                return
            if self._monitors_by_peer[peer] >= MAX_MONITORS_PER_PEER:
                self._rejected(peer, f"more than {MAX_MONITORS_PER_PEER} monitors", "over_limit")
                return
        slot = self.system.registry.lookup_local(path)
        actor = slot.actor if slot is not None else None
        if actor is None:
            self._send(peer, MonitorDown(ref, path, NoProc()))
            return

        def send_down(reason: ExitReason) -> None:
            with self._lock:
                if self._in_monitors.pop((peer, ref), None) is not None:
                    self._monitors_by_peer[peer] -= 1
            self._send(peer, MonitorDown(ref, path, reason))

        with self._lock:
            self._in_monitors[(peer, ref)] = lambda: None
            self._monitors_by_peer[peer] += 1
        cancel = actor.add_monitor(send_down)
        with self._lock:
            if (peer, ref) in self._in_monitors:
                self._in_monitors[(peer, ref)] = cancel

    def _child(self, peer: str, urn: str) -> RemoteIncarnation | None:
        with self._lock:
            child = self._children.get(urn)
        return child if child is not None and child.node == peer else None

    # --- membership (I/O thread) ----------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        beat = self._heartbeat()
        for name, peer in self.peers.items():
            self.transport.send_now(name, beat)
            if peer.up and now - peer.last_seen > self.heartbeat_timeout:
                self._node_down(name, f"silent for {now - peer.last_seen:.2f} s")
        self._expire_asks(now)

    def _heartbeat(self) -> bytes:
        owner = self.owner_token if self.directory.owner == self.node else 0
        return self.codec.encode(Heartbeat(self.node, self.boot, self.topology.cluster, next(self._seq), owner))

    def announce_owner(self, token: int) -> None:
        """This node owns the tree under lease `token` (0: it gave it up). Its peers hear it
        at once, before anything this node sends next (a heartbeat ahead of every `Spawn`)."""
        with self._lock:
            self.owner_token = token
            if token:
                self._owner_changed(self.node, token)
        beat = self._heartbeat()
        for name in self.peers:
            self.transport.send(name, beat)

    def _owner_changed(self, node: str, token: int) -> None:
        """Route the tree's unplaced paths to `node` from now on, if `token` is newer than
        the lease known here (a stale owner's claim changes nothing)."""
        with self._lock:
            before = self.directory.owner
            if not self.directory.set_owner(node, token):
                return
            lease = OwnerLease.of(self.system)
            if lease is not None:
                lease.token = token
            if before == node:
                return
            moved = [path for path in self._remote_slots if self.directory.owned(path)]
            for path in moved:
                self._remote_slots.pop(path).retired = True  # refs holding it re-resolve
            for path in [p for p in self._pool_routes if self.directory.owned(p)]:
                self._pool_routes.pop(path).retired = True
        _log.info("cluster.owner", owner=node, token=token, was=before)

    def _heard(self, peer: str, beat: Heartbeat) -> None:
        if beat.cluster != self.topology.cluster or beat.node != peer:
            self._rejected(peer, f"heartbeat for cluster {beat.cluster!r} as {beat.node!r}", "refused")
            return
        if beat.owner:
            self._owner_changed(peer, beat.owner)
        state = self.peers[peer]
        state.last_seen = time.monotonic()
        if state.boot != beat.boot:
            if state.up:
                self._node_down(peer, "restarted")
            self.host.parent_node_up(peer, beat.boot)  # forgets what the old process had started
            state.lost_children.clear()  # the new process runs nothing of ours
            state.boot = beat.boot
        if not state.up:
            self._node_up(peer)

    def _node_up(self, peer: str) -> None:
        state = self.peers[peer]
        with self._up_changed:
            state.up = True
            self._up_changed.notify_all()
        _log.info("cluster.node_up", peer=peer, boot=state.boot)
        # The same process is back (it was frozen or cut off): children it ran for us were
        # given up here; have it stop any it still runs, and tell us of those it stopped.
        for path, urn in state.lost_children:
            self._send(peer, Halt(path, urn, -1.0))
        state.lost_children.clear()
        self.host.parent_node_up(peer, state.boot)
        self._notify(NodeUp(peer))

    def _node_down(self, peer: str, why: str) -> None:
        state = self.peers[peer]
        with self._up_changed:
            state.up = False
            state.downs += 1
            self._up_changed.notify_all()
        _log.warning("cluster.node_down", peer=peer, why=why)
        self.transport.drop_backlog(peer, f"node {peer} down")
        with self._lock:
            asks = [(ref, p) for ref, p in self._pending.items() if p.node == peer]
            for ref, _ in asks:
                del self._pending[ref]
            children = [c for c in self._children.values() if c.node == peer]
            for child in children:
                del self._children[child.actor_urn]
            monitors = [(ref, m) for ref, m in self._out_monitors.items() if m.node == peer]
            for ref, _ in monitors:
                del self._out_monitors[ref]
            inbound = [key for key in self._in_monitors if key[0] == peer]
            cancels = [self._in_monitors.pop(key) for key in inbound]
            self._monitors_by_peer.pop(peer, None)
            self._asks_in[peer] = {}
        state.lost_children = [(c.path, c.actor_urn) for c in children]
        for _, pending in asks:
            _guarded(pending.reply_to.set_exception, (NodeUnreachable, NodeUnreachable(pending.path, peer), None))
        for child in children:
            _guarded(child.node_down)
        for _, entry in monitors:
            _guarded(entry.deliver, Down(entry.path, NodeDown(peer)))
        for cancel in cancels:
            _guarded(cancel)
        self.host.parent_node_down(peer, state.boot)
        self._notify(NodeDown(peer))

    def _notify(self, event: Any) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001
                _log.exception("cluster.listener_failed")

    def _expire_asks(self, now: float) -> None:
        with self._lock:
            for asks in self._asks_in.values():
                if len(asks) > MAX_ASKS_PER_PEER // 2:  # the rest are dropped when answered
                    for done in [r for r, until in asks.items() if until <= now]:
                        del asks[done]
            expired = [ref for ref, p in self._pending.items() if p.expires <= now]
            gone = [self._pending.pop(ref) for ref in expired]
        for pending in gone:
            error = AskTimeout(pending.path, pending.expires - now)
            pending.reply_to.set_exception((AskTimeout, error, None))


def _guarded(call: Callable[..., Any], *args: Any) -> None:
    """Run a callback from the I/O thread; a bug in it must not stop the node."""
    try:
        call(*args)
    except Exception:  # noqa: BLE001
        _log.exception("cluster.callback_failed")


def _error_for(fail: Fail, node: str) -> Exception:
    if fail.kind == "crashed" and fail.crash is not None:
        return ActorCrashed(fail.path, fail.crash)
    if fail.kind == "unavailable":
        return Unavailable(fail.path)
    if fail.kind == "no_such_actor":
        return NoSuchActor(fail.path)
    if fail.kind == "node_down":
        return NodeUnreachable(fail.path, node)
    return RemoteFailure(fail.path, f"{fail.kind}: {fail.detail}")
