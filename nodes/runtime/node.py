"""A node process: joins the cluster and runs its part of the topology's tree until stopped.

The node that runs the root starts the tree; children placed on other nodes are started
there at the root's request, when those nodes are up or as soon as they join (nodes start in
any order; a child that waits is logged as `supervisor.waiting_for_node`). Every node
listens for its peers, heartbeats and hosts the children placed on it. Exit codes: 0 after
a stop asked by SIGTERM, SIGINT (Ctrl-C) or `run_for`; 1 when the root supervisor gives up,
crashes or cannot start, or the node cannot listen; 2 for a key problem (or a data
directory that is not the node's user's alone, or a journal password that cannot be had).

Before anything is written, the node's data directory ``<data_dir>/<node>/`` is created
owner-only (0700), and the cluster's keys are generated if the topology names none.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
import time
from collections import Counter
from types import FrameType

import structlog

from flotilla.actors.core.child_spec import ChildSpec, Spec, SupervisorSpec
from flotilla.actors.core.messages import Inspect, SupervisorReport, describe_reason
from flotilla.actors.core.system import ActorSystem, RootStartError
from flotilla.actors.pipeline.captures import PageStore
from flotilla.actors.pipeline.credentials import CredentialError, CredentialSeal
from flotilla.actors.pipeline.egress import EgressPolicy
from flotilla.actors.pipeline.journal import Journal, JournalUnavailable, open_journal_patiently
from flotilla.actors.pipeline.journal_schema import JournalTooNew
from flotilla.actors.pipeline.journal_target import JournalConfigError
from flotilla.actors.pipeline.leases import LeaseTable, OwnerLease
from flotilla.actors.pipeline.router import Wake
from flotilla.actors.pipeline.rules import ExtractionRules
from flotilla.actors.resilience.alerts import AlertSink
from flotilla.actors.resilience.gate import Gate, shard_of
from flotilla.actors.resilience.messages import (
    Alert,
    BreakerCommand,
    BreakerStatus,
    HoldCommand,
    HoldMode,
    HoldStatus,
)
from flotilla.actors.resilience.view import ResilienceView
from flotilla.nodes.cluster.membership import Cluster
from flotilla.nodes.config.topology import Topology
from flotilla.nodes.intake.auth import IntakeAccess, ensure_intake_keys, key_directory
from flotilla.nodes.intake.server import Intake
from flotilla.nodes.runtime.logs import RecentEvents, recent_events
from flotilla.nodes.runtime.metrics import NodeMetrics
from flotilla.nodes.runtime.ownership import TREE_LEASE, TreeOwnership
from flotilla.nodes.runtime.readiness import READY_FILE, ReadyFile
from flotilla.nodes.runtime.signal_relay import SignalRelay
from flotilla.nodes.security.auth_failures import AuthFailures
from flotilla.nodes.security.keys import CurveKeys, KeyFileError, keys_dir, load_public, load_secret, private_directory
from flotilla.nodes.shell.server import ShellServer

EXIT_OK = 0
EXIT_TREE_FAILED = 1
EXIT_BAD_KEYS = 2


class NodeRun:
    """One run of a node: its actor system, its place in the cluster, signals, a summary."""

    def __init__(self, topology: Topology, node: str) -> None:
        self.topology = topology
        self.node = node
        self.system = ActorSystem(node)
        self.system.extensions.put(ExtractionRules(topology.rules))
        self.system.extensions.put(PageStore(topology.capture_dir))  # where extractors capture pages
        self.system.extensions.put(EgressPolicy.from_config(topology.egress.allow, self._endpoints()))
        self.system.extensions.put(ResilienceView())
        if topology.failover is not None:
            self.system.extensions.put(OwnerLease(TREE_LEASE))
        self.system.extensions.put(topology.journal_of(node))  # the routers' journal
        self.system.extensions.put(topology.retention)  # what their pruners delete
        self.system.data_dir = topology.node_data_dir(node)
        self.system.credentials_dir = key_directory(topology)
        self.cluster: Cluster | None = None
        self.intake: Intake | None = None
        self.metrics = NodeMetrics(self)
        self.events: RecentEvents = recent_events
        """This process's recent log events (the shell's `logs`)."""
        self.shell: ShellServer | None = None
        self.ownership: TreeOwnership | None = None
        self.ready = ReadyFile(topology.node_data_dir(node) / READY_FILE)
        """Present while the node serves (`flotilla status`, `flotilla wait-ready`)."""
        self.stop_requested = threading.Event()
        self._signal_relay = SignalRelay(self.stop_requested)
        self.auth_failures: list[AuthFailures] = []
        """Failed authentications of each of this node's sockets (metrics read them)."""
        self.reports: Counter[str] = Counter()
        self.log = structlog.get_logger("flotilla.node")
        self.system.add_report_listener(self._count_report)
        self.system.add_root_exit_listener(lambda _reason: self.stop_requested.set())

    def _endpoints(self) -> list[str]:
        """Every address the cluster listens on: fetchers never connect to them."""
        found = [a for n in self.topology.nodes.values() for a in (n.address, n.metrics, n.shell) if a]
        found.extend(self.topology.intake_addresses)
        return found

    @property
    def runs_root(self) -> bool:
        """This node starts the tree itself: it is the root's node (no failover)."""
        return self.topology.failover is None and self.topology.root_node == self.node

    @property
    def candidate(self) -> bool:
        """This node may own the tree (failover): it claims the tree's lease."""
        return self.topology.failover is not None and self.node in self.topology.failover.candidates

    def _count_report(self, report: SupervisorReport) -> None:
        self.reports[report.event] += 1

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Ask the run to stop the tree and return. Safe from a signal handler: it takes no
        lock (setting the event here could deadlock on the event's own lock, held by the
        interrupted `wait`; logging, on the log's): `SignalRelay` sets it."""
        if signum is not None:
            self.signal_received = signum
        self._signal_relay.poke()

    signal_received: int | None = None
    failure: str | None = None
    """Why a serving thread gave up (`flotilla.nodes.serving.guard`): the node stops with exit code 1."""

    def serving_gave_up(self, reason: str) -> None:
        """A serving loop (intake, shell, transport) keeps failing: stop the node rather than
        stay up without it."""
        self.failure = reason
        self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT; on SIGUSR1, write every thread's stack to
        stderr and go on (`kill -USR1 PID`: what a node that does not stop is doing)."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)

    def _prepare_files(self) -> int | None:
        """The cluster's keys first (generated if the topology names none), then the node's
        data directory, owner-only before anything is written into it."""
        try:
            keys_dir(self.topology)
        except KeyFileError as exc:
            self.log.critical("node.bad_keys", error=str(exc))
            return EXIT_BAD_KEYS
        try:
            private_directory(self.topology.node_data_dir(self.node))
        except KeyFileError as exc:
            self.log.critical("node.bad_data_dir", error=str(exc))
            return EXIT_BAD_KEYS
        self.ready.remove_stale()
        journal = self.topology.journal_of(self.node)
        try:
            if self.topology.intake_on(self.node) is not None:
                journal.password()  # a missing variable or an unsafe file stops the start here
        except JournalConfigError as exc:
            self.log.critical("node.bad_journal", where=journal.where, error=str(exc))
            return EXIT_BAD_KEYS
        return None

    def _join_cluster(self) -> int | None:
        try:
            keys = CurveKeys.for_node(self.topology, self.node)
        except KeyFileError as exc:
            self.log.critical("node.bad_keys", error=str(exc))
            return EXIT_BAD_KEYS
        self.cluster = Cluster(self.topology, self.node, self.system, keys, on_give_up=self.serving_gave_up)
        self.cluster.transport.auth_failures.on_alert = self._alert
        self.auth_failures.append(self.cluster.transport.auth_failures)
        address = self.topology.nodes[self.node].address
        try:
            self.cluster.start()
        except OSError as exc:
            self.log.critical("node.cannot_listen", address=address, error=str(exc))
            return EXIT_TREE_FAILED
        if keys is not None:
            self.log.info(
                "transport.secured",
                address=address,
                mechanism="CURVE",
                allowed=sorted(self.topology.nodes),
                keys=str(self.topology.security.keys or "generated"),
            )
        else:
            self.log.critical(
                "transport.plaintext",
                address=address,
                detail="security.plaintext is set: node links are neither encrypted nor "
                "authenticated, and any local user can pose as a node",
            )
        return None

    def _alert(self, title: str, detail: str) -> None:
        """Tell an alert to the tree's alert sink, if it has one (the log has it anyway)."""
        sink = _alert_sink(self.topology.tree, self.topology.root_path)
        if sink is not None:
            self.system.ref(sink).tell(Alert("critical", self.node, title, detail, time.time()))

    def run(self, run_for: float | None = None) -> int:
        """Join, start the tree if this node runs the root, wait for a stop request or the
        root's end, stop, summarise."""
        started = time.monotonic()
        failed = self._prepare_files() or self._join_cluster()
        if failed is not None:
            self._close()
            return failed
        failed = self._start_services()
        if failed is not None:
            self._close()
            return failed
        if self.runs_root:
            self._hear_peers()
            try:
                self.system.start(self.topology.tree, path=self.topology.root_path)
            except RootStartError as exc:
                self.log.critical("node.start_failed", error=str(exc), reason=describe_reason(exc.reason))
                self._close()
                return EXIT_TREE_FAILED
        elif self.candidate:
            self._claim_tree()
        failed = self._open_intake() or self._serve_metrics() or self._open_shell()
        if failed is not None:
            self._close()
            return failed
        self.log.info(
            "node.started",
            cluster=self.topology.cluster,
            root=self.topology.root_path,
            runs_root=self.runs_root,
            candidate=self.candidate,
            topology=self.topology.source,
            run_for=run_for,
        )
        if not self.candidate:
            self.ready.role("root" if self.runs_root else "host")
        self.ready.serving()
        if not self.stop_requested.wait(run_for):
            self.log.info("node.run_for_elapsed", seconds=run_for)
        if self.signal_received is not None:
            self.log.info("node.signal", signal=signal.Signals(self.signal_received).name)
        ended_by_itself = self.system.wait(timeout=0) is not None
        reason = self._close()
        if self.failure is not None:
            self.log.critical("node.serving_failed", reason=self.failure)
            return EXIT_TREE_FAILED
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

    def _hear_peers(self) -> None:
        """Before the tree starts, give the peers already up one heartbeat timeout to be heard
        (a stop request ends the wait), so that their children start with the tree rather than
        a moment later; the children of a peer not heard by then wait for it (`waiting_for_node`)."""
        assert self.cluster is not None  # noqa: S101  joined before
        self.cluster.hear_peers(self.topology.transport.heartbeat_timeout, self.stop_requested)

    def _claim_tree(self) -> None:
        """Run the ownership loop: this node runs the tree while it holds the tree's lease."""
        assert self.cluster is not None  # noqa: S101  joined before
        leases = LeaseTable(self.topology.journal_of(self.node))
        self.ownership = TreeOwnership(
            self.topology,
            self.node,
            self.system,
            self.cluster,
            leases,
            on_failure=self.serving_gave_up,
            node_stopping=self.stop_requested,
            on_role=self.ready.role,
        )
        self.ownership.start()

    def _start_services(self) -> int | None:
        """Every node runs a gate (at ``<node>/services/gate``) when the topology has a
        resilience section: it keeps the node's view of breakers, Hold, proxies and slots."""
        config = self.topology.resilience
        if config is None:
            return None
        spec = SupervisorSpec("services", (ChildSpec("gate", Gate, config.gate_args()),))
        try:
            self.system.start_services(spec)
        except RootStartError as exc:
            self.log.critical("node.start_failed", error=str(exc), reason=describe_reason(exc.reason))
            return EXIT_TREE_FAILED
        return None

    def _hold(self, mode: HoldMode | None) -> HoldStatus | None:
        """The fleet's Hold for the intake: set through the Hold monitor when `mode` is given,
        else as this node's view last heard (no round trip per result query)."""
        config = self.topology.resilience
        if config is None or config.hold is None:
            return None
        if mode is None:
            return self.system.extensions.get(ResilienceView).holding()
        return self.system.ask(config.hold, HoldCommand(mode), timeout=5.0)

    def reset_breaker(self, target: str) -> tuple[str, BreakerStatus] | None:
        """Close `target`'s breaker through the shard that owns it; how it stood before
        (closed, open, half_open) and its status now. None when the topology has no breakers."""
        config = self.topology.resilience
        if config is None or config.breakers is None:
            return None
        shard = f"{config.breakers}/{shard_of(target, config.shards)}"
        before = self.system.ask(shard, Inspect(), timeout=5.0).state.get("not_closed", {}).get(target)
        status = self.system.ask(shard, BreakerCommand(target, "reset"), timeout=5.0)
        return (before["state"] if before else "closed"), status

    def _serve_metrics(self) -> int | None:
        address = self.topology.nodes[self.node].metrics
        if address is None:
            return None
        try:
            self.metrics.serve(address)
        except OSError as exc:
            self.log.critical("node.cannot_listen", address=address, error=str(exc), what="metrics")
            return EXIT_TREE_FAILED
        self.log.info("metrics.listening", address=f"http://{address}/metrics")
        return None

    def _open_shell(self) -> int | None:
        """Every node listens for shells on an IPC socket in its data directory."""
        tcp = self.topology.nodes[self.node].shell
        keys = None
        if tcp is not None:
            directory = self.topology.security.keys
            deployed = [n for n in self.topology.security.operators if (directory / f"{n}.key_secret").exists()]  # type: ignore[operator]
            if deployed:
                self.log.critical(
                    "node.bad_keys",
                    what="shell",
                    error=f"secret keys of operator(s) "
                    f"{', '.join(deployed)} are in {directory}: operators keep their secret keys; "
                    "nodes get only the public ones",
                )
                return EXIT_BAD_KEYS
            try:
                public, secret = load_secret(directory, self.node)  # type: ignore[arg-type]
                operators = {
                    name: load_public(directory, name)  # type: ignore[arg-type]
                    for name in self.topology.security.operators
                }
            except KeyFileError as exc:
                self.log.critical("node.bad_keys", error=str(exc), what="shell")
                return EXIT_BAD_KEYS
            keys = CurveKeys(public=public, secret=secret, peers=operators)
        shell = ShellServer(self, self.topology.node_data_dir(self.node), tcp, keys, on_give_up=self.serving_gave_up)
        try:
            shell.start()
        except OSError as exc:
            self.log.critical("node.cannot_listen", address=shell.address, error=str(exc), what="shell")
            return EXIT_TREE_FAILED
        self.shell = shell
        self.log.info(
            "shell.listening",
            address=shell.address,
            tcp=tcp,
            audit=str(shell.audit_path),
            operators=list(self.topology.security.operators) if tcp else [],
        )
        return None

    def _open_intake(self) -> int | None:
        config = self.topology.intake_on(self.node)
        if config is None:
            return None
        router = self.system.ref(config.router)
        try:
            ensure_intake_keys(self.topology)
            access = IntakeAccess.load(self.topology, self.node)
        except KeyFileError as exc:
            self.log.critical("node.bad_keys", error=str(exc), what="intake")
            return EXIT_BAD_KEYS
        credential_rules = {name for name, rules in self.topology.rules.items() if rules.credentials}
        try:
            seal = CredentialSeal.in_directory(key_directory(self.topology), create=True) if credential_rules else None
        except CredentialError as exc:
            self.log.critical("node.bad_keys", error=str(exc), what="credentials")
            return EXIT_BAD_KEYS
        journal = self._open_journal()
        if not isinstance(journal, Journal):
            return journal
        self.intake = Intake(
            config.address,
            journal,
            set(self.topology.rules),
            lambda: router.tell(Wake()),  # (on PostgreSQL, NOTIFY wakes the routers of every node too)
            self._hold,
            access=access,
            seal=seal,
            credential_rules=credential_rules,
            reset_breaker=self.reset_breaker,
            node=self.node,
            on_give_up=self.serving_gave_up,
            audit_path=self.topology.node_data_dir(self.node) / "audit.log",
            rules=self.topology.rules,
            pages=PageStore(self.topology.capture_dir),
        )
        self.intake.auth.failures.on_alert = self._alert  # past the rate, an incident
        self.auth_failures.append(self.intake.auth.failures)
        try:
            self.intake.start()
        except OSError as exc:
            self.log.critical("node.cannot_listen", address=config.address, error=str(exc))
            self.intake = None
            return EXIT_TREE_FAILED
        self.log.info(
            "intake.listening",
            address=config.address,
            router=config.router,
            mechanism="CURVE",
            clients=sorted(n for n, r in access.roles.items() if r == "client"),
            operators=sorted(n for n, r in access.roles.items() if r == "operator"),
        )
        return None

    def _open_journal(self) -> Journal | int | None:
        """The intake's journal, retried with backoff while its database cannot be reached
        (None if the node is asked to stop meanwhile); an exit code if it cannot be used."""
        target = self.topology.journal_of(self.node)

        def waiting(error: JournalUnavailable, delay: float) -> None:
            self.log.warning(
                "intake.journal_unreachable", where=target.where, error=str(error), retry_in=round(delay, 2)
            )

        try:
            return open_journal_patiently(target, durable=True, stop=self.stop_requested, on_retry=waiting)
        except JournalConfigError as exc:
            self.log.critical("node.bad_journal", where=target.where, error=str(exc))
            return EXIT_BAD_KEYS
        except JournalTooNew as exc:
            self.log.critical("node.bad_journal", where=target.where, error=str(exc))
            return EXIT_TREE_FAILED

    def _close(self):  # noqa: ANN202
        self.ready.clear()
        if self.shell is not None:
            self.shell.close()
        self.metrics.close()
        if self.intake is not None:
            self.intake.close()
        if self.ownership is not None:
            self.ownership.close()
        reason = self.system.stop()
        if self.cluster is not None:
            self.cluster.close()
        return reason


def _alert_sink(spec: Spec, path: str) -> str | None:
    """The path of the first alert sink in the tree (depth first), or None."""
    if isinstance(spec, SupervisorSpec):
        for child in spec.children:
            found = _alert_sink(child, f"{path}/{child.id}")
            if found is not None:
                return found
        return None
    actor = getattr(spec, "actor", None)
    return path if isinstance(actor, type) and issubclass(actor, AlertSink) else None
