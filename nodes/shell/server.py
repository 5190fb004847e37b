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
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import zmq

from flotilla.nodes.security.audit import audit_entry
from flotilla.nodes.security.keys import ClusterAuthenticator, CurveKeys
from flotilla.nodes.serving.refusals import refusals
from flotilla.nodes.serving.request_id import request_id
from flotilla.nodes.serving.router_server import Endpoint, RouterServer
from flotilla.nodes.shell.commands import CommandError, ShellCommands, ShellHost, logs_arguments
from flotilla.nodes.shell.protocol import MAX_REQUEST_BYTES, ShellAnswer, encoder, request_decoder, shell_address

_log = structlog.get_logger("flotilla.shell")


class ShellServer:
    """Serves shell requests for one node on a thread of its own."""

    def __init__(
        self,
        run: ShellHost,
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
        context = zmq.Context()
        endpoints = [Endpoint(self.address)]  # first: only this user can reach it
        authenticator = None
        if tcp is not None and keys is not None:  # (a TCP shell always has keys: checked above)
            endpoints.append(Endpoint(tcp, curve=keys))
            authenticator = ClusterAuthenticator(context, keys, self._rejected)
        self.server = RouterServer(
            "shell",
            context,
            endpoints,
            self._answer,
            max_request_bytes=MAX_REQUEST_BYTES,
            listening_for="shells",
            authenticator=authenticator,
            on_give_up=on_give_up,
        )
        self.guard = self.server.guard

    @property
    def served(self) -> int:
        """Requests answered so far."""
        return self.server.served

    def start(self) -> None:
        """Serve on a thread of its own; raises `OSError` if a listener cannot be bound."""
        self.node_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.node_dir, 0o700)
        self.server.start()

    def close(self) -> None:
        """Stop listening. A command still running (a hung ask, a long eval) does not hold
        the node's stop (`RouterServer.close`)."""
        self.server.close()

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

    def _answer(self, frame: zmq.Frame, endpoint: int) -> bytes:
        """The answer frame to one request frame: from the local user on the IPC socket
        (endpoint 0), else as the name of the operator's key. Never raises."""
        operator = self.operator if endpoint == 0 else f"key:{frame.get('User-Id')}"
        try:
            answer = self.handle(frame.bytes, operator)
        except Exception as exc:  # noqa: BLE001 - answered, never the end of the listener
            refusals.refuse(
                "shell", "failed", f"{type(exc).__name__}: {exc}", event="shell.request_failed", exc_info=True
            )
            answer = ShellAnswer(0, False, error=f"{type(exc).__name__}: {exc}"[:500])
        return _encode(answer)

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
        follow_poll = (
            request.command == "logs" and len(logs_arguments(request.args)[0]) == 2
        )  # audited once, at its start
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
