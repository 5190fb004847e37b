"""A node's shell listener: a ZeroMQ ROUTER on an IPC socket in the node's data directory.

Only the user the node runs as can reach it: the data directory is made 0700 and the socket
file 0600, so the operator's identity is that local user (``local:<user>``). When the
topology gives the node a `shell:` TCP address, a second ROUTER listens there with CURVE:
only the keys of the topology's `operators` get through (ZAP), and the operator's identity
is the name of the key (``key:<name>``), never anything the client claims. Requests are
typed (`flotilla.nodes.shell.protocol`); each is served on the listener's own thread and written to
the node's audit log (``<data_dir>/<node>/audit.log``, JSON lines: time, operator, command,
arguments, outcome) before it runs (`started`) and after (`done` or `failed`). A bad frame
gets an error answer, never a crash; leaving the shell never stops the node.
"""

from __future__ import annotations

import getpass
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import zmq

from flotilla.nodes.security.audit import audit_entry
from flotilla.nodes.security.keys import ZAP_DOMAIN, ClusterAuthenticator, CurveKeys
from flotilla.nodes.serving.guard import ServingGuard
from flotilla.nodes.serving.refusals import refusals
from flotilla.nodes.serving.request_id import request_id
from flotilla.nodes.shell.commands import CommandError, ShellCommands
from flotilla.nodes.shell.protocol import MAX_REQUEST_BYTES, ShellAnswer, encoder, request_decoder, shell_address

if TYPE_CHECKING:
    from flotilla.nodes.runtime.node import NodeRun

_log = structlog.get_logger("flotilla.shell")


class ShellServer:
    """Serves shell requests for one node on a thread of its own."""

    def __init__(
        self,
        run: NodeRun,
        node_dir: Path,
        tcp: str | None = None,
        keys: CurveKeys | None = None,
        on_give_up: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        """`tcp` and `keys` (this node's key pair; its `peers` are the operators' public
        keys by name) open the TCP listener; the topology allows one only with both.
        `on_give_up(reason)` is called if the serving loop keeps failing (`flotilla.nodes.serving.guard`)."""
        if tcp is not None and (keys is None or not keys.peers):
            raise ValueError("a TCP shell needs CURVE keys and at least one operator key")
        self.tcp = tcp
        self.keys = keys
        self.rejected = 0
        self.commands = ShellCommands(run)
        self.node = run.node
        self.node_dir = node_dir
        self.address = shell_address(node_dir)
        self.audit_path = node_dir / "audit.log"
        self.operator = f"local:{getpass.getuser()}"
        self._context = zmq.Context()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shell", daemon=True)
        self.served = 0
        self.guard = ServingGuard("shell", on_give_up)

    def start(self) -> None:
        self.node_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.node_dir, 0o700)
        if self.tcp is not None:
            self._authenticator = ClusterAuthenticator(self._context, self.keys, self._rejected)  # type: ignore[arg-type]
            self._authenticator.start()
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self.close()
            raise self._error

    def close(self) -> None:
        """Stop listening. A command still running (a hung ask, a long eval) does not hold
        the node's stop: its thread is abandoned and the context destroyed."""
        self._closing.set()
        self._thread.join(5)
        if self.tcp is not None:
            self._authenticator.stop()
        if self._thread.is_alive():
            self._context.destroy(linger=0)
        else:
            self._context.term()

    def _rejected(self, key: str, address: str) -> None:
        self.rejected += 1  # a key-spraying client cannot flood the log: one line per interval
        refusals.refuse(
            "shell",
            "unknown_key",
            "an operator key not in the topology",
            event="shell.operator_rejected",
            key=key,
            address=address,
        )

    def _listeners(self) -> list[zmq.Socket]:
        """The IPC socket (only this user), and the CURVE TCP socket if configured."""
        ipc = self._socket()
        path = self.address.removeprefix("ipc://")
        if os.path.exists(path):
            os.unlink(path)  # left by a node that was killed
        ipc.bind(self.address)  # in a 0700 directory: nobody else can reach it even before the chmod
        os.chmod(path, 0o600)
        if self.tcp is None:
            return [ipc]
        tcp = self._socket()
        tcp.curve_server = True
        tcp.curve_secretkey = self.keys.secret  # type: ignore[union-attr]
        tcp.curve_publickey = self.keys.public  # type: ignore[union-attr]
        tcp.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        tcp.bind(self.tcp)
        return [ipc, tcp]

    def _socket(self) -> zmq.Socket:
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        return socket

    def _run(self) -> None:
        try:
            sockets = self._listeners()
        except (zmq.ZMQError, OSError) as exc:
            self._error = OSError(f"cannot listen for shells on {self.tcp or self.address}: {exc}")
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        for socket in sockets:
            poller.register(socket, zmq.POLLIN)
        try:
            while not self._closing.is_set():
                try:
                    for socket, _ in poller.poll(200):
                        self._serve_one(socket, socket is sockets[0])
                except Exception:  # noqa: BLE001 - restarted, or the node stops (flotilla.nodes.serving.guard)
                    if not self.guard.failed():
                        return
        finally:
            for socket in sockets:
                socket.close()
            try:
                os.unlink(self.address.removeprefix("ipc://"))
            except OSError:
                pass

    def _serve_one(self, socket: zmq.Socket, local: bool) -> None:
        parts = socket.recv_multipart(copy=False)
        if len(parts) != 2:
            refusals.refuse(
                "shell", "malformed", f"a request is one frame, not {len(parts) - 1}", event="shell.bad_request"
            )
            return
        operator = self.operator if local else f"key:{parts[1].get('User-Id')}"
        try:
            answer = self.handle(parts[1].bytes, operator)
        except Exception as exc:  # noqa: BLE001 - answered, never the end of the listener
            refusals.refuse(
                "shell", "failed", f"{type(exc).__name__}: {exc}", event="shell.request_failed", exc_info=True
            )
            answer = ShellAnswer(0, False, error=f"{type(exc).__name__}: {exc}"[:500])
        try:
            socket.send_multipart([parts[0], _encode(answer)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the shell left
        self.served += 1

    def handle(self, frame: bytes, operator: str = "") -> ShellAnswer:
        """The answer to one request frame from `operator`. Each command is audited before it
        runs (so a command that hangs is on record) and again with its outcome; a command that
        cannot be audited is refused. A request its client stopped waiting for is dropped."""
        operator = operator or self.operator
        try:
            request = request_decoder.decode(frame)
        except Exception as exc:  # noqa: BLE001 - msgspec's DecodeError, bad UTF-8, nesting...
            if refusals.refuse(
                "shell", "malformed", str(exc), event="shell.bad_request"
            ):  # audited as logged: once per interval
                self._audit(operator, "?", [], "refused", f"bad request: {exc}")
            return ShellAnswer(request_id(frame), False, error=f"bad request: {str(exc)[:200]}")
        follow_poll = request.command == "logs" and len(request.args) == 2  # audited once, at its start
        if request.expires_at and time.time() > request.expires_at:
            self._audit(operator, request.command, request.args, "expired", "the client stopped waiting")
            return ShellAnswer(request.id, False, error="expired: the shell stopped waiting for it")
        try:
            if not follow_poll:
                self._audit(operator, request.command, request.args, "started")
        except OSError as exc:
            _log.error("shell.audit_failed", path=str(self.audit_path), error=str(exc))
            return ShellAnswer(request.id, False, error=f"refused: the audit log cannot be written ({exc})")
        try:
            data = self.commands.execute(request.command, list(request.args), operator)
        except CommandError as exc:
            self._audit(operator, request.command, request.args, "failed", str(exc))
            return ShellAnswer(request.id, False, error=str(exc))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failed command must not stop the listener
            _log.exception("shell.command_failed", command=request.command)
            self._audit(operator, request.command, request.args, "failed", f"{type(exc).__name__}: {exc}")
            return ShellAnswer(request.id, False, error=f"{type(exc).__name__}: {exc}"[:500])
        if not follow_poll:
            self._audit(operator, request.command, request.args, "done")
        return ShellAnswer(request.id, True, data)

    def _audit(self, operator: str, command: str, args: list[str], outcome: str, error: str = "") -> None:
        entry = audit_entry(
            self.audit_path,
            {
                "node": self.node,
                "operator": operator,
                "command": command,
                "args": args,
                "outcome": outcome,
                **({"error": error} if error else {}),
            },
            failed_event="shell.audit_failed",
        )
        if command != "logs":  # a shell reading the log must not feed it
            _log.info("shell.command", **entry)


def _encode(answer: ShellAnswer) -> bytes:
    """The answer's frame; data that cannot be encoded becomes an error answer saying so."""
    try:
        return encoder.encode(answer)
    except Exception as exc:  # noqa: BLE001 - e.g. an integer beyond MessagePack's 64 bits
        refusals.refuse("shell", "unencodable", f"{type(exc).__name__}: {exc}", event="shell.answer_unencodable")
        return encoder.encode(ShellAnswer(answer.id, False, error=f"the answer cannot be sent: {type(exc).__name__}"))
