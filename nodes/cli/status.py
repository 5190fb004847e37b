"""What `flotilla up` runs: `flotilla status` and `flotilla wait-ready`.

Both read files only (the pid file's lock, the launcher's state file, each node's ready
file): they answer at once, also when no cluster runs (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flotilla.actors.core.human import human_duration
from flotilla.nodes.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_WAIT_TIMED_OUT,
    load_for_client,
    topology_option,
)

if TYPE_CHECKING:
    from flotilla.nodes.runtime.cluster_status import ClusterStatus, NodeStatus

EXIT_NO_CLUSTER = 1
"""No `flotilla up` holds the topology's pid file."""
POLL_EVERY = 0.1
"""Seconds between two looks at the nodes' ready files in `wait-ready`."""


def _when(epoch: float | None, now: float) -> str:
    """`epoch` as ISO 8601 UTC (to the second) with the time since, as 2026-12-02T05:10:00Z (3m12s)."""
    if epoch is None:
        return "-"
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} ({human_duration(max(0.0, now - epoch))})"


def _readiness(node: NodeStatus) -> str:
    return f"yes ({node.role})" if node.ready else f"no ({node.state})"


def _print_status(status: ClusterStatus, source: str) -> None:
    now = time.time()
    ready = sum(node.ready for node in status.nodes)
    print(
        f"flotilla up (pid {status.launcher}) runs {source} since {_when(status.since, now)}: "
        f"{ready} of {len(status.nodes)} nodes ready"
    )
    rows = [("node", "pid", "up since", "ready", "restarts")]
    rows += [
        (node.name, str(node.pid or "-"), _when(node.since, now), _readiness(node), str(node.restarts))
        for node in status.nodes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_status(args: argparse.Namespace) -> int:
    from flotilla.nodes.runtime.cluster_status import cluster_status, no_cluster_message

    topology = load_for_client(args.topology)
    if topology is None:
        return EXIT_USAGE
    status = cluster_status(topology)
    if status is None:
        if args.json:
            print(json.dumps({"running": False}))
        print(no_cluster_message(topology), file=sys.stderr)
        return EXIT_NO_CLUSTER
    if args.json:
        print(json.dumps({"running": True, **status.as_json()}))
    else:
        _print_status(status, topology.source)
    return 0


def cmd_wait_ready(args: argparse.Namespace) -> int:
    from flotilla.nodes.runtime.cluster_status import cluster_status, no_cluster_message

    if args.timeout <= 0:
        print("--timeout must be > 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    topology = load_for_client(args.topology)
    if topology is None:
        return EXIT_USAGE
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            status = cluster_status(topology)
            if status is None:
                print(no_cluster_message(topology), file=sys.stderr)
                return EXIT_NO_CLUSTER
            if status.ready:
                nodes = ", ".join(f"{node.name} ({node.role})" for node in status.nodes)
                print(f"every node ready: {nodes}")
                return 0
            if time.monotonic() >= deadline:
                waiting = ", ".join(
                    _readiness(node).replace("no (", f"{node.name} (") for node in status.nodes if not node.ready
                )
                print(f"not ready after {args.timeout:g} s: {waiting}", file=sys.stderr)
                return EXIT_WAIT_TIMED_OUT
            time.sleep(POLL_EVERY)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    status = commands.add_parser("status", help="the nodes 'flotilla up' runs: pid, up since, ready, restarts")
    topology_option(status)
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(handler=cmd_status)

    wait_ready = commands.add_parser("wait-ready", help="wait until every node of 'flotilla up' is ready")
    topology_option(wait_ready)
    wait_ready.add_argument(
        "--timeout", type=float, default=60.0, help="give up after this many seconds (exit 4; default 60)"
    )
    wait_ready.set_defaults(handler=cmd_wait_ready)
