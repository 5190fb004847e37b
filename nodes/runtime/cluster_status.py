"""What `flotilla up` runs now: its state file, and the status read from it.

The launcher keeps ``<data_dir>/up.state`` (JSON, 0600, replaced atomically): its pid, and
for each node the pid of its process, when it started and how many times the launcher
started it. `cluster_status` joins it with the pid file's lock (is a launcher running?) and
each node's ready file (`flotilla.nodes.runtime.readiness`); `flotilla status` and
`flotilla wait-ready` print it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.nodes.config.topology import Topology
from flotilla.nodes.runtime.pidlock import holder
from flotilla.nodes.runtime.readiness import READY_FILE, read_json, write_private_json


def pid_file(topology: Topology) -> Path:
    """Where the launcher of this topology writes its pid (and holds its lock)."""
    return topology.data_dir / "up.pid"


def no_cluster_message(topology: Topology) -> str:
    """What the commands that need a running `flotilla up` say when there is none."""
    return (
        f"no cluster running for {topology.source} (no 'flotilla up' holds {pid_file(topology)}): "
        "start it with flotilla up"
    )


def state_file(topology: Topology) -> Path:
    """Where the launcher of this topology keeps its nodes' pids and starts."""
    return topology.data_dir / "up.state"


class LauncherState:
    """The launcher's side: what it has started, rewritten on every change."""

    def __init__(self, path: Path, nodes: list[str]) -> None:
        self.path = path
        self.started = time.time()
        self.nodes: dict[str, dict[str, Any]] = {name: {"pid": None, "started": None, "starts": 0} for name in nodes}

    def node_started(self, name: str, pid: int, starts: int) -> None:
        self.nodes[name] = {"pid": pid, "started": time.time(), "starts": starts}
        self.write()

    def node_exited(self, name: str, code: int) -> None:
        self.nodes[name].update(pid=None, exit_code=code)
        self.write()

    def write(self) -> None:
        write_private_json(self.path, {"launcher": os.getpid(), "started": self.started, "nodes": self.nodes})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    pid: int | None
    """The node's process, if one runs."""
    since: float | None
    """When the launcher started that process (epoch seconds)."""
    restarts: int
    """How many times the launcher started the node again after its process ended."""
    ready: bool
    role: str | None
    """root, owner, standby or host (see `flotilla.nodes.runtime.readiness`), when ready."""
    state: str
    """ready, starting (its process runs, not ready yet), stopped (SIGSTOPped), or down (no
    process: the launcher starts it again)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "pid": self.pid,
            "since": self.since,
            "restarts": self.restarts,
            "ready": self.ready,
            "role": self.role,
            "state": self.state,
        }


@dataclass(frozen=True)
class ClusterStatus:
    launcher: int
    """The pid of the `flotilla up` that holds the pid file."""
    since: float | None
    nodes: list[NodeStatus]

    @property
    def ready(self) -> bool:
        return all(node.ready for node in self.nodes)

    def not_ready(self) -> list[str]:
        return [node.name for node in self.nodes if not node.ready]

    def as_json(self) -> dict[str, Any]:
        return {
            "launcher": self.launcher,
            "since": self.since,
            "ready": self.ready,
            "nodes": [node.as_json() for node in self.nodes],
        }


def cluster_status(topology: Topology) -> ClusterStatus | None:
    """What the topology's `flotilla up` runs, or None when none holds the pid file."""
    launcher = holder(pid_file(topology))
    if launcher is None:
        return None
    state = read_json(state_file(topology))
    if not isinstance(state, dict) or state.get("launcher") != launcher:
        state = {}  # the launcher is starting: it has written no state yet
    nodes = state.get("nodes", {})
    return ClusterStatus(
        launcher=launcher,
        since=state.get("started"),
        nodes=[_node_status(topology, name, nodes.get(name) or {}) for name in topology.nodes],
    )


def _node_status(topology: Topology, name: str, started: dict[str, Any]) -> NodeStatus:
    pid = started.get("pid")
    process = _process_state(pid) if isinstance(pid, int) else None
    alive = process not in (None, "Z", "X")
    frozen = process in ("T", "t")
    ready_file = read_json(topology.node_data_dir(name) / READY_FILE)
    ready = alive and not frozen and isinstance(ready_file, dict) and ready_file.get("pid") == pid
    if not alive:
        state = "down"
    elif frozen:
        state = "stopped"
    else:
        state = "ready" if ready else "starting"
    return NodeStatus(
        name=name,
        pid=pid if alive else None,
        since=started.get("started") if alive else None,
        restarts=max(0, int(started.get("starts", 0)) - 1),
        ready=ready,
        role=ready_file.get("role") if ready else None,
        state=state,
    )


def _process_state(pid: int) -> str | None:
    """The state letter of process `pid` (R, S, T, Z...), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"
