"""The remote shell's wire protocol: typed MessagePack requests and answers over ZeroMQ.

A client sends `ShellRequest(id, command, args)`; the node answers `ShellAnswer(id, ok, data,
error)`, where `data` is plain data (lists, dicts, strings, numbers) the client renders as a
table or prints as JSON. Only the commands in `COMMANDS` run. One of them sends code:
`eval EXPR` evaluates Python in the node, for operator keys the topology names in
`eval_operators` only (over a TCP shell); the node refuses it to everyone else.
"""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec

MAX_REQUEST_BYTES = 64 * 1024
"""Largest request frame a node accepts on its shell socket."""
MAX_ARGS = 64
"""Most arguments in one request."""
MAX_ARG_CHARS = 2048
"""Longest argument."""

Arg = typing.Annotated[str, msgspec.Meta(max_length=MAX_ARG_CHARS)]

COMMANDS: dict[str, str] = {
    "help": "help — the commands",
    "nodes": "nodes — every node of the cluster, up or down",
    "tree": "tree [PATH] — the supervision tree (status, restarts, uptime, mailbox), whole cluster",
    "which_children": "which_children PATH — the children of a supervisor or pool",
    "count_children": "count_children PATH — children of a supervisor by kind and state",
    "inspect": "inspect PATH — an actor's own state summary",
    "restart": "restart PATH — stop a child and start it again (its supervisor does it; counted in its restarts, "
    "not against its intensity)",
    "terminate": "terminate PATH — stop a child (it stays stopped until restarted)",
    "scale": "scale POOL N — run N replicas in a pool",
    "jobs": "jobs [STATE] — jobs by state (and the first 50 in STATE)",
    "dlq": "dlq list [--parked|--all] | dlq replay [KEY...] [--parked|--all] — the dead-letter queue, as flotilla dlq",
    "job": "job KEY|URL [RULES] — one job's story: every attempt, wait and state change, and its result",
    "cancel": "cancel KEY... | cancel --batch BATCH — end unfinished jobs (dead: cancelled by an operator)",
    "breakers": "breakers | breakers reset TARGET — targets whose breaker is not closed; close one now",
    "limits": "limits — rate limits per target and slots in use",
    "proxies": "proxies — the proxy pool's proxies, states and health",
    "hold": "hold [on|off|auto] — the fleet's Hold",
    "trace": "trace PATH [SECONDS] — the messages an actor handles for a while (default 5 s)",
    "metrics": "metrics — this node's Prometheus metrics",
    "logs": "logs [N] [--audit] | logs --follow [--audit] — this node's last N log events (default 20), or new "
    "ones as they come; the shell's own audit events (shell.command) only with --audit",
    "paths": "paths — every actor path this node knows (for completion)",
    "eval": "eval EXPR — evaluate Python in the node (only operators the topology names in eval_operators)",
}


class ShellRequest(msgspec.Struct, frozen=True):
    id: int
    command: typing.Annotated[str, msgspec.Meta(max_length=64)]
    args: typing.Annotated[list[Arg], msgspec.Meta(max_length=MAX_ARGS)] = []
    expires_at: float = 0.0
    """Wall-clock time after which the client no longer waits: the node drops it then."""


class ShellAnswer(msgspec.Struct, frozen=True):
    id: int
    ok: bool
    data: typing.Any = None
    error: str = ""


class LogsPage(msgspec.Struct, frozen=True):
    """The answer to `logs`: the newest event's position, the events, and how many events
    after the asked position the node no longer keeps."""

    last: int
    events: list[dict[str, typing.Any]]
    missed: int = 0


class TraceStarted(msgspec.Struct, frozen=True):
    """The answer to `trace`: the actor now records for `tracing_for` seconds; `previous` is
    what its last trace recorded."""

    path: str
    tracing_for: float
    previous: list[typing.Any]


request_decoder = msgspec.msgpack.Decoder(ShellRequest)
answer_decoder = msgspec.msgpack.Decoder(ShellAnswer)
encoder = msgspec.msgpack.Encoder()


def shell_address(node_dir: Path) -> str:
    """The IPC address of a node's shell socket, in the node's data directory."""
    return f"ipc://{node_dir}/shell.sock"
