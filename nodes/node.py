"""A node process: runs its part of the topology's tree until told to stop.

Exit codes: 0 after a stop asked by SIGTERM, SIGINT (Ctrl-C) or `run_for` (the tree is
stopped in reverse order within its shutdown timeouts); 1 when the root supervisor gives
up, crashes or cannot start.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from types import FrameType

import structlog

from actors.messages import SupervisorReport, describe_reason
from actors.system import ActorSystem, RootStartError
from nodes.topology import Topology

EXIT_OK = 0
EXIT_TREE_FAILED = 1


class NodeRun:
    """One run of a node: its actor system, signal handling and a summary at the end."""

    def __init__(self, topology: Topology, node: str) -> None:
        self.topology = topology
        self.node = node
        self.system = ActorSystem(node)
        self.stop_requested = threading.Event()
        self.reports: Counter[str] = Counter()
        self.log = structlog.get_logger("flotilla.node")
        self.system.add_report_listener(self._count_report)
        self.system.add_root_exit_listener(lambda _reason: self.stop_requested.set())

    def _count_report(self, report: SupervisorReport) -> None:
        self.reports[report.event] += 1

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Ask the run to stop the tree and return (safe from a signal handler)."""
        if signum is not None:
            self.log.info("node.signal", signal=signal.Signals(signum).name)
        self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self, run_for: float | None = None) -> int:
        """Start the tree, wait for a stop request or the root's end, stop, summarise."""
        started = time.monotonic()
        try:
            self.system.start(self.topology.tree)
        except RootStartError as exc:
            self.log.critical("node.start_failed", error=str(exc), reason=describe_reason(exc.reason))
            self.system.stop()
            return EXIT_TREE_FAILED
        self.log.info("node.started", cluster=self.topology.cluster, root=self.system.root_path,
                      topology=self.topology.source, run_for=run_for)
        if not self.stop_requested.wait(run_for):
            self.log.info("node.run_for_elapsed", seconds=run_for)
        ended_by_itself = self.system.wait(timeout=0) is not None
        reason = self.system.stop()
        summary = {
            "uptime": round(time.monotonic() - started, 3),
            "reports": dict(self.reports),
            "dead_letters": self.system.registry.dead_letters.count,
        }
        if ended_by_itself:
            self.log.critical("node.tree_failed", reason=describe_reason(reason) if reason else None, **summary)
            return EXIT_TREE_FAILED
        self.log.info("node.stopped", **summary)
        return EXIT_OK
