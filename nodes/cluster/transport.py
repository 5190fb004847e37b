"""The node-to-node transport: one I/O thread owns every ZeroMQ socket of the node.

* Inbound: one ROUTER bound at the node's address (ROUTER_MANDATORY on; it only receives).
  With keys (the default) it is a CURVE server behind the cluster's ZAP allowlist, and a
  peer's identity is its ZAP User-Id; in plaintext it is the name in the routing id,
  checked against the topology's node names. A peer's routing id is ``<node>/<boot id>``,
  new for every process, and ROUTER_HANDOVER is off: a connection can never take over
  another's pipe (a claim of a live peer's id is ignored by ZeroMQ, a claim that does not
  match the peer's key is refused here). ZMTP pings clear the pipes of connections that
  died without a word (`STALE_CONNECTION`).
* Outbound: one DEALER per peer, connected to the peer's ROUTER with IMMEDIATE, so a send
  never queues on a connection that is not up: it fails at once (EAGAIN), never silently.
* Threads that send (actors, the supervisor) put `(peer, frame, token)` on a queue and
  wake the I/O thread through an eventfd; the I/O thread sends each peer's frames in order
  as one multipart message of up to `BATCH_FRAMES` frames (one envelope per frame), never
  blocking. An ask and its answer take the direct path instead: when no frame for that
  peer waits, the sending thread writes the frame to the peer's DEALER itself (no hand-off
  to the I/O thread); if one waits, or the peer is not connected or its queue is full, the
  frame queues like any other. Each DEALER has a lock that whoever writes to it holds, and
  the I/O thread polls a DEALER only while frames for its peer wait, when no other thread
  writes to it. Frames to one peer leave in the order they were given. A peer whose queue
  is full keeps a bounded backlog; whatever cannot be sent — peer down, backlog full, too
  large — is handed back through `on_undeliverable(token, reason)`.
* Every `tick` seconds the I/O thread calls `on_tick()` (heartbeats and failure detection
  live there, in the same thread, so a busy actor can never delay them).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
import zmq
from zmq.utils.monitor import recv_monitor_message

from flotilla.nodes.security.auth_failures import AuthFailures
from flotilla.nodes.security.keys import ZAP_DOMAIN, ClusterAuthenticator, CurveKeys
from flotilla.nodes.serving.guard import ServingGuard
from flotilla.nodes.serving.refusals import refusals

BATCH_FRAMES = 512
"""Most envelopes sent to one peer in one multipart message."""
BATCH_BYTES = 256 * 1024
"""Most bytes sent to one peer in one multipart message."""
RECV_BUDGET = 4096
"""Most inbound envelopes handled before the I/O thread looks at its outbox and clock again."""
SEND_TIMEOUT = 5.0
"""Seconds a sender waits for room when a peer's backlog is full before its send fails."""
MAX_BACKLOG_BYTES = 256 * 1024 * 1024
"""Most bytes of envelopes waiting for one peer in the node's own backlog (as well as
`backlog` envelopes): past it an envelope fails as "backlog full"."""
RECEIVE_QUEUE_BYTES = 256 * 1024 * 1024
"""About the most bytes ZeroMQ queues from one peer before the I/O thread reads them: the
receiving socket's RCVHWM is this divided by `max_message_bytes` (at most `high_water_mark`,
at least 16), as a peer's batch is at most `BATCH_BYTES` plus one envelope."""
PING_INTERVAL = 2.0
"""Seconds between the ZMTP pings the listening socket sends on every connection."""
STALE_CONNECTION = 30.0
"""Seconds without any traffic after which the listening socket drops a connection (a peer
whose host died, or a half-open TCP connection); a live peer reconnects at once."""

_POLLIN = int(zmq.POLLIN)
"""As a plain int: `&` with pyzmq's enum flag runs Python code on every received message."""

FramesHandler = Callable[[str, list[bytes]], None]
UndeliverableHandler = Callable[[Any, str], None]

_log = structlog.get_logger("flotilla.transport")


@dataclass
class TransportStats:
    """Counters kept by the I/O thread (read them from any thread)."""

    sent_frames: Counter[str] = field(default_factory=Counter)
    sent_bytes: Counter[str] = field(default_factory=Counter)
    received_frames: Counter[str] = field(default_factory=Counter)
    received_bytes: Counter[str] = field(default_factory=Counter)
    undeliverable: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)


class Transport:
    """The sockets of one node and the thread that owns them."""

    def __init__(
        self,
        *,
        node: str,
        address: str,
        peers: dict[str, str],
        max_message_bytes: int,
        high_water_mark: int,
        backlog: int,
        tick: float,
        on_frames: FramesHandler,
        on_undeliverable: UndeliverableHandler,
        on_tick: Callable[[], None],
        keys: CurveKeys | None = None,
        on_give_up: Callable[[str], None] = lambda _reason: None,
        boot: str = "",
    ) -> None:
        """`on_give_up(reason)` is called if the I/O loop keeps failing (`flotilla.nodes.serving.guard`)."""
        self.node = node
        self.routing_id = f"{node}/{boot}".encode()
        self.address = address
        self.peers = dict(peers)
        self.max_message_bytes = max_message_bytes
        self.high_water_mark = high_water_mark
        self.backlog_limit = backlog
        self.tick = tick
        self.keys = keys
        self.stats = TransportStats()
        self.auth_failures = AuthFailures("node", event="transport.key_rejected")
        self._on_frames = on_frames
        self._on_undeliverable = on_undeliverable
        self._on_tick = on_tick
        self._outbox: queue.SimpleQueue[tuple[str, bytes, Any]] = queue.SimpleQueue()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._sleeping = False
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._backlogs: dict[str, deque[tuple[bytes, Any]]] = {name: deque() for name in peers}
        self._backlog_bytes = dict.fromkeys(peers, 0)
        # Flow control: senders take tickets, the I/O thread counts what it has handled;
        # a sender more than `backlog` ahead of the I/O thread waits for room.
        self._tickets = {name: itertools.count() for name in peers}
        self._handled = dict.fromkeys(peers, 0)
        # The direct path: a DEALER may be written by the sending thread (holding the peer's
        # lock) while `_queued[peer]` (frames in the outbox or the backlog) is 0.
        self._locks = {name: threading.Lock() for name in peers}
        self._queued = dict.fromkeys(peers, 0)
        self._direct: dict[str, zmq.Socket] = {}
        self._waiting_out: set[str] = set()
        """Peers whose DEALER the I/O thread polls for room (their frames wait)."""
        self._room = threading.Condition()
        self._room_waiters = 0
        self._thread = threading.Thread(target=self._run, name=f"transport {node}", daemon=True)
        self._context = zmq.Context()
        self._context.linger = 0
        self._authenticator: ClusterAuthenticator | None = None
        self.guard = ServingGuard("transport", on_give_up)

    # --- any thread ---------------------------------------------------------------------

    def start(self) -> None:
        """Bind, connect to every peer and start the I/O thread; raise if binding fails."""
        if self.keys is not None:
            self._authenticator = ClusterAuthenticator(self._context, self.keys, self.auth_failures.record)
            self._authenticator.start()
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def send(self, peer: str, frame: bytes, token: Any = None, *, direct: bool = False) -> None:
        """Queue `frame` for `peer`; if it cannot be delivered, `on_undeliverable(token,
        reason)` is called later in the I/O thread (for tokens that are not None).

        `direct` (for asks and their answers, where latency matters more than batching):
        when no frame for `peer` waits, write it to the peer's socket from this thread.

        When `backlog` envelopes for `peer` are already waiting, the caller waits (up to
        `SEND_TIMEOUT`) for the I/O thread to make room: backpressure, not loss. The I/O
        thread itself never waits."""
        if self._closing.is_set():
            return
        lock = self._locks.get(peer)
        if lock is not None:
            with lock:
                if direct and self._queued[peer] == 0 and len(frame) <= self.max_message_bytes:
                    dealer = self._direct.get(peer)
                    if dealer is not None:
                        try:
                            dealer.send(frame, zmq.NOBLOCK)
                        except zmq.Again:
                            pass  # not connected, or its queue is full: the I/O thread keeps it
                        else:
                            self.stats.sent_frames[peer] += 1
                            self.stats.sent_bytes[peer] += len(frame)
                            return
                self._queued[peer] += 1  # from now on, later frames queue behind this one
        tickets = self._tickets.get(peer)
        if tickets is not None:
            ticket = next(tickets)
            if ticket - self._handled[peer] >= self.backlog_limit and threading.get_ident() != self._thread.ident:
                self._wait_for_room(peer, ticket)
        self._outbox.put((peer, frame, token))
        if self._sleeping:
            self._sleeping = False
            os.eventfd_write(self._wake_fd, 1)

    def _wait_for_room(self, peer: str, ticket: int) -> None:
        deadline = time.monotonic() + SEND_TIMEOUT
        with self._room:
            self._room_waiters += 1
            try:
                while ticket - self._handled[peer] >= self.backlog_limit and not self._closing.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return  # the I/O thread will fail it as "backlog full"
                    self._room.wait(remaining)
            finally:
                self._room_waiters -= 1

    def close(self, timeout: float = 2.0) -> None:
        """Stop the I/O thread and close every socket (pending frames are dropped)."""
        self._closing.set()
        os.eventfd_write(self._wake_fd, 1)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.term()
        os.close(self._wake_fd)

    # --- the I/O thread -----------------------------------------------------------------

    def _socket_options(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        sock.setsockopt(zmq.SNDHWM, self.high_water_mark)
        sock.setsockopt(zmq.RCVHWM, self.high_water_mark)

    def _open(self) -> tuple[zmq.Socket, dict[str, zmq.Socket]]:
        router = self._context.socket(zmq.ROUTER)
        self._socket_options(router)
        router.setsockopt(zmq.RCVHWM, max(16, min(self.high_water_mark, RECEIVE_QUEUE_BYTES // self.max_message_bytes)))
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.HEARTBEAT_IVL, int(PING_INTERVAL * 1000))
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(STALE_CONNECTION * 1000))
        if self.keys is not None:
            router.curve_server = True
            router.curve_secretkey = self.keys.secret
            router.curve_publickey = self.keys.public
            router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        router.bind(self.address)
        if self.keys is not None:  # handshakes that are not CURVE at all never reach the ZAP handler
            self._monitor = router.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            )
        dealers = {}
        for name, address in self.peers.items():
            dealer = self._context.socket(zmq.DEALER)
            self._socket_options(dealer)
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            dealer.setsockopt(zmq.ROUTING_ID, self.routing_id)
            dealer.setsockopt(zmq.RECONNECT_IVL, 100)
            dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            if self.keys is not None:
                dealer.curve_secretkey = self.keys.secret
                dealer.curve_publickey = self.keys.public
                dealer.curve_serverkey = self.keys.peers[name]
            dealer.connect(address)
            dealers[name] = dealer
        return router, dealers

    def _run(self) -> None:
        try:
            router, dealers = self._open()
        except zmq.ZMQError as exc:
            self._startup_error = OSError(f"cannot listen on {self.address}: {exc}")
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._wake_fd, zmq.POLLIN)
        waiting_out = self._waiting_out
        self._poller = poller
        self._dealers = dealers
        for peer, dealer in dealers.items():
            with self._locks[peer]:
                self._direct[peer] = dealer
        next_tick = time.monotonic()  # the first heartbeats go out at once
        try:
            while not self._closing.is_set():
                try:
                    while not self._closing.is_set():
                        self._sleeping = True
                        if not self._outbox.empty():
                            self._sleeping = False
                        timeout_ms = max(0.0, (next_tick - time.monotonic()) * 1000) if self._sleeping else 0
                        events = dict(poller.poll(int(timeout_ms)))
                        self._sleeping = False
                        if self._wake_fd in events:
                            try:
                                os.eventfd_read(self._wake_fd)
                            except BlockingIOError:
                                pass
                        if self._monitor is not None and self._monitor in events:
                            self._count_failed_handshakes(self._monitor)
                        if router in events:
                            self._receive(router)
                        self._take_outbox()
                        for peer, dealer in dealers.items():
                            if not self._backlogs[peer] and peer not in waiting_out:
                                continue
                            if self._backlogs[peer]:
                                self._flush(peer, dealer)
                            blocked = bool(self._backlogs[peer])
                            if blocked and peer not in waiting_out:
                                poller.register(dealer, zmq.POLLIN | zmq.POLLOUT)
                                waiting_out.add(peer)
                            elif not blocked and peer in waiting_out:
                                poller.unregister(dealer)
                                waiting_out.discard(peer)
                        if self._room_waiters:
                            with self._room:
                                self._room.notify_all()
                        if time.monotonic() >= next_tick:
                            next_tick = time.monotonic() + self.tick
                            try:
                                self._on_tick()
                                self.auth_failures.flush()
                            except Exception:  # noqa: BLE001 - a bug in a tick must not silence the node
                                _log.exception("transport.tick_failed")
                except Exception:  # noqa: BLE001 - restarted, or the node stops (flotilla.nodes.serving.guard)
                    if not self.guard.failed():
                        return
        finally:
            for peer in dealers:
                with self._locks[peer]:
                    self._direct.pop(peer, None)
            if self._monitor is not None:
                router.disable_monitor()
                self._monitor.close(0)
            for sock in (router, *dealers.values()):
                sock.close(0)

    def _receive(self, router: zmq.Socket) -> None:
        # Frames are copied (faster for small messages) unless the User-Id of a CURVE peer
        # has to be read from them.
        copy = self.keys is None
        budget = RECV_BUDGET
        while budget > 0 and cast(int, router.getsockopt(zmq.EVENTS)) & _POLLIN:
            try:
                parts = router.recv_multipart(zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                return
            budget -= max(1, len(parts) - 1)
            if len(parts) < 2:
                continue
            if copy:
                copied = cast("list[bytes]", parts)
                peer = self._identify_by_routing_id(copied[0], copied[1])
                frames = copied[1:]
            else:
                zero_copy = cast("list[zmq.Frame]", parts)
                peer = self._identify(zero_copy)
                frames = [part.bytes for part in zero_copy[1:]]
            if peer is None:
                continue
            self.stats.received_frames[peer] += len(frames)
            self.stats.received_bytes[peer] += sum(len(f) for f in frames)
            self._on_frames(peer, frames)

    _monitor: zmq.Socket | None = None

    def _count_failed_handshakes(self, monitor: zmq.Socket) -> None:
        """A client that is not CURVE (or breaks the handshake): ZeroMQ tells neither its key
        nor its address, but it is a failed authentication all the same."""
        while True:
            try:
                recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.auth_failures.record("none (not a CURVE handshake)", "")

    def _identify(self, parts: list[zmq.Frame]) -> str | None:
        """With CURVE: the ZAP User-Id (the node name our allowlist gave the key); a routing
        id claiming another node is refused."""
        routing_id = parts[0].bytes.decode("utf-8", "replace")
        claimed = routing_id.split("/", 1)[0]
        user = parts[1].get("User-Id")
        if user != claimed or user not in self.peers:
            self._reject(routing_id, "routing id does not match the peer's key", f"key of {user}")
            return None
        return user

    def _identify_by_routing_id(self, routing_id: bytes, _first: bytes) -> str | None:
        """In plaintext: the node named by the routing id, which must be one of the topology."""
        claimed = routing_id.decode("utf-8", "replace").split("/", 1)[0]
        if claimed not in self.peers:
            self._reject(claimed, "not a node of this topology", None)
            return None
        return claimed

    def _reject(self, who: str, reason: str, detail: str | None) -> None:
        self.stats.rejected[reason] += 1
        refusals.refuse(
            "transport",
            "unknown_peer",
            reason + (f" ({detail})" if detail else ""),
            event="transport.peer_rejected",
            peer=who[:64],
        )

    def _take_outbox(self) -> None:
        outbox = self._outbox
        while not outbox.empty():
            try:
                peer, frame, token = outbox.get_nowait()
            except queue.Empty:
                return
            backlog = self._backlogs.get(peer)
            if backlog is None:
                self._fail(token, f"unknown node {peer}")
            elif len(frame) > self.max_message_bytes:
                self._handled[peer] += 1
                self._unqueue(peer, 1)
                self._fail(token, f"message of {len(frame)} bytes exceeds {self.max_message_bytes}")
            elif len(backlog) >= max(self.backlog_limit, BATCH_FRAMES) * 2:
                self._handled[peer] += 1
                self._unqueue(peer, 1)
                self._fail(token, f"backlog to {peer} is full ({len(backlog)} envelopes)")
            elif self._backlog_bytes[peer] + len(frame) > MAX_BACKLOG_BYTES:
                self._handled[peer] += 1
                self._unqueue(peer, 1)
                self._fail(token, f"backlog to {peer} is full ({self._backlog_bytes[peer]} bytes)")
            else:
                backlog.append((frame, token))
                self._backlog_bytes[peer] += len(frame)

    def _unqueue(self, peer: str, count: int) -> None:
        """`count` frames of `peer` left the outbox or the backlog (sent or failed)."""
        with self._locks[peer]:
            self._queued[peer] -= count

    def _flush(self, peer: str, dealer: zmq.Socket) -> None:
        backlog = self._backlogs[peer]
        while backlog:
            frames: list[bytes] = []
            size = 0
            for frame, _ in backlog:
                if frames and (len(frames) >= BATCH_FRAMES or size + len(frame) > BATCH_BYTES):
                    break
                frames.append(frame)
                size += len(frame)
            with self._locks[peer]:
                try:
                    dealer.send_multipart(frames, zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    return  # not connected, or its queue is full: keep the backlog
                self._queued[peer] -= len(frames)
                self.stats.sent_frames[peer] += len(frames)
                self.stats.sent_bytes[peer] += size
            for _ in frames:
                backlog.popleft()
            self._backlog_bytes[peer] -= size
            self._handled[peer] += len(frames)

    def send_now(self, peer: str, frame: bytes) -> bool:
        """Send a frame that may be lost (a heartbeat) at once, unless envelopes for `peer`
        are already waiting or its queue is full (I/O thread only: from `on_tick`)."""
        dealer = self._dealers.get(peer)
        if dealer is None or self._backlogs[peer]:
            return False
        with self._locks[peer]:
            try:
                dealer.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return False
        return True

    _dealers: dict[str, zmq.Socket] = {}
    _poller: zmq.Poller | None = None

    def drop_backlog(self, peer: str, reason: str) -> int:
        """Fail every envelope waiting for `peer` (I/O thread only: from `on_tick`)."""
        backlog = self._backlogs.get(peer)
        if not backlog:
            return 0
        dropped = len(backlog)
        self._backlog_bytes[peer] = 0
        if peer in self._waiting_out and self._poller is not None:
            # Polled no more before other threads may write to it again (the direct path).
            self._poller.unregister(self._dealers[peer])
            self._waiting_out.discard(peer)
        failed = list(backlog)
        backlog.clear()
        self._handled[peer] += dropped
        self._unqueue(peer, dropped)
        for _, token in failed:
            self._fail(token, reason)
        return dropped

    def _fail(self, token: Any, reason: str) -> None:
        self.stats.undeliverable[reason.split(" ", 1)[0]] += 1
        if token is not None:
            try:
                self._on_undeliverable(token, reason)
            except Exception:  # noqa: BLE001
                _log.exception("transport.undeliverable_handler_failed")
