"""`flotilla up` / `flotilla down`: every node of a topology as child processes of one launcher.

The launcher starts one `flotilla node start` process per node, prefixes each line they
print with the node's name, and — like Erlang's heart — starts a node again when its
process dies, after a delay that doubles from `HEART_MIN` to `HEART_MAX` (and goes back to
the minimum once the node has run `HEART_RESET` seconds). SIGTERM, SIGINT (Ctrl-C),
`flotilla down` or `--run-for` stop every node gracefully (SIGTERM, then SIGKILL after
`STOP_TIMEOUT`), and the launcher exits 0. It writes its pid to ``<data_dir>/up.pid`` so
that `flotilla down` can find it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from flotilla.actors.core.backoff import backoff_delay
from flotilla.nodes.config.topology import Topology

HEART_MIN = 0.5
HEART_MAX = 30.0
HEART_RESET = 30.0
STOP_TIMEOUT = 30.0


@dataclass
class _Managed:
    name: str
    process: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    exits_in_a_row: int = 0
    restart_at: float | None = None
    starts: int = 0


def _stop_with_parent() -> None:
    """In a node's process, before it runs: get SIGTERM if the launcher dies, however it
    dies (Linux's PR_SET_PDEATHSIG), so that no node outlives a killed launcher."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def pid_file(topology: Topology) -> Path:
    """Where the launcher of this topology writes its pid."""
    return topology.data_dir / "up.pid"


class Launcher:
    """Runs and watches one process per node."""

    def __init__(self, topology: Topology, topology_path: str, *, log_format: str, out: TextIO = sys.stdout) -> None:
        self.topology = topology
        self.topology_path = topology_path
        self.log_format = log_format
        self.out = out
        self.nodes = [_Managed(name) for name in topology.nodes]
        self.stop_requested = threading.Event()
        self._print_lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._print_lock:
            print(f"[up] {text}", file=self.out, flush=True)

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Safe from a signal handler: only sets an event (printing could deadlock on the
        print lock held by the interrupted code)."""
        if signum is not None:
            self.signal_received = signum
        self.stop_requested.set()

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
        ]
        managed.process = subprocess.Popen(  # noqa: S603  our own interpreter and arguments
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        managed.started_at = time.monotonic()
        managed.starts += 1
        managed.restart_at = None
        threading.Thread(target=self._forward, args=(managed.name, managed.process), daemon=True).start()
        self.say(f"node {managed.name} started (pid {managed.process.pid}, start {managed.starts})")

    def _forward(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None  # noqa: S101  started with stdout=PIPE
        for line in process.stdout:
            with self._print_lock:
                self.out.write(f"[{name}] {line}")
                self.out.flush()

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
                self.say(
                    f"node {managed.name} exited with code {process.returncode} after {ran:.1f} s; "
                    f"restarting in {delay:g} s"
                )
                managed.process = None
            if managed.process is None and managed.restart_at is not None and now >= managed.restart_at:
                self._spawn(managed)

    def run(self, run_for: float | None = None) -> int:
        """Start every node, keep them running until asked to stop, stop them; exit 0."""
        path = pid_file(self.topology)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n", encoding="ascii")
        try:
            for managed in self.nodes:
                self._spawn(managed)
            deadline = time.monotonic() + run_for if run_for is not None else None
            while not self.stop_requested.wait(0.1):
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.say(f"ran for {run_for:g} s: stopping every node")
                    break
                self._watch(now)
            if self.signal_received is not None:
                self.say(f"{signal.Signals(self.signal_received).name}: stopping every node")
            self._stop_all()
        finally:
            if path.read_text(encoding="ascii").strip() == str(os.getpid()):
                path.unlink()
        return 0

    def _stop_all(self) -> None:
        """Stop the nodes that may own the tree first, together (the owner stops the whole
        tree, remote children included, in order; a standby told to stop at the same time
        does not take it over), then the others."""
        running = [m for m in self.nodes if m.process is not None and m.process.poll() is None]
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
                self.say(f"node {managed.name} stopped (code {code})")
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                self.say(f"node {managed.name} did not stop within {STOP_TIMEOUT:g} s: killed")


def stop_launcher(topology: Topology, timeout: float = STOP_TIMEOUT + 10) -> tuple[bool, str]:
    """Ask the running `flotilla up` of this topology to stop; wait for it."""
    path = pid_file(topology)
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return False, f"no running 'flotilla up' for this topology ({path} not found)"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False, f"'flotilla up' (pid {pid}) is not running; removed the stale {path}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True, f"'flotilla up' (pid {pid}) stopped every node"
        if not path.exists():  # removed by the launcher as it exits (it may linger as a zombie)
            return True, f"'flotilla up' (pid {pid}) stopped every node"
        time.sleep(0.1)
    return False, f"'flotilla up' (pid {pid}) is still running after {timeout:g} s"
