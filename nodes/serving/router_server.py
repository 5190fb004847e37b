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

A CURVE endpoint admits only the keys its context's ZAP authenticator lets in; the server
starts and stops that authenticator with itself. An ``ipc://`` endpoint is the server's own
file: one left by a killed process is replaced, the new one is made 0600 (its user only), and
it is removed when the server stops.
"""

from __future__ import annotations

import os
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


class RouterServer:
    """Serves ROUTER sockets on one thread, answering each request with `answer`."""

    def __init__(
        self,
        name: str,
        context: zmq.Context,
        endpoints: Sequence[Endpoint],
        answer: Callable[[zmq.Frame, int], bytes],
        *,
        max_request_bytes: int,
        listening_for: str,
        queued: int | None = None,
        authenticator: Authenticator | None = None,
        on_give_up: Callable[[str], None] = _no_give_up,
    ) -> None:
        """`name` names the thread, the refusals and the guard. `context` becomes the
        server's: `close` ends it. `answer(frame, index)` gets a request frame and the index
        of the endpoint it came in on, and returns the answer frame; what it raises counts as
        a failure of the loop. `listening_for` says who connects, for the error when an
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
        try:
            while not self._closing.is_set():
                try:
                    for socket, _ in poller.poll(POLL_MS):
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
        try:
            socket.send_multipart([parts[0], answer], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the client left; it asks again if it still wants the answer
        self.served += 1


def _ipc_path(address: str) -> str | None:
    """The socket file of an ``ipc://`` address, or None."""
    return address.removeprefix("ipc://") if address.startswith("ipc://") else None
