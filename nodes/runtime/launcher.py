"""`flotilla up` / `flotilla down`: every node of a topology as child processes of one launcher.

The launcher starts one `flotilla node start` process per node and passes on every line they
print, and — like Erlang's heart — starts a node again when its process dies, after a delay
that doubles from `HEART_MIN` to `HEART_MAX` (and goes back to the minimum once the node has
run `HEART_RESET` seconds). SIGTERM, SIGINT (Ctrl-C), `flotilla down` or `--run-for` stop
every node gracefully (SIGCONT to every node first, in case one was frozen, then SIGTERM, the
root's node first, then SIGKILL after `STOP_TIMEOUT`), and the launcher exits 0.

Its output is one log stream. With ``json`` every line is a JSON object: each node's own
log lines unchanged (they carry ``node``), anything else a node prints (a traceback, a
warning) wrapped as ``node.output`` with the node and the line, and the launcher's own
events (``up.started``, ``up.node_started``, ``up.node_exited``, ``up.stopping``,
``up.node_stopped``, ``up.node_killed``, ``up.stopped``). With ``console`` every line a node
prints is prefixed with ``[node]`` and the launcher's lines with ``[up]``.

It holds the lock of ``<data_dir>/up.pid`` (`flotilla.nodes.runtime.pidlock`) for its whole
life, so that `flotilla down` and `flotilla status` find it and a second launcher is refused,
and keeps ``<data_dir>/up.state`` (`flotilla.nodes.runtime.cluster_status`).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from flotilla.actors.core.backoff import backoff_delay
from flotilla.nodes.config.topology import Topology
from flotilla.nodes.runtime.cluster_status import LauncherState, no_cluster_message, pid_file, state_file
from flotilla.nodes.runtime.pidlock import PidLock, holder, remove_stale
from flotilla.nodes.runtime.signal_relay import SignalRelay

HEART_MIN = 0.5
HEART_MAX = 30.0
HEART_RESET = 30.0
STOP_TIMEOUT = 30.0
OUTPUT_DRAIN = 5.0
"""Seconds to wait, once a node's process has ended, for the rest of what it printed."""

__all__ = ["STOP_TIMEOUT", "Launcher", "pid_file", "stop_launcher"]


@dataclass
class _Managed:
    name: str
    process: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    exits_in_a_row: int = 0
    restart_at: float | None = None
    starts: int = 0
    forwarder: threading.Thread | None = field(default=None, repr=False)


def _stop_with_parent() -> None:
    """In a node's process, before it runs: get SIGTERM if the launcher dies, however it
    dies (Linux's PR_SET_PDEATHSIG), so that no node outlives a killed launcher."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _timestamp() -> str:
    """Now, as the nodes' log lines write it (ISO 8601, UTC, "Z")."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Launcher:
    """Runs and watches one process per node."""

    def __init__(
        self,
        topology: Topology,
        topology_path: str,
        *,
        log_format: str,
        color: bool = False,
        lock: PidLock | None = None,
        out: TextIO = sys.stdout,
    ) -> None:
        """`log_format`: json or console (the nodes' and the launcher's); `color`: the nodes
        colour their console lines (the launcher's output is a terminal); `lock`: the pid
        file's lock, taken by the caller (else taken by `run`), released as `run` returns."""
        self.topology = topology
        self.topology_path = topology_path
        self.log_format = log_format
        self.color = color
        self.lock = lock
        self.out = out
        self.nodes = [_Managed(name) for name in topology.nodes]
        self.state = LauncherState(state_file(topology), list(topology.nodes))
        self.stop_requested = threading.Event()
        self._signal_relay = SignalRelay(self.stop_requested)
        self._print_lock = threading.Lock()
        self._output_lost = False

    def _write(self, line: str) -> None:
        """Write one line; if the reader has gone, drop it (the nodes keep running and their
        output keeps being read, so that none of them blocks on a full pipe)."""
        with self._print_lock:
            if self._output_lost:
                return
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):  # a closed pipe or terminal
                self._output_lost = True

    def say(self, event: str, text: str, *, level: str = "info", **fields: Any) -> None:
        """One event of the launcher: a JSON line (`event`, `fields`, level, timestamp), or
        ``[up] text`` on the console."""
        if self.log_format == "json":
            self._write(json.dumps({"event": event, **fields, "level": level, "timestamp": _timestamp()}))
        else:
            self._write(f"[up] {text}")

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Safe from a signal handler: it takes no lock (setting the event here could
        deadlock on the event's own lock, held by the interrupted `wait`; printing, on the print
        lock): `SignalRelay` sets the event."""
        if signum is not None:
            self.signal_received = signum
        self._signal_relay.poke()

    signal_received: int | None = None

    def _spawn(self, managed: _Managed) -> None:
        command = [
            sys.executable,
            "-m",
            "flotilla.nodes.cli",
            "node",
            "start",
            "--topology",
            self.topology_path,
            "--node",
            managed.name,
            "--log-format",
            self.log_format,
            "--log-color",
            "always" if self.color else "never",
        ]
        process = subprocess.Popen(  # noqa: S603  our own interpreter and arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        managed.process = process
        managed.started_at = time.monotonic()
        managed.starts += 1
        managed.restart_at = None
        managed.forwarder = threading.Thread(
            target=self._forward, args=(managed.name, process), name=f"output of {managed.name}", daemon=True
        )
        managed.forwarder.start()
        self.state.node_started(managed.name, process.pid, managed.starts)
        self.say(
            "up.node_started",
            f"node {managed.name} started (pid {process.pid}, start {managed.starts})",
            node=managed.name,
            pid=process.pid,
            start=managed.starts,
        )

    def _forward(self, name: str, process: subprocess.Popen[str]) -> None:
        """Pass on every line the node prints: as it is if it is a JSON object (a log line),
        else wrapped (json), or prefixed with the node's name (console)."""
        assert process.stdout is not None  # noqa: S101  started with stdout=PIPE
        json_output = self.log_format == "json"
        for line in process.stdout:
            line = line.rstrip("\n")
            if not json_output:
                self._write(f"[{name}] {line}")
            elif _is_json_object(line):
                self._write(line)
            else:
                wrapped = {
                    "event": "node.output",
                    "node": name,
                    "pid": process.pid,
                    "line": line,
                    "level": "warning",
                    "timestamp": _timestamp(),
                }
                self._write(json.dumps(wrapped))

    def _drain(self, managed: _Managed) -> None:
        """Let the ended node's last lines out before the launcher speaks of its end."""
        if managed.forwarder is not None:
            managed.forwarder.join(OUTPUT_DRAIN)

    def _watch(self, now: float) -> None:
        for managed in self.nodes:
            process = managed.process
            if process is not None and process.poll() is not None:
                ran = now - managed.started_at
                if ran >= HEART_RESET:
                    managed.exits_in_a_row = 0
                delay = backoff_delay(HEART_MIN, HEART_MAX, managed.exits_in_a_row)
                managed.exits_in_a_row += 1
                managed.restart_at = now + delay
                self._drain(managed)
                self.state.node_exited(managed.name, process.returncode)
                self.say(
                    "up.node_exited",
                    f"node {managed.name} exited with code {process.returncode} after {ran:.1f} s; "
                    f"restarting in {delay:g} s",
                    level="warning" if process.returncode != 0 else "info",
                    node=managed.name,
                    pid=process.pid,
                    code=process.returncode,
                    ran=round(ran, 3),
                    restart_in=delay,
                )
                managed.process = None
            if managed.process is None and managed.restart_at is not None and now >= managed.restart_at:
                self._spawn(managed)

    def run(self, run_for: float | None = None) -> int:
        """Start every node, keep them running until asked to stop, stop them; exit 0."""
        lock = self.lock or PidLock.acquire(pid_file(self.topology))
        try:
            self.state.write()
            self.say(
                "up.started",
                f"running {', '.join(self.topology.nodes)} of {self.topology.source} (pid {os.getpid()})",
                pid=os.getpid(),
                topology=str(self.topology.source),
                nodes=list(self.topology.nodes),
            )
            for managed in self.nodes:
                self._spawn(managed)
            deadline = time.monotonic() + run_for if run_for is not None else None
            reason = None
            while not self.stop_requested.wait(0.1):
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    reason = f"ran for {run_for:g} s"
                    break
                self._watch(now)
            if self.signal_received is not None:
                reason = signal.Signals(self.signal_received).name
            self.say("up.stopping", f"{reason}: stopping every node", pid=os.getpid(), reason=reason)
            self._stop_all()
            self.say("up.stopped", "every node stopped", pid=os.getpid())
        finally:
            self.state.remove()
            lock.release()
        return 0

    def _stop_all(self) -> None:
        """Stop the nodes that may own the tree first, together (the owner stops the whole
        tree, remote children included, in order; a standby told to stop at the same time
        does not take it over), then the others."""
        running = [m for m in self.nodes if m.process is not None and m.process.poll() is None]
        for managed in running:  # a frozen (SIGSTOPped) node hears SIGTERM only once continued, and
            try:  # the root's node stops the children placed on the others: continue them all first
                os.killpg(managed.process.pid, signal.SIGCONT)  # type: ignore[union-attr]  # its own session
            except (ProcessLookupError, PermissionError):
                pass
        root = [m for m in running if m.name in self.topology.owner_candidates]
        for group in (root, [m for m in running if m not in root]):
            self._stop_group(group)

    def _stop_group(self, running: list[_Managed]) -> None:
        for managed in running:
            managed.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + STOP_TIMEOUT
        for managed in running:
            process = managed.process
            assert process is not None  # noqa: S101  every running node has a process
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
                self._drain(managed)
                self.say(
                    "up.node_stopped",
                    f"node {managed.name} stopped (code {code})",
                    node=managed.name,
                    pid=process.pid,
                    code=code,
                )
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                self._drain(managed)
                self.say(
                    "up.node_killed",
                    f"node {managed.name} did not stop within {STOP_TIMEOUT:g} s: killed",
                    level="error",
                    node=managed.name,
                    pid=process.pid,
                    after=STOP_TIMEOUT,
                )


def _is_json_object(line: str) -> bool:
    if not line.startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def stop_launcher(topology: Topology, timeout: float = STOP_TIMEOUT + 10) -> tuple[bool, str]:
    """Ask the running `flotilla up` of this topology to stop; wait until it has released
    its pid file. (False, why) if none runs (a stale pid file is removed) or it outlasts
    `timeout`."""
    path = pid_file(topology)
    pid = holder(path)
    if pid is None:
        remove_stale(path)
        return False, no_cluster_message(topology)
    if pid <= 0:
        return False, f"a 'flotilla up' holds {path} but wrote no pid in it"
    try:
        os.kill(pid, signal.SIGCONT)  # a frozen launcher would only hear SIGTERM once continued
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended meanwhile
    deadline = time.monotonic() + timeout
    while holder(path) == pid:
        if time.monotonic() >= deadline:
            return False, f"'flotilla up' (pid {pid}) is still running after {timeout:g} s"
        time.sleep(0.1)
    return True, f"'flotilla up' (pid {pid}) stopped every node"


def log_path(topology: Topology) -> Path:
    """Where `flotilla up --detach` writes the launcher's output."""
    return topology.data_dir / "up.log"
