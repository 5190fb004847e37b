"""The serving thread of a ROUTER socket: one request frame in, one answer frame out.

The intake and the shell listener are each a `RouterServer` with its own `answer`. It binds
its endpoints on a thread of its own (`start` raises `OSError` if one cannot be bound) and
polls them: a request is the client's routing id and one frame, which `answer` turns into the
bytes sent back (dropped if the client left: it asks again). A message of any other shape is
refused (`flotilla.nodes.serving.refusals`, reason ``malformed``, logged as
``<name>.bad_request``). Every socket drops what it cannot deliver at close (LINGER 0),
disconnects a peer whose message exceeds `max_request_bytes` (MAXMSGSIZE) and fails a send
to a client that is gone (ROUTER_MANDATORY). A failure of the loop itself restarts it, or
stops the node if it keeps failing (`flotilla.nodes.serving.guard`).

An answer that takes time (an ask of an actor that may be slow) need not hold the thread:
`answer` returns a `Later` instead of the bytes, hands the work to another thread, and that
thread calls `Later.send(frame)`; the serving thread sends it (woken at once) and meanwhile
goes on answering every other request.

A CURVE endpoint admits only the keys its context's ZAP authenticator lets in; the server
starts and stops that authenticator with itself. An ``ipc://`` endpoint is the server's own
file: one left by a killed process is replaced, the new one is made 0600 (its user only), and
it is removed when the server stops.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import zmq

from flotilla.nodes.security.keys import ZAP_DOMAIN, CurveKeys
from flotilla.nodes.serving.guard import ServingGuard
from flotilla.nodes.serving.refusals import refusals

POLL_MS = 200
"""How often the loop looks up from its sockets to see whether it should stop."""
JOIN_TIMEOUT = 5.0
"""Seconds `close` waits for a request in progress before abandoning the thread."""


class Authenticator(Protocol):
    """A ZAP handler on the server's context (it must stop before the context ends)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """An address to serve; with `curve`, a CURVE server with that key pair (ZAP decides who
    gets in)."""

    address: str
    curve: CurveKeys | None = None


def _no_give_up(_reason: str) -> None:
    return None


class Later:
    """The answer to one request, sent when it is ready: an `answer` function returns one
    and something on another thread calls `send(frame)` once (from any thread)."""

    __slots__ = ("_lock", "_frame", "_deliver")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: bytes | None = None
        self._deliver: Callable[[bytes], None] | None = None

    def send(self, frame: bytes) -> None:
        """The answer is `frame`: the server sends it to the client that asked."""
        with self._lock:
            deliver = self._deliver
            if deliver is None:
                self._frame = frame  # ready before the server took it: sent once it does
                return
        deliver(frame)

    def bind(self, deliver: Callable[[bytes], None]) -> None:
        """Send the answer with `deliver` (the server calls this once; at once if it is ready)."""
        with self._lock:
            self._deliver, frame = deliver, self._frame
        if frame is not None:
            deliver(frame)


class RouterServer:
    """Serves ROUTER sockets on one thread, answering each request with `answer`."""

    def __init__(
        self,
        name: str,
        context: zmq.Context,
        endpoints: Sequence[Endpoint],
        answer: Callable[[zmq.Frame, int], bytes | Later],
        *,
        max_request_bytes: int,
        listening_for: str,
        queued: int | None = None,
        authenticator: Authenticator | None = None,
        on_give_up: Callable[[str], None] = _no_give_up,
    ) -> None:
        """`name` names the thread, the refusals and the guard. `context` becomes the
        server's: `close` ends it. `answer(frame, index)` gets a request frame and the index
        of the endpoint it came in on, and returns the answer frame (or a `Later` that gets
        it); what it raises counts as a failure of the loop. `listening_for` says who connects, for the error when an
        endpoint cannot be bound ("cannot listen for clients on ..."). `queued`: requests a
        socket holds before it drops new ones (ZeroMQ's default when None)."""
        self.name = name
        self.context = context
        self.endpoints = list(endpoints)
        self.answer = answer
        self.max_request_bytes = max_request_bytes
        self.listening_for = listening_for
        self.queued = queued
        self.authenticator = authenticator
        self.guard = ServingGuard(name, on_give_up)
        self.served = 0
        """Requests answered so far."""
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._later: queue.SimpleQueue[tuple[int, bytes, bytes]] = queue.SimpleQueue()
        """Answers sent through a `Later`: (endpoint index, client's routing id, frame)."""
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def start(self) -> None:
        """Start the authenticator and the thread, and return once the endpoints are bound.
        Raises `OSError` (the server closed) if one cannot be bound."""
        if self.authenticator is not None:
            self.authenticator.start()
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self.close()
            raise self._error

    def close(self) -> None:
        """Stop serving. A request still running (a hung ask, a long eval) does not hold the
        node's stop: after `JOIN_TIMEOUT` its thread is abandoned and the context destroyed."""
        self._closing.set()
        self._thread.join(JOIN_TIMEOUT)
        if self.authenticator is not None:
            self.authenticator.stop()
        if self._thread.is_alive():
            self.context.destroy(linger=0)
        else:
            self.context.term()
            if self._wake_fd >= 0:  # (an abandoned thread may still poll it: then it stays open)
                os.close(self._wake_fd)
                self._wake_fd = -1

    def _run(self) -> None:
        sockets: list[zmq.Socket] = []
        try:
            for endpoint in self.endpoints:
                sockets.append(self._bind(endpoint))
        except (zmq.ZMQError, OSError) as exc:
            self._error = OSError(f"cannot listen for {self.listening_for} on {endpoint.address}: {exc}")
            self._ready.set()
            self._close(sockets)
            return
        self._ready.set()
        poller = zmq.Poller()
        for socket in sockets:
            poller.register(socket, zmq.POLLIN)
        poller.register(self._wake_fd, zmq.POLLIN)
        try:
            while not self._closing.is_set():
                try:
                    for socket, _ in poller.poll(POLL_MS):
                        if socket == self._wake_fd:
                            self._send_later(sockets)
                        else:
                            self._serve_one(socket, sockets.index(socket))
                except Exception:  # noqa: BLE001 - restarted, or the node stops (flotilla.nodes.serving.guard)
                    if not self.guard.failed():
                        return
        finally:
            self._close(sockets)

    def _bind(self, endpoint: Endpoint) -> zmq.Socket:
        socket = self.context.socket(zmq.ROUTER)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.MAXMSGSIZE, self.max_request_bytes)
            if self.queued is not None:
                socket.setsockopt(zmq.RCVHWM, self.queued)
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            if endpoint.curve is not None:
                socket.curve_server = True
                socket.curve_secretkey = endpoint.curve.secret
                socket.curve_publickey = endpoint.curve.public
                socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
            path = _ipc_path(endpoint.address)
            if path is not None and os.path.exists(path):
                os.unlink(path)  # left by a process that was killed
            socket.bind(endpoint.address)  # ipc: in a 0700 directory, nobody else reaches it before the chmod
            if path is not None:
                os.chmod(path, 0o600)
        except BaseException:
            socket.close()
            raise
        return socket

    def _close(self, sockets: list[zmq.Socket]) -> None:
        for socket in sockets:
            socket.close()
        for endpoint in self.endpoints[: len(sockets)]:
            path = _ipc_path(endpoint.address)
            if path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _serve_one(self, socket: zmq.Socket, index: int) -> None:
        parts = socket.recv_multipart(copy=False)
        if len(parts) != 2:
            refusals.refuse(
                self.name,
                "malformed",
                f"a request is one frame, not {len(parts) - 1}",
                event=f"{self.name}.bad_request",
            )
            return
        answer = self.answer(parts[1], index)
        if isinstance(answer, Later):
            routing_id = parts[0].bytes
            answer.bind(lambda frame: self._post(index, routing_id, frame))
            return
        self._send(socket, parts[0].bytes, answer)

    def _send(self, socket: zmq.Socket, routing_id: bytes, answer: bytes) -> None:
        try:
            socket.send_multipart([routing_id, answer], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the client left; it asks again if it still wants the answer
        self.served += 1

    def _post(self, index: int, routing_id: bytes, answer: bytes) -> None:
        """Queue an answer that came later for the serving thread (any thread)."""
        if self._closing.is_set():
            return
        self._later.put((index, routing_id, answer))
        try:
            os.eventfd_write(self._wake_fd, 1)
        except (OSError, ValueError):
            pass  # closed meanwhile: the server stops, the answer with it

    def _send_later(self, sockets: list[zmq.Socket]) -> None:
        """Send the answers that came later (serving thread)."""
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass
        while True:
            try:
                index, routing_id, answer = self._later.get_nowait()
            except queue.Empty:
                return
            self._send(sockets[index], routing_id, answer)


def _ipc_path(address: str) -> str | None:
    """The socket file of an ``ipc://`` address, or None."""
    return address.removeprefix("ipc://") if address.startswith("ipc://") else None
