"""A validated topology: what reading `supervisor_tree.yaml` produces and nodes run from.

Every value is set by the reader (`flotilla.nodes.config.reader`); the defaults of what a
file leaves out live in the schema (`flotilla.nodes.config.schema`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.actors.core.child_spec import Spec, SupervisorSpec
from flotilla.actors.pipeline.journal_target import JOURNAL_FILE, JournalTarget
from flotilla.actors.pipeline.pruning import Retention
from flotilla.actors.pipeline.rules import RuleSet


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """One node of the cluster."""

    name: str
    address: str
    description: str
    metrics: str | None
    shell: str | None

    @property
    def host(self) -> str:
        return self.address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")


@dataclass(frozen=True, kw_only=True)
class SecurityConfig:
    """CURVE keys, or their absence, and the operators allowed on TCP shells."""

    keys: Path | None
    insecure_bind: bool
    plaintext: bool
    operators: tuple[str, ...] = ()
    eval_operators: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    """The intake's clients: names of public keys in the key directory."""


@dataclass(frozen=True, kw_only=True)
class EgressConfig:
    """What fetchers may reach besides public addresses (see actors/pipeline/egress.py)."""

    allow: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class IntakeConfig:
    """Where clients submit jobs."""

    node: str
    address: str
    router: str


@dataclass(frozen=True, kw_only=True)
class ResilienceConfig:
    """The control actors every node's gate reports to (None: not configured)."""

    breakers: str | None
    shards: int
    limiter: str | None
    hold: str | None
    proxies: str | None
    interval: float

    def gate_args(self) -> dict[str, Any]:
        """The arguments of a node's gate (flotilla.actors.resilience.gate.Gate)."""
        return {
            "breakers": self.breakers,
            "shards": self.shards,
            "limiter": self.limiter,
            "hold": self.hold,
            "proxies": self.proxies,
            "interval": self.interval,
        }


@dataclass(frozen=True, kw_only=True)
class FailoverConfig:
    """Which nodes may own the tree (its root and every child not placed elsewhere)."""

    candidates: tuple[str, ...]
    failback: str
    """stay | return (see the schema)."""
    lease: float

    @property
    def renew_every(self) -> float:
        """How often the owner renews its lease (and a candidate tries to take it)."""
        return self.lease / 4

    @property
    def act_for(self) -> float:
        """How long after starting its last successful renewal an owner may act: it steps
        down a quarter of the lease before the database would let another node take over."""
        return self.lease * 3 / 4


@dataclass(frozen=True, kw_only=True)
class TransportConfig:
    """Node-to-node transport settings."""

    heartbeat_interval: float
    heartbeat_timeout: float
    max_message_bytes: int
    high_water_mark: int
    backlog: int
    node_wait: float  # deprecated and ignored (schema.py)


@dataclass(frozen=True, kw_only=True)
class Topology:
    """A validated topology: the cluster's nodes and the supervision tree."""

    cluster: str
    nodes: dict[str, NodeConfig]
    tree: SupervisorSpec
    source: str
    security: SecurityConfig
    transport: TransportConfig
    data_dir: Path
    rules: dict[str, RuleSet]
    intakes: tuple[IntakeConfig, ...]
    """Every intake, in the topology's order (empty: the cluster takes no jobs); at most one
    per node, each at its own address."""
    egress: EgressConfig
    resilience: ResilienceConfig | None = None
    """Set once the tree is checked against the `resilience` section."""
    failover: FailoverConfig | None = None
    """None: the root's node owns the tree, always (no failover)."""
    journal: JournalTarget | None = None
    """The `journal` key (None: SQLite in the data directory of each node that opens it)."""
    retention: Retention = Retention()
    """What the journal keeps of jobs that ended (the `retention` section)."""
    captures: Path | None = None
    """Where captured pages are kept (the `captures` key; None: `<data_dir>/pages`)."""

    def journal_of(self, node: str) -> JournalTarget:
        """The journal node `node` opens (its intake and routers)."""
        return self.journal or JournalTarget(path=self.node_data_dir(node) / JOURNAL_FILE)

    @property
    def journal_is_shared(self) -> bool:
        """Whether every node reaches one journal (a database server), so that several nodes
        may run an intake against it: a PostgreSQL journal (SQLite is one node's file)."""
        return self.journal is not None and self.journal.backend == "postgresql"

    def intake_on(self, node: str) -> IntakeConfig | None:
        """The intake node `node` serves, or None."""
        return next((intake for intake in self.intakes if intake.node == node), None)

    @property
    def intake_addresses(self) -> list[str]:
        """Where clients reach the intakes, in the topology's order."""
        return [intake.address for intake in self.intakes]

    @property
    def capture_dir(self) -> Path:
        """Where the pages of rule sets with `capture: true` are kept (every node's the same)."""
        return self.captures or self.data_dir / "pages"

    def node_data_dir(self, node: str) -> Path:
        """Where node `node` keeps its files."""
        return self.data_dir / node

    @property
    def root_node(self) -> str:
        """The node that runs the root supervisor (with failover: its first candidate, whose
        name the tree's paths keep whichever candidate owns it)."""
        if self.failover is not None:
            return self.failover.candidates[0]
        return self.tree.node or next(iter(self.nodes))

    @property
    def owner_candidates(self) -> tuple[str, ...]:
        """The nodes that may own the tree, in order of preference."""
        return self.failover.candidates if self.failover is not None else (self.root_node,)

    @property
    def root_path(self) -> str:
        return f"{self.root_node}/{self.tree.id}"

    def subtree_nodes(self) -> dict[str, str]:
        """Map every supervisor and pool path below the root (root id first) to its node."""
        placement: dict[str, str] = {}
        root_node = self.root_node

        def visit(spec: Spec, prefix: str, inherited: str) -> None:
            node = getattr(spec, "node", None) or inherited
            path = f"{prefix}/{spec.id}" if prefix else spec.id
            placement[path] = node
            for child in getattr(spec, "children", ()):
                visit(child, path, node)

        visit(self.tree, "", root_node)
        return placement
