"""`flotilla shell`: talk to a node's shell socket, interactively or one command at a time.

Interactive: a prompt_toolkit prompt with history (``~/.flotilla_history``) and completion
of commands and actor paths; answers rendered as rich tables. Scripted: ``--exec "CMD"``
runs one command and exits (1 if the node refused it), with ``--json`` for the raw answer.
Leaving the shell (``quit``, Ctrl-D) never stops the node.
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq

from flotilla.nodes.shell.protocol import (
    COMMANDS,
    LogsPage,
    ShellAnswer,
    ShellRequest,
    TraceStarted,
    answer_decoder,
    encoder,
)
from flotilla.nodes.shell.readable import readable

TIMEOUT = 15.0


class ShellUnavailable(Exception):
    """The node's shell socket did not answer."""


def missing_socket(address: str) -> str | None:
    """Why nothing can answer at the IPC shell `address` — its socket file does not exist, or
    nothing listens on it (the node was killed) — or None if something may (a TCP address is
    not checked here: its client waits for an answer)."""
    import socket

    scheme, _, path = address.partition("://")
    if scheme != "ipc":
        return None
    if not Path(path).exists():
        return f"no shell socket at {path}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except TimeoutError:
            return None
        except OSError as exc:
            return f"nothing listens on the shell socket {path} ({exc.strerror or exc})"
    return None


class ShellClient:
    """One connection to a node's shell socket."""

    def __init__(self, address: str, timeout: float = TIMEOUT, curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        """`curve` is (operator public key, operator secret key, node public key) for a TCP
        shell."""
        self.address = address
        self.timeout = timeout
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self._socket.curve_publickey, self._socket.curve_secretkey, self._socket.curve_serverkey = curve
        self._socket.connect(address)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._socket.close()

    def call(self, command: str, args: list[str]) -> ShellAnswer:
        request = ShellRequest(next(self._ids), command, args, time.time() + self.timeout)
        self._socket.send(encoder.encode(request))
        deadline = time.monotonic() + self.timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._socket.poll(int(remaining * 1000)):
                break
            answer = answer_decoder.decode(self._socket.recv())
            if answer.id in (request.id, 0):
                return answer
        raise ShellUnavailable(f"no answer from {self.address} within {self.timeout:g} s (is the node running?)")


def run_line(client: ShellClient, line: str, as_json: bool, out: Any = None) -> bool:
    """Run one command line; print its answer; False if it failed."""
    out = out or sys.stdout
    words = shlex.split(line)
    if not words:
        return True
    command, args = words[0], words[1:]
    if command == "eval":  # Python is sent as typed, not split like shell words
        args = line.strip().split(None, 1)[1:]
    if command == "logs" and "--follow" in args:
        return _follow_logs(client, as_json, out, audit="--audit" in args)
    answer = client.call(command, args)
    if answer.ok and command == "logs":
        answer = ShellAnswer(answer.id, True, msgspec.convert(answer.data, LogsPage).events)
    if answer.ok and command == "trace":
        seconds = msgspec.convert(answer.data, TraceStarted).tracing_for
        time.sleep(seconds)  # the actor records meanwhile; then collect the recording
        answer = client.call("trace", [args[0], "0"])
        if answer.ok:
            answer = ShellAnswer(answer.id, True, msgspec.convert(answer.data, TraceStarted).previous)
    if as_json:
        print(json.dumps({"ok": answer.ok, "data": answer.data, "error": answer.error}, default=str), file=out)
    elif not answer.ok:
        print(f"error: {answer.error}", file=out)
    else:
        render(answer.data, out)
    return answer.ok


def _follow_logs(client: ShellClient, as_json: bool, out: Any, *, audit: bool = False, poll: float = 0.5) -> bool:
    """Print new log events of the node as they come, until Ctrl-C (or the node goes); the
    shell's own audit events only with `audit`."""
    options = ["--audit"] if audit else []
    answer = client.call("logs", ["0"])  # only the newest number: start from now
    if not answer.ok:
        print(f"error: {answer.error}", file=out)
        return False
    last = msgspec.convert(answer.data, LogsPage).last
    try:
        while True:
            answer = client.call("logs", ["200", str(last), *options])
            if not answer.ok:
                print(f"error: {answer.error}", file=out)
                return False
            page = msgspec.convert(answer.data, LogsPage)
            last = page.last
            if page.missed:
                print(
                    f"... {page.missed} events not kept by the node (it keeps the last 2,000)",
                    file=out,
                    flush=True,
                )
            for event in page.events:
                if as_json:
                    print(json.dumps(event, default=str), file=out, flush=True)
                else:
                    shown = readable(event)
                    fields = " ".join(
                        f"{k}={v}" for k, v in shown.items() if k not in ("event", "timestamp", "level", "node")
                    )
                    print(
                        f"{shown.get('timestamp', '')} {event.get('level', ''):<8} {event.get('event', '')} {fields}",
                        file=out,
                        flush=True,
                    )
            time.sleep(poll)  # polling interval of a follower, not synchronisation
    except KeyboardInterrupt:
        return True


def render(data: Any, out: Any) -> None:
    """Lists of rows as a table, anything else as text; known fields made readable
    (`flotilla.nodes.shell.readable`). Whatever the node sent is shown as it is: never read
    as rich markup (``[on|off|auto]``, a URL with brackets) or emoji codes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    data = readable(data)
    console = Console(file=out, soft_wrap=True)
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        columns = list(dict.fromkeys(key for row in data for key in row if key != "depth"))
        table = Table(show_lines=False)
        for column in columns:
            table.add_column(Text(str(column)))
        for row in data:
            cells = [str(row.get(c, "")) for c in columns]
            if "depth" in row and columns and columns[0] == "path":
                cells[0] = "  " * int(row["depth"]) + cells[0]
            table.add_row(*(Text(cell) for cell in cells))
        console.print(table)
    elif isinstance(data, str):
        console.print(data, markup=False, highlight=False, emoji=False)
    elif isinstance(data, list) and not data:
        console.print("(none)", markup=False)
    else:
        console.print_json(json.dumps(data, default=str))


def interactive(client: ShellClient, node: str) -> int:
    """The prompt loop; returns the exit code (0)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory

    paths: list[str] = []
    try:
        answer = client.call("paths", [])
        paths = list(answer.data) if answer.ok else []
    except ShellUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return 1
    completer = WordCompleter([*COMMANDS, "quit", *paths], WORD=True)
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(Path.home() / ".flotilla_history")), completer=completer, complete_while_typing=False
    )
    print(f"connected to {node} ({client.address}); 'help' lists the commands, 'quit' leaves")
    while True:
        try:
            line = session.prompt(f"{node}> ")
        except (EOFError, KeyboardInterrupt):
            break
        if line.strip() in ("quit", "exit"):
            break
        try:
            run_line(client, line, as_json=False)
        except ShellUnavailable as exc:
            print(f"error: {exc}")
        except ValueError as exc:  # unbalanced quotes
            print(f"error: {exc}")
        except KeyboardInterrupt:  # Ctrl-C during a command: back to the prompt
            print("interrupted (the node finishes or drops the command by itself)")
    print("bye (the node keeps running)")
    return 0
