"""Load and validate `supervisor_tree.yaml` into supervisor specs.

Every problem is collected, not only the first, and each names its YAML path and line:
``supervisor_tree.yaml:14: tree.children[2].restart: 'permant' is not one of permanent,
transient, temporary``. Unknown keys are errors. The keys of each section, their types and
defaults are declared once below (`SECTIONS`); `reference_markdown()` renders them for
docs/topology.md, and a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import yaml
from selectolax.lexbor import LexborHTMLParser
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from flotilla.actors.catalog import BUILTIN_ACTORS, ActorNotFound, resolve_actor
from flotilla.actors.core.child_spec import (
    DEFAULT_INTENSITY,
    DEFAULT_PERIOD,
    DEFAULT_START_TIMEOUT,
    DEFAULT_WORKER_SHUTDOWN,
    RESTART_TYPES,
    STRATEGIES,
    Backoff,
    ChildSpec,
    PoolSpec,
    RestartType,
    Spec,
    SupervisorFlags,
    SupervisorSpec,
)
from flotilla.actors.pipeline.rules import (
    CHALLENGE_MAX_WORDS,
    DEFAULT_BLOCK_MARKERS,
    DEFAULT_BLOCK_SELECTORS,
    FieldRule,
    RuleSet,
)
from flotilla.nodes.config.actor_args import check_args, path_args
from flotilla.nodes.config.yaml_guard import YamlRefused
from flotilla.nodes.config.yaml_guard import compose as guarded_compose

DEFAULT_TOPOLOGY = "supervisor_tree.yaml"
DEFAULT_HEARTBEAT_INTERVAL = 0.2
DEFAULT_HEARTBEAT_TIMEOUT = 1.0
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_HWM = 10_000
DEFAULT_BACKLOG = 50_000
DEFAULT_NODE_WAIT = 30.0
DEFAULT_GATE_INTERVAL = 0.1
FIRST_PORT = 7101
MAX_TOPOLOGY_BYTES = 256 * 1024
"""A topology file larger than this is refused before parsing (a large one is a few tens of
KB). What bounds the time `check` takes is the number of values (`MAX_YAML_NODES`): 12,000
take about 2 s on a busy machine, most of it in PyYAML."""
MAX_NAME_CHARS = 64
"""Longest cluster, node, child or rule-set name (names travel in heartbeats and paths)."""
MAX_SECONDS = 86_400.0
"""Largest duration any setting accepts: one day (timers and socket polls overflow long
before "infinity", and nothing in a node waits longer)."""
MAX_MESSAGE_BYTES_LIMIT = 64 * 1024 * 1024
"""Largest `transport.max_message_bytes`: every envelope is held whole in memory, in each
node's queues, so a larger limit only lets one peer's frames exhaust memory."""
MAX_HWM = 1_000_000
"""Largest `transport.high_water_mark` (ZeroMQ's queue per peer, in messages)."""
MAX_BACKLOG = 1_000_000
"""Largest `transport.backlog` (envelopes waiting for one peer in the node's own queue)."""
MAX_POOL_SIZE = 1000
"""Most replicas in one pool: each is an actor with a thread of its own."""
FORBIDDEN_DATA_DIRS = ("/proc", "/sys", "/dev")
"""Kernel file systems a data directory must not be under (journals and sockets cannot live
there; writing into them can hang or crash the node)."""


@dataclass(frozen=True)
class Field:
    """One key of a section: its type and default as documented, and what it means."""

    type: str
    default: str
    doc: str


SECTIONS: dict[str, dict[str, Field]] = {
    "topology": {
        "cluster": Field("name", "`flotilla`", "Name of the cluster the nodes form."),
        "nodes": Field(
            "mapping of name → node", "required", "The nodes of the cluster; at least one. Names are path segments."
        ),
        "tree": Field("supervisor", "required", "The root supervisor and everything under it."),
        "data_dir": Field(
            "directory",
            "`data`",
            "Where nodes keep their files (`<data_dir>/<node>/`) "
            "and `flotilla up` its pid file. Relative to the topology file.",
        ),
        "security": Field(
            "security", "keys generated in `<data_dir>/keys/` on first start", "CURVE keys for every socket."
        ),
        "rules": Field("mapping of name → rule set", "`{}`", "Extraction rules jobs refer to by name (see below)."),
        "intake": Field("intake", "none: no intake socket", "Where clients submit jobs."),
        "transport": Field("transport", "the defaults below", "Node-to-node transport settings."),
        "operators": Field(
            "list of names",
            "`[]`",
            "Operators allowed on TCP shells; each one's public key is `<name>.key` in "
            "`security.keys` (`flotilla keys generate DIR --name NAME`).",
        ),
        "clients": Field(
            "list of names",
            "`[]`",
            "Clients allowed on the intake (submit, and read their own jobs and results); "
            "each one's public key is `<name>.key` in the key directory (`security.keys`, "
            "else `<data_dir>/keys`). Operators and the local user (`local.key`) are "
            "always allowed, with control requests too.",
        ),
        "egress": Field(
            "egress",
            "no private, loopback, link-local, multicast, reserved or metadata address; not the cluster's own",
            "Where fetchers may connect (docs/security.md).",
        ),
        "eval_operators": Field(
            "list of names",
            "`[]`: no one",
            "Operators (of `operators`) whose TCP shells may evaluate Python in a "
            "node with `eval EXPR`. Nobody else can, and never over the IPC socket.",
        ),
        "resilience": Field(
            "resilience",
            "none: no breakers, limits, proxies or Hold",
            "The fleet's control actors, which every node's gate reports to.",
        ),
    },
    "node": {
        "address": Field(
            "tcp://HOST:PORT",
            "`tcp://127.0.0.1:<7101 + index>`",
            "Where the node listens for its peers (CURVE, see `security`). With "
            "`security.plaintext` HOST must be a loopback address.",
        ),
        "description": Field("string", "empty", "Free text shown by `flotilla check`."),
        "shell": Field(
            "tcp://HOST:PORT",
            "none: the IPC socket only",
            "A TCP listener for remote shells, besides the node's IPC socket. Needs "
            "`security.keys` and `operators`: only those operators' keys are accepted.",
        ),
        "metrics": Field(
            "HOST:PORT",
            "none: no metrics endpoint",
            "Where the node serves Prometheus metrics over HTTP (`/metrics`). Loopback "
            "only unless `security.insecure_bind` is true.",
        ),
    },
    "security": {
        "keys": Field(
            "directory",
            "none",
            "Key directory made by `flotilla keys generate`: `<node>.key` (public) and "
            "`<node>.key_secret` (0600) for every node. Without it the keys are "
            "generated on first start in `<data_dir>/keys/` (one host). Either way node "
            "links use CURVE and accept only the cluster's own public keys. Relative "
            "to the topology file.",
        ),
        "plaintext": Field(
            "boolean",
            "`false`",
            "Node links without CURVE (neither encrypted nor authenticated: any "
            "local user can pose as a node). Loopback addresses only; every node "
            "logs `transport.plaintext` at start.",
        ),
        "insecure_bind": Field(
            "boolean",
            "`false`",
            "Allow metrics, and an intake without keys, on a non-loopback "
            "address (that traffic is then neither encrypted nor "
            "authenticated). Never node links in plaintext.",
        ),
    },
    "transport": {
        "heartbeat_interval": Field(
            "seconds > 0", f"`{DEFAULT_HEARTBEAT_INTERVAL:g}`", "How often every node sends a heartbeat to every peer."
        ),
        "heartbeat_timeout": Field(
            "seconds > interval",
            f"`{DEFAULT_HEARTBEAT_TIMEOUT:g}`",
            "Silence after which a peer is declared down (killed, frozen or cut off alike).",
        ),
        "max_message_bytes": Field(
            "integer 1024..67108864",
            f"`{DEFAULT_MAX_MESSAGE_BYTES}`",
            "Largest envelope (ZeroMQ MAXMSGSIZE); a peer sending more is "
            "disconnected by ZeroMQ, and a local send of more raises.",
        ),
        "high_water_mark": Field(
            "integer 1..1000000", f"`{DEFAULT_HWM}`", "ZeroMQ send/receive queue per peer, in messages."
        ),
        "backlog": Field(
            "integer 1000..1000000",
            f"`{DEFAULT_BACKLOG}`",
            "Envelopes a sender may be ahead of the network per peer; past it the "
            "sender waits (up to 5 s) for room, then its envelope fails.",
        ),
        "node_wait": Field(
            "seconds > 0",
            f"`{DEFAULT_NODE_WAIT:g}`",
            "How long a starting supervisor waits for the node of a remote child.",
        ),
    },
    "supervisor": {
        "id": Field("name", "`root` for the tree; required for a child", "Path segment of the supervisor."),
        "strategy": Field(
            " \\| ".join(STRATEGIES), "`one_for_one`", "Which children restart when one exits and must be restarted."
        ),
        "intensity": Field(
            "integer ≥ 0",
            f"`{DEFAULT_INTENSITY}`",
            "Restarts allowed within `period`; one more and the supervisor gives up.",
        ),
        "period": Field("seconds > 0", f"`{DEFAULT_PERIOD:g}`", "Window for `intensity`."),
        "backoff": Field(
            "backoff", "none (restart at once, as OTP)", "Delay restarts with exponential backoff and jitter."
        ),
        "node": Field("node name", "the parent's node (the tree: the first node)", "Node that runs this subtree."),
        "children": Field("list of child", "`[]`", "Started in order, stopped in reverse order."),
    },
    "child": {
        "id": Field("name", "required", "Path segment of the child, unique among its siblings."),
        "actor": Field(
            "actor reference",
            "one of actor, supervisor, pool",
            "A worker: a built-in name ("
            + ", ".join(sorted(BUILTIN_ACTORS))
            + ") or `package.module:Class` (a subclass of `flotilla.actors.Actor`).",
        ),
        "supervisor": Field("supervisor (without `id`)", "one of actor, supervisor, pool", "A nested supervisor."),
        "pool": Field(
            "pool", "one of actor, supervisor, pool", "A pool of identical workers under their own supervisor."
        ),
        "args": Field("mapping", "`{}`", "Keyword arguments of the actor's constructor (workers only)."),
        "restart": Field(
            " \\| ".join(RESTART_TYPES),
            "`permanent`",
            "permanent: always restarted; transient: unless it exits Normal or Shutdown; temporary: never.",
        ),
        "shutdown": Field(
            "seconds > 0 \\| brutal_kill \\| infinity",
            f"`{DEFAULT_WORKER_SHUTDOWN:g}` for workers, `infinity` for supervisors and pools",
            "Time to stop before the child is abandoned; `infinity` only for "
            "supervisors and pools, whose own children are bounded.",
        ),
        "start_timeout": Field(
            "seconds > 0",
            f"`{DEFAULT_START_TIMEOUT:g}`",
            "Time `on_start` may take (workers only); the constructor must be quick.",
        ),
        "node": Field("node name", "the parent's node", "Node that runs this child."),
        "nodes": Field("list of node names", "the pool's node", "Pools only: replica i runs on nodes[i % len(nodes)]."),
    },
    "pool": {
        "size": Field("integer 0..1000", "`1`", "Replicas started at first; scalable at run time."),
        "actor": Field("actor reference", "required", "The replicas' actor."),
        "args": Field("mapping", "`{}`", "Keyword arguments for every replica."),
        "restart": Field(" \\| ".join(RESTART_TYPES), "`permanent`", "Restart type of each replica."),
        "shutdown": Field(
            "seconds > 0 \\| brutal_kill", f"`{DEFAULT_WORKER_SHUTDOWN:g}`", "Shutdown timeout of each replica."
        ),
        "start_timeout": Field("seconds > 0", f"`{DEFAULT_START_TIMEOUT:g}`", "Start timeout of each replica."),
        "intensity": Field("integer ≥ 0", f"`{DEFAULT_INTENSITY}`", "As for a supervisor."),
        "period": Field("seconds > 0", f"`{DEFAULT_PERIOD:g}`", "As for a supervisor."),
        "backoff": Field("backoff", "none", "As for a supervisor."),
    },
    "intake": {
        "node": Field(
            "node name",
            "required",
            "The node that serves the intake socket and keeps the journal (`<data_dir>/<node>/journal.sqlite`).",
        ),
        "address": Field(
            "tcp://HOST:PORT",
            "required",
            "Where clients connect, always with CURVE. "
            "Loopback only without `security.keys` (whatever `insecure_bind` says): remote "
            "clients need the keys of a key directory you distribute.",
        ),
        "router": Field(
            "path", "required", "The router actor, on the same node: the intake wakes it when jobs arrive."
        ),
    },
    "resilience": {
        "breakers": Field(
            "path of a pool of `breakers`",
            "none: no circuit breakers",
            "The breaker shards; a target belongs to shard crc32(target) % pool size.",
        ),
        "limiter": Field("path of a `limiter`", "none: no rate limits", "The fleet's rate limiter."),
        "hold": Field("path of a `hold`", "none: no Hold", "The Hold monitor."),
        "proxies": Field("path of a `proxies`", "none: direct connections", "The proxy pool."),
        "interval": Field(
            "seconds > 0", f"`{DEFAULT_GATE_INTERVAL:g}`", "How often each node's gate reports and refreshes its view."
        ),
    },
    "egress": {
        "allow": Field(
            "list of CIDRs or host names",
            "`[]`",
            "Addresses (`127.0.0.1`, `10.1.0.0/16`, `::1`) and host names (any address they "
            "resolve to) fetchers may reach although the default policy refuses them. The "
            "cluster's own endpoints stay refused.",
        ),
    },
    "rule set": {
        "fields": Field("mapping of name → field", "required", "The fields to take from a page."),
        "block_markers": Field(
            "list of strings",
            "`[" + ", ".join(DEFAULT_BLOCK_MARKERS) + "]`",
            "Text (any case) that marks a short 200 page (at most "
            f"{CHALLENGE_MAX_WORDS} words of visible text) as a challenge, in "
            "its title or text: such a page is BLOCKED, not DRIFT. A page with "
            "every required field is never a challenge.",
        ),
        "block_selectors": Field(
            "list of CSS selectors",
            "challenge forms and widgets (docs/resilience.md)",
            "Elements that mark a short 200 page as a challenge "
            "(Cloudflare's challenge form and iframe, Turnstile, "
            "Incapsula, hCaptcha, reCAPTCHA by default).",
        ),
        "credentials": Field(
            "boolean",
            "`false`: such URLs are rejected",
            "Accept URLs with `user:password@`: the password is sealed with the cluster's "
            "credentials key before it is written, sent only as Basic auth, and shown as "
            "`***` (docs/security.md).",
        ),
        "wait_budget": Field(
            "seconds > 0",
            "the router's `wait_budget` (`300`)",
            "How long its jobs may wait behind an open breaker, Hold or a missing proxy "
            "before they end dead (docs/resilience.md).",
        ),
    },
    "field": {
        "css": Field("CSS selector", "required", "Where the field is on the page."),
        "attr": Field("attribute name", "none: the element's text", "Read this attribute instead."),
        "all": Field("boolean", "`false`", "Take every match (a list) instead of the first."),
        "required": Field("boolean", "`false`", "A 200 page without it is DRIFT."),
    },
    "backoff": {
        "min": Field("seconds > 0", "`0.1`", "Delay before the first restart in a row."),
        "max": Field("seconds ≥ min", "`10`", "Cap on the doubling delay."),
        "random_factor": Field("0..1", "`0.2`", "Each delay is stretched by up to this fraction, at random."),
        "reset_after": Field(
            "seconds > 0", "(min + max) / 2", "Running this long makes the next restart the first in a row again."
        ),
    },
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a topology, with where it is."""

    path: str
    message: str
    line: int | None = None

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class TopologyError(Exception):
    """A topology has problems; `problems` lists every one found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.format(source) for p in problems))


@dataclass(frozen=True)
class NodeConfig:
    """One node of the cluster."""

    name: str
    address: str
    description: str = ""
    metrics: str | None = None
    shell: str | None = None

    @property
    def host(self) -> str:
        return self.address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")


@dataclass(frozen=True)
class SecurityConfig:
    """CURVE keys, or their absence, and the operators allowed on TCP shells."""

    keys: Path | None = None
    insecure_bind: bool = False
    plaintext: bool = False
    operators: tuple[str, ...] = ()
    eval_operators: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    """The intake's clients: names of public keys in the key directory."""


@dataclass(frozen=True)
class EgressConfig:
    """What fetchers may reach besides public addresses (see actors/pipeline/egress.py)."""

    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntakeConfig:
    """Where clients submit jobs."""

    node: str
    address: str
    router: str


@dataclass(frozen=True)
class ResilienceConfig:
    """The control actors every node's gate reports to (None: not configured)."""

    breakers: str | None = None
    shards: int = 1
    limiter: str | None = None
    hold: str | None = None
    proxies: str | None = None
    interval: float = DEFAULT_GATE_INTERVAL

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


@dataclass(frozen=True)
class TransportConfig:
    """Node-to-node transport settings."""

    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    high_water_mark: int = DEFAULT_HWM
    backlog: int = DEFAULT_BACKLOG
    node_wait: float = DEFAULT_NODE_WAIT


@dataclass(frozen=True)
class Topology:
    """A validated topology: the cluster's nodes and the supervision tree."""

    cluster: str
    nodes: dict[str, NodeConfig]
    tree: SupervisorSpec
    source: str
    security: SecurityConfig = SecurityConfig()
    transport: TransportConfig = TransportConfig()
    data_dir: Path = Path("data")
    rules: dict[str, RuleSet] = dc_field(default_factory=dict)
    intake: IntakeConfig | None = None
    resilience: ResilienceConfig | None = None
    egress: EgressConfig = EgressConfig()

    def node_data_dir(self, node: str) -> Path:
        """Where node `node` keeps its files."""
        return self.data_dir / node

    @property
    def root_node(self) -> str:
        """The node that runs the root supervisor."""
        return self.tree.node or next(iter(self.nodes))

    @property
    def root_path(self) -> str:
        return f"{self.root_node}/{self.tree.id}"

    def subtree_nodes(self) -> dict[str, str]:
        """Map every supervisor and pool path below the root (root id first) to its node."""
        placement: dict[str, str] = {}
        root_node = self.tree.node or next(iter(self.nodes))

        def visit(spec: Spec, prefix: str, inherited: str) -> None:
            node = getattr(spec, "node", None) or inherited
            path = f"{prefix}/{spec.id}" if prefix else spec.id
            placement[path] = node
            for child in getattr(spec, "children", ()):
                visit(child, path, node)

        visit(self.tree, "", root_node)
        return placement


# --- reading YAML with positions ------------------------------------------------------


class _Context:
    """Collects problems while walking the document."""

    def __init__(self, import_actors: bool = True) -> None:
        self.problems: list[Problem] = []
        self.node_names: set[str] = set()
        self.actor_paths: list[tuple[str, str, str, Node | None]] = []
        """Actor args that name other actors: (where, path, built-in kind, YAML node)."""
        self.import_actors = import_actors
        self.where: dict[str, Node] = {}
        """YAML node of every key read, by path: the line of a problem found later."""

    def problem(self, path: str, message: str, node: Node | None) -> None:
        if node is None:
            node = self._nearest(path)
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(path, message, line))

    def _nearest(self, path: str) -> Node | None:
        """The node of `path`, or of the closest enclosing path that was read."""
        while path:
            if path in self.where:
                return self.where[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


_constructor = SafeConstructor()


def _value(node: Node) -> Any:
    """Build the plain Python value of a YAML node."""
    value = _constructor.construct_object(node, deep=True)
    _constructor.constructed_objects.clear()
    _constructor.recursive_objects.clear()
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Mapping:
    """One YAML mapping checked against a section: duplicate and unknown keys are problems."""

    def __init__(self, ctx: _Context, node: Node | None, path: str, section: str) -> None:
        self.ctx = ctx
        self.path = path
        self.node = node
        self.entries: dict[str, tuple[Node, Node]] = {}
        self.valid = True
        if node is None or (isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
            return
        if not isinstance(node, MappingNode):
            ctx.problem(path, f"must be a mapping, not {_kind(node)}", node)
            self.valid = False
            return
        allowed = list(SECTIONS[section])
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or not isinstance(_value(key_node), str):
                ctx.problem(path, "keys must be strings", key_node)
                continue
            key = key_node.value
            if key in self.entries:
                ctx.problem(
                    _join(path, key),
                    f"duplicate key (the first is on line {self.entries[key][0].start_mark.line + 1})",
                    key_node,
                )
                continue
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                ctx.problem(_join(path, key), f"unknown key{suggestion} (allowed: {', '.join(allowed)})", key_node)
                continue
            self.entries[key] = (key_node, value_node)
            ctx.where[_join(path, key)] = key_node

    def has(self, key: str) -> bool:
        return key in self.entries

    def node_of(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def get(self, key: str, check: Callable[[Any], str | None], default: Any) -> Any:
        """The value of `key`, or `default` if absent or invalid (the problem is recorded)."""
        node = self.node_of(key)
        if node is None:
            return default
        value = _value(node)
        error = check(value)
        if error is not None:
            self.ctx.problem(_join(self.path, key), error, node)
            return default
        return value

    def require(self, key: str, what: str) -> bool:
        if key not in self.entries:
            self.ctx.problem(_join(self.path, key), f"is required ({what})", self.node)
            return False
        return True


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = _value(node)
    return "null" if value is None else f"{type(value).__name__} {value!r}"


# --- value checks (each returns a problem text or None) -------------------------------


def _name(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{value!r} must be a non-empty string"
    if len(value) > MAX_NAME_CHARS:
        return f"{value[:20]!r}... is longer than {MAX_NAME_CHARS} characters"
    if "/" in value or value.strip() != value:
        return f"{value!r} must not contain '/' or surrounding spaces"
    return None


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"{value!r} must be a string"


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        hint = difflib.get_close_matches(str(value), choices, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{value!r} is not one of {', '.join(choices)}{suggestion}"

    return check


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_at_least(low: int, high: int = 1_000_000_000) -> Callable[[Any], str | None]:
    """An integer within low..high (every count has a ceiling the node can use)."""

    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return f"{_short(value)} must be an integer >= {low} and <= {high}"

    return check


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _seconds(value: Any) -> str | None:
    return (
        None
        if _number(value) and 0 < value <= MAX_SECONDS
        else f"{_short(value)} must be a number of seconds > 0 and <= {MAX_SECONDS:g}"
    )


def _fraction(value: Any) -> str | None:
    return None if _number(value) and 0 <= value <= 1 else f"{value!r} must be a number within 0..1"


def _shutdown(allow_infinity: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value == "brutal_kill" or (_number(value) and 0 < value <= MAX_SECONDS):
            return None
        if value == "infinity":
            return (
                None
                if allow_infinity
                else (
                    "'infinity' is only allowed for supervisors and "
                    "pools: a worker that never stops would hang shutdown"
                )
            )
        extra = ", infinity" if allow_infinity else ""
        return f"{value!r} must be a number of seconds > 0, brutal_kill{extra}"

    return check


# --- sections -------------------------------------------------------------------------


def _read_backoff(ctx: _Context, node: Node | None, path: str) -> Backoff | None:
    if node is None:
        return None
    m = _Mapping(ctx, node, path, "backoff")
    if not m.valid:
        return None
    low = m.get("min", _seconds, 0.1)
    high = m.get("max", _seconds, 10.0)
    factor = m.get("random_factor", _fraction, 0.2)
    reset_after = m.get("reset_after", _seconds, None)
    if high < low:
        ctx.problem(_join(path, "max"), f"{high!r} must be >= min ({low!r})", m.node_of("max") or node)
        return None
    return Backoff(
        min=float(low),
        max=float(high),
        random_factor=float(factor),
        reset_after=float(reset_after) if reset_after is not None else None,
    )


def _read_flags(ctx: _Context, m: _Mapping, *, strategy: bool = True) -> SupervisorFlags:
    return SupervisorFlags(
        strategy=m.get("strategy", _one_of(STRATEGIES), "one_for_one") if strategy else "one_for_one",
        intensity=m.get("intensity", _int_at_least(0), DEFAULT_INTENSITY),
        period=float(m.get("period", _seconds, DEFAULT_PERIOD)),
        backoff=_read_backoff(ctx, m.node_of("backoff"), _join(m.path, "backoff")),
    )


def _read_node_ref(ctx: _Context, m: _Mapping) -> str | None:
    node = m.get("node", _name, None)
    if node is not None and node not in ctx.node_names:
        known = ", ".join(sorted(ctx.node_names)) or "none"
        ctx.problem(
            _join(m.path, "node"), f"{node!r} is not a node of this topology (nodes: {known})", m.node_of("node")
        )
        return None
    return node


def _read_node_list(ctx: _Context, m: _Mapping) -> tuple[str, ...]:
    node = m.node_of("nodes")
    value = _value(node) if node is not None else None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        ctx.problem(_join(m.path, "nodes"), "must be a non-empty list of node names", node)
        return ()
    unknown = [v for v in value if v not in ctx.node_names]
    if unknown:
        ctx.problem(
            _join(m.path, "nodes"),
            f"{', '.join(map(repr, unknown))} not a node of this topology (nodes: {', '.join(sorted(ctx.node_names))})",
            node,
        )
        return ()
    return tuple(value)


def _read_actor(ctx: _Context, m: _Mapping, args: dict[str, Any]) -> type | None:
    reference = m.get("actor", _text, None)
    if reference is None:
        return None
    if not ctx.import_actors and reference not in BUILTIN_ACTORS:
        return _unimported_actor(ctx, m, reference)
    try:
        actor = resolve_actor(reference)
    except ActorNotFound as exc:
        ctx.problem(_join(m.path, "actor"), str(exc), m.node_of("actor"))
        return None
    args_node = m.node_of("args")
    key_nodes = {key.value: key for key, _ in args_node.value} if isinstance(args_node, MappingNode) else {}
    problems = check_args(actor, args, reference)
    for problem in problems:
        path = _join(m.path, "args") if problem.key is None else _join(m.path, f"args.{problem.key}")
        ctx.problem(path, problem.message, key_nodes.get(problem.key) or args_node or m.node_of("actor"))
    for key, (target, kind) in path_args(actor, args).items():
        ctx.actor_paths.append((_join(m.path, f"args.{key}"), target, kind, key_nodes.get(key) or args_node))
    return None if problems else actor


def _unimported_actor(ctx: _Context, m: _Mapping, reference: str) -> type | None:
    """A stand-in class named like `reference`, checked by form only (`check --no-import`)."""
    module, _, name = reference.partition(":")
    if not (module and name and all(part.isidentifier() for part in (*module.split("."), *name.split(".")))):
        ctx.problem(
            _join(m.path, "actor"),
            f"unknown actor {reference!r}: not a built-in "
            f"({', '.join(sorted(BUILTIN_ACTORS))}) and not of the form package.module:Class",
            m.node_of("actor"),
        )
        return None
    from flotilla.actors.core.actor import Actor

    return type(name.rpartition(".")[2], (Actor,), {"__module__": module, "__qualname__": name})


def _read_args(ctx: _Context, m: _Mapping) -> dict[str, Any]:
    node = m.node_of("args")
    if node is None:
        return {}
    value = _value(node)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        ctx.problem(_join(m.path, "args"), "must be a mapping with string keys", node)
        return {}
    return value


def _read_supervisor(
    ctx: _Context, m: _Mapping, child_id: str, *, restart: RestartType, shutdown: Any, node: str | None
) -> SupervisorSpec | None:
    flags = _read_flags(ctx, m)
    children = _read_children(ctx, m.node_of("children"), _join(m.path, "children"))
    if children is None:
        return None
    try:
        return SupervisorSpec(
            id=child_id, children=tuple(children), flags=flags, restart=restart, shutdown=shutdown, node=node
        )
    except ValueError as exc:
        ctx.problem(m.path, str(exc), m.node)
        return None


def _read_pool(
    ctx: _Context,
    node: Node | None,
    path: str,
    child_id: str,
    *,
    restart: RestartType,
    shutdown: Any,
    pool_node: str | None,
    replica_nodes: tuple[str, ...],
) -> PoolSpec | None:
    m = _Mapping(ctx, node, path, "pool")
    if not m.valid or not m.require("actor", "the replicas' actor"):
        return None
    args = _read_args(ctx, m)
    actor = _read_actor(ctx, m, args)
    size = m.get("size", _int_at_least(0, MAX_POOL_SIZE), 1)
    worker_restart = m.get("restart", _one_of(RESTART_TYPES), "permanent")
    worker_shutdown = m.get("shutdown", _shutdown(False), DEFAULT_WORKER_SHUTDOWN)
    start_timeout = m.get("start_timeout", _seconds, DEFAULT_START_TIMEOUT)
    flags = _read_flags(ctx, m, strategy=False)
    if actor is None:
        return None
    worker = ChildSpec(
        id="replica",
        actor=actor,
        args=args,
        restart=worker_restart,
        shutdown=worker_shutdown,
        start_timeout=float(start_timeout),
    )
    return PoolSpec(
        id=child_id,
        worker=worker,
        size=size,
        flags=flags,
        restart=restart,
        shutdown=shutdown,
        node=pool_node,
        replica_nodes=replica_nodes,
    )


def _read_child(ctx: _Context, node: Node, path: str) -> Spec | None:
    m = _Mapping(ctx, node, path, "child")
    if not m.valid:
        return None
    kinds = [k for k in ("actor", "supervisor", "pool") if m.has(k)]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        ctx.problem(path, f"needs exactly one of actor, supervisor, pool ({found})", node)
        return None
    kind = kinds[0]
    child_id = m.get("id", _name, None) if m.require("id", "the child's path segment") else None
    restart = m.get("restart", _one_of(RESTART_TYPES), "permanent")
    is_worker = kind == "actor"
    default_shutdown = DEFAULT_WORKER_SHUTDOWN if is_worker else "infinity"
    shutdown = m.get("shutdown", _shutdown(not is_worker), default_shutdown)
    child_node = _read_node_ref(ctx, m)
    replica_nodes = _read_node_list(ctx, m) if m.has("nodes") else ()
    if m.has("nodes") and kind != "pool":
        ctx.problem(
            _join(path, "nodes"), "only pools spread replicas over nodes; use node: for one node", m.node_of("nodes")
        )
    for worker_only in ("args", "start_timeout"):
        if m.has(worker_only) and not is_worker:
            ctx.problem(
                _join(path, worker_only), f"belongs inside {kind}: (it applies to workers)", m.node_of(worker_only)
            )
    if kind == "actor":
        args = _read_args(ctx, m)
        actor = _read_actor(ctx, m, args)
        start_timeout = m.get("start_timeout", _seconds, DEFAULT_START_TIMEOUT)
        if actor is None or child_id is None:
            return None
        if child_node is not None:
            ctx.problem(
                _join(path, "node"),
                "only supervisors and pools are placed on nodes; move the worker under one",
                m.node_of("node"),
            )
            return None
        return ChildSpec(
            id=child_id, actor=actor, args=args, restart=restart, shutdown=shutdown, start_timeout=float(start_timeout)
        )
    body_path = _join(path, kind)
    if kind == "pool":
        pool = _read_pool(
            ctx,
            m.node_of("pool"),
            body_path,
            child_id or "?",
            restart=restart,
            shutdown=shutdown,
            pool_node=child_node,
            replica_nodes=replica_nodes,
        )
        return pool if child_id is not None else None
    body = _Mapping(ctx, m.node_of("supervisor"), body_path, "supervisor")
    if not body.valid:
        return None
    for misplaced in ("id", "node"):
        if body.has(misplaced):
            ctx.problem(
                _join(body_path, misplaced), f"belongs on the child entry ({path}.{misplaced})", body.node_of(misplaced)
            )
    spec = _read_supervisor(ctx, body, child_id or "?", restart=restart, shutdown=shutdown, node=child_node)
    return spec if child_id is not None else None


def _read_children(ctx: _Context, node: Node | None, path: str) -> list[Spec] | None:
    if node is None:
        return []
    if not isinstance(node, SequenceNode):
        if isinstance(node, ScalarNode) and _value(node) is None:
            return []
        ctx.problem(path, f"must be a list of children, not {_kind(node)}", node)
        return None
    children: list[Spec] = []
    seen: dict[str, int] = {}
    ok = True
    for index, item in enumerate(node.value):
        item_path = f"{path}[{index}]"
        spec = _read_child(ctx, item, item_path)
        if spec is None:
            ok = False
            continue
        if spec.id in seen:
            ctx.problem(_join(item_path, "id"), f"{spec.id!r} is already the id of {path}[{seen[spec.id]}]", item)
            ok = False
            continue
        seen[spec.id] = index
        children.append(spec)
    return children if ok else None


def _address(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith("tcp://"):
        return f"{value!r} must look like tcp://HOST:PORT"
    host, _, port = value.removeprefix("tcp://").rpartition(":")
    if not host or not _port(port):
        return f"{value!r} must look like tcp://HOST:PORT with a port in 1..65535"
    if host in ("*", "0.0.0.0", "::", "[::]"):  # noqa: S104  refusing wildcards, not binding
        return f"{value!r}: name the interface to listen on; a wildcard is also where peers would connect"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(text: str) -> bool:
    """A port number in ASCII digits within 1..65535 (`int` would also read other digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536


def _host_port(value: Any) -> str | None:
    if (
        not isinstance(value, str)
        or ":" not in value
        or not value.rpartition(":")[0]
        or not _port(value.rpartition(":")[2])
    ):
        return f"{_short(value)} must be HOST:PORT with a port in 1..65535, e.g. 127.0.0.1:9101"
    return None


def _read_nodes(ctx: _Context, node: Node | None) -> dict[str, NodeConfig]:
    if not isinstance(node, MappingNode) or not node.value:
        ctx.problem("nodes", "must be a mapping with at least one node, e.g. 'nodes: {alpha: {}}'", node)
        return {}
    nodes: dict[str, NodeConfig] = {}
    seen_addresses: dict[str, str] = {}
    for index, (key_node, value_node) in enumerate(node.value):
        name = _value(key_node)
        path = f"nodes.{name}"
        error = _name(name)
        if error is not None:
            ctx.problem(path, error, key_node)
            continue
        if name in nodes:
            ctx.problem(path, "duplicate node", key_node)
            continue
        m = _Mapping(ctx, value_node, path, "node")
        address = m.get("address", _address, f"tcp://127.0.0.1:{FIRST_PORT + index}")
        if address in seen_addresses:
            ctx.problem(
                _join(path, "address"),
                f"{address} is already the address of node {seen_addresses[address]}",
                m.node_of("address") or key_node,
            )
        seen_addresses[address] = name
        metrics = m.get("metrics", _host_port, None)
        if metrics is not None and metrics in seen_addresses:
            ctx.problem(
                _join(path, "metrics"),
                f"{metrics} is already used by node {seen_addresses[metrics]}",
                m.node_of("metrics"),
            )
        seen_addresses[metrics or address] = name
        shell = m.get("shell", _address, None)
        if shell is not None and shell in seen_addresses:
            ctx.problem(
                _join(path, "shell"), f"{shell} is already used by node {seen_addresses[shell]}", m.node_of("shell")
            )
        seen_addresses[shell or address] = name
        nodes[name] = NodeConfig(
            name=name, address=address, description=m.get("description", _text, ""), metrics=metrics, shell=shell
        )
    return nodes


def _read_names(ctx: _Context, node: Node | None, key: str) -> list[str]:
    if node is None:
        return []
    value = _value(node)
    if not isinstance(value, list) or any(_name(v) is not None for v in value):
        what = "client" if key == "clients" else "operator"
        ctx.problem(key, f"must be a list of {what} names, e.g. [alice, bob]", node)
        return []
    return list(value)


LOCAL_KEY_NAME = "local"
"""The local user's key in the key directory (nodes/intake/auth.py); no client may be named so."""


def _read_clients(
    ctx: _Context, node: Node | None, nodes: dict[str, NodeConfig], security: SecurityConfig
) -> SecurityConfig:
    """The intake's `clients`: names distinct from nodes, operators and the local user, each
    with its public key in the key directory (when that directory exists already)."""
    names = _read_names(ctx, node, "clients")
    taken = [n for n in names if n in nodes or n in security.operators or n == LOCAL_KEY_NAME]
    if taken:
        ctx.problem(
            "clients",
            f"{', '.join(taken)} is already a node, an operator or the local user: each key has one role",
            node,
        )
    long = [n for n in names if len(n) > 64]
    if long:
        ctx.problem("clients", f"{long[0][:20]}...: a client name has at most 64 characters", node)
    directory = security.keys
    if directory is not None and directory.is_dir():
        missing = [n for n in names if not (directory / f"{n}.key").is_file()]
        if missing:
            ctx.problem(
                "clients",
                f"no public key for client(s) {', '.join(missing)} in {directory} "
                f"(make one with 'flotilla keys generate DIR --name {missing[0]}' and copy "
                f"{missing[0]}.key there)",
                node,
            )
    return dataclasses.replace(security, clients=tuple(names))


def _read_egress(ctx: _Context, node: Node | None) -> EgressConfig:
    m = _Mapping(ctx, node, "egress", "egress")
    allow = m.get("allow", _egress_entries, [])
    return EgressConfig(allow=tuple(str(entry) for entry in allow))


def _egress_entries(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"{value!r} must be a list of CIDRs or host names, e.g. [127.0.0.1, 10.1.0.0/16, intranet.example]"
    for entry in value:
        text = str(entry)
        try:
            ipaddress.ip_network(text, strict=False)
            continue
        except ValueError:
            pass
        if not text or "/" in text or ":" in text or any(c.isspace() for c in text):
            return f"{entry!r} is neither a CIDR (10.1.0.0/16, ::1) nor a host name"
    return None


def _read_operators(
    ctx: _Context, node: Node | None, eval_node: Node | None, nodes: dict[str, NodeConfig], security: SecurityConfig
) -> SecurityConfig:
    """The `operators` list, checked with the nodes' TCP shells: a node refuses to open one
    without CURVE keys and named operators whose public keys are there."""
    names = _read_names(ctx, node, "operators")
    evaluators = _read_names(ctx, eval_node, "eval_operators")
    clashes = [n for n in names if n in nodes]
    if clashes:
        ctx.problem("operators", f"{', '.join(clashes)} is also a node: a node's key must not open shells", node)
    strangers = [n for n in evaluators if n not in names]
    if strangers:
        ctx.problem(
            "eval_operators", f"{', '.join(strangers)} not in operators: only operators may evaluate", eval_node
        )
    for name, config in nodes.items():
        if config.shell is None:
            continue
        if security.keys is None:
            ctx.problem(
                f"nodes.{name}.shell",
                "a TCP shell needs security.keys: without CURVE anyone who can reach the port could steer the cluster",
                None,
            )
        elif not names:
            ctx.problem(
                f"nodes.{name}.shell", "a TCP shell needs operators: the names of the operator keys it accepts", None
            )
    if security.keys is not None and security.keys.is_dir():
        missing = [n for n in names if not (security.keys / f"{n}.key").is_file()]
        if missing:
            ctx.problem(
                "operators",
                f"no public key for operator(s) {', '.join(missing)} in {security.keys} "
                f"(make one with 'flotilla keys generate DIR --name {missing[0]}')",
                node,
            )
    return dataclasses.replace(security, operators=tuple(names), eval_operators=tuple(evaluators))


def _read_security(ctx: _Context, node: Node | None, nodes: dict[str, NodeConfig], base: Path) -> SecurityConfig:
    m = _Mapping(ctx, node, "security", "security")
    keys_value = m.get("keys", _text, None)
    insecure = m.get("insecure_bind", lambda v: None if isinstance(v, bool) else f"{v!r} must be true or false", False)
    keys: Path | None = None
    if keys_value is not None:
        keys = (base / keys_value).resolve()
        if not keys.is_dir():
            ctx.problem(
                "security.keys",
                f"{keys} is not a directory (make one with "
                f"'flotilla keys generate {keys_value} --name NODE' for each node)",
                m.node_of("keys"),
            )
        else:
            missing = [n for n in nodes if not (keys / f"{n}.key").is_file()]
            if missing:
                ctx.problem(
                    "security.keys",
                    f"no public key for node(s) {', '.join(missing)} in {keys} (expected {missing[0]}.key)",
                    m.node_of("keys"),
                )
    plaintext = m.get("plaintext", _flag, False)
    if plaintext and keys is not None:
        ctx.problem("security.plaintext", "plaintext and keys exclude each other", m.node_of("plaintext"))
    for name, config in nodes.items():
        if plaintext and not _is_loopback(config.host):
            ctx.problem(
                f"nodes.{name}.address",
                f"{config.address} is not a loopback address and "
                "security.plaintext is set: node links in plaintext are for loopback only",
                None,
            )
        if keys is None and not plaintext and name == "local":
            ctx.problem(
                f"nodes.{name}",
                "'local' names the local user's generated key: rename the node or set security.keys",
                None,
            )
    for name, config in nodes.items():
        if config.metrics and not insecure and not _is_loopback(config.metrics.rpartition(":")[0].strip("[]")):
            ctx.problem(
                f"nodes.{name}.metrics",
                f"{config.metrics} is not a loopback address: metrics are "
                "plain HTTP without authentication (set security.insecure_bind: true to expose them "
                "knowingly)",
                None,
            )
    return SecurityConfig(keys=keys, insecure_bind=insecure, plaintext=plaintext)


def _css(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"{value!r} must be a CSS selector"
    try:
        LexborHTMLParser("<p></p>").css(value)
    except Exception:  # noqa: BLE001 - selectolax raises its own error type
        return f"{value!r} is not a CSS selector selectolax can parse"
    return None


def _css_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"{value!r} must be a list of CSS selectors"
    return next((error for error in map(_css, value) if error is not None), None)


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{value!r} must be true or false"


def _read_rules(ctx: _Context, node: Node | None) -> dict[str, RuleSet]:
    if node is None or (isinstance(node, ScalarNode) and _value(node) is None):
        return {}
    if not isinstance(node, MappingNode):
        ctx.problem("rules", f"must be a mapping of rule-set names, not {_kind(node)}", node)
        return {}
    rule_sets = {}
    for key_node, value_node in node.value:
        name = _value(key_node)
        path = f"rules.{name}"
        if _name(name) is not None:
            ctx.problem(path, _name(name), key_node)  # type: ignore[arg-type]
            continue
        m = _Mapping(ctx, value_node, path, "rule set")
        if not m.valid or not m.require("fields", "at least one field"):
            continue
        markers = m.get(
            "block_markers",
            lambda v: (
                None
                if isinstance(v, list) and all(isinstance(x, str) for x in v)
                else f"{v!r} must be a list of strings"
            ),
            list(DEFAULT_BLOCK_MARKERS),
        )
        selectors = m.get("block_selectors", _css_list, list(DEFAULT_BLOCK_SELECTORS))
        fields_node = m.node_of("fields")
        if not isinstance(fields_node, MappingNode) or not fields_node.value:
            ctx.problem(_join(path, "fields"), "must map at least one field name to its rule", fields_node)
            continue
        fields = {}
        for field_key, field_value in fields_node.value:
            field_name = _value(field_key)
            field_path = _join(path, f"fields.{field_name}")
            f = _Mapping(ctx, field_value, field_path, "field")
            if not f.valid or not f.require("css", "a CSS selector"):
                continue
            css = f.get("css", _css, None)
            if css is None:
                continue
            fields[str(field_name)] = FieldRule(
                css=css,
                attr=f.get("attr", _text, None),
                all=f.get("all", _flag, False),
                required=f.get("required", _flag, False),
            )
        budget = m.get("wait_budget", _seconds, None)
        rule_sets[name] = RuleSet(
            name=name,
            fields=fields,
            block_markers=tuple(m.lower() for m in markers),
            block_selectors=tuple(selectors),
            wait_budget=float(budget) if budget is not None else None,
            credentials=m.get("credentials", _flag, False),
        )
    return rule_sets


def _read_intake(
    ctx: _Context, node: Node | None, nodes: dict[str, NodeConfig], security: SecurityConfig
) -> IntakeConfig | None:
    if node is None:
        return None
    m = _Mapping(ctx, node, "intake", "intake")
    if not m.valid:
        return None
    for key, what in (("node", "the intake's node"), ("address", "tcp://HOST:PORT"), ("router", "a path")):
        m.require(key, what)
    intake_node = _read_node_ref(ctx, m)
    address = m.get("address", _address, None)
    router = m.get("router", _text, None)
    if address is not None and security.keys is None:
        host = address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
        if not _is_loopback(host):
            ctx.problem(
                "intake.address",
                f"{address} is not a loopback address and security.keys is not set: "
                "remote clients need a key directory of yours (insecure_bind does not apply to the "
                "intake)",
                m.node_of("address"),
            )
    if address is not None and address in {n.address for n in nodes.values()}:
        ctx.problem("intake.address", f"{address} is also a node's address", m.node_of("address"))
    if intake_node is None or address is None or router is None:
        return None
    return IntakeConfig(node=intake_node, address=address, router=router)


RESILIENCE_ACTORS = {
    "breakers": "flotilla.actors.resilience.breakers:BreakerShard",
    "limiter": "flotilla.actors.resilience.limiter:RateLimiter",
    "hold": "flotilla.actors.resilience.hold:HoldMonitor",
    "proxies": "flotilla.actors.resilience.proxies:ProxyPool",
}


def _read_resilience(ctx: _Context, node: Node | None) -> tuple[dict[str, Any], dict[str, Node]] | None:
    """The section's values (paths are checked against the tree later) and their YAML nodes."""
    if node is None:
        return None
    m = _Mapping(ctx, node, "resilience", "resilience")
    if not m.valid:
        return None
    values: dict[str, Any] = {key: m.get(key, _text, None) for key in RESILIENCE_ACTORS}
    values["interval"] = float(m.get("interval", _seconds, DEFAULT_GATE_INTERVAL))
    return values, {key: m.node_of(key) or node for key in RESILIENCE_ACTORS}


def _check_resilience(topology: Topology, values: dict[str, Any], where: dict[str, Node]) -> ResilienceConfig:
    """Each path must name the right kind of actor in the tree (breakers: a pool of them)."""
    from flotilla.nodes.cluster.directory import Directory  # the directory is built from a topology

    directory = Directory(topology)
    problems: list[Problem] = []
    shards = 1
    for key, expected in RESILIENCE_ACTORS.items():
        path = values[key]
        if path is None:
            continue
        line = where[key].start_mark.line + 1
        spec = directory.spec_at(path)
        if key == "breakers":
            if not isinstance(spec, PoolSpec) or spec.worker.actor_name != expected or spec.size < 1:
                problems.append(
                    Problem(
                        f"resilience.{key}",
                        f"{path!r} must be a pool of at least one "
                        f"'breakers' actor in the tree (the root is {topology.root_path})",
                        line,
                    )
                )
            else:
                shards = spec.size
        elif not isinstance(spec, ChildSpec) or spec.actor_name != expected:
            problems.append(
                Problem(
                    f"resilience.{key}",
                    f"{path!r} must be a '{key}' actor in the tree (the root is {topology.root_path})",
                    line,
                )
            )
    if problems:
        raise TopologyError(topology.source, problems)
    return ResilienceConfig(
        values["breakers"], shards, values["limiter"], values["hold"], values["proxies"], values["interval"]
    )


def _check_actor_paths(topology: Topology, actor_paths: list[tuple[str, str, str, Node | None]]) -> None:
    """Each actor argument that names an actor (`PATH_ARGS`) must name one of its kind in the
    tree: a worker of that built-in actor, or a pool of them."""
    from flotilla.nodes.cluster.directory import Directory  # the directory is built from a topology

    directory = Directory(topology)
    kinds: dict[str, str] = {}

    def visit(spec: Spec, path: str) -> None:
        worker = spec.worker if isinstance(spec, PoolSpec) else spec
        if isinstance(worker, ChildSpec):
            kinds[path] = worker.actor_name
        for child in spec.children if isinstance(spec, SupervisorSpec) else ():
            visit(child, f"{path}/{child.id}")

    visit(topology.tree, topology.root_path)
    problems = []
    for where, path, kind, node in actor_paths:
        expected = BUILTIN_ACTORS.get(kind, kind)
        spec = directory.spec_at(path)
        worker = spec.worker if isinstance(spec, PoolSpec) else spec
        if isinstance(worker, ChildSpec) and worker.actor_name == expected:
            continue
        found = "names nothing in the tree" if spec is None else f"is {spec.actor_name}"
        fitting = [p for p, name in kinds.items() if name == expected]
        hint = difflib.get_close_matches(path, fitting, n=1, cutoff=0.0) if fitting else []
        suggestion = (
            f"; did you mean {hint[0]!r}?" if hint else f"; the tree has none (the root is {topology.root_path})"
        )
        problems.append(
            Problem(
                where,
                f"{path!r} {found}: it must be a worker or a pool of {kind!r}{suggestion}",
                node.start_mark.line + 1 if node is not None else None,
            )
        )
    if problems:
        raise TopologyError(topology.source, problems)


def _read_transport(ctx: _Context, node: Node | None) -> TransportConfig:
    m = _Mapping(ctx, node, "transport", "transport")
    interval = m.get("heartbeat_interval", _seconds, DEFAULT_HEARTBEAT_INTERVAL)
    timeout = m.get("heartbeat_timeout", _seconds, DEFAULT_HEARTBEAT_TIMEOUT)
    if timeout <= interval:
        ctx.problem(
            "transport.heartbeat_timeout",
            f"{timeout!r} must be greater than heartbeat_interval ({interval!r}), ideally 3 to 5 times it",
            m.node_of("heartbeat_timeout") or node,
        )
    return TransportConfig(
        heartbeat_interval=float(interval),
        heartbeat_timeout=float(timeout),
        max_message_bytes=m.get(
            "max_message_bytes", _int_at_least(1024, MAX_MESSAGE_BYTES_LIMIT), DEFAULT_MAX_MESSAGE_BYTES
        ),
        high_water_mark=m.get("high_water_mark", _int_at_least(1, MAX_HWM), DEFAULT_HWM),
        backlog=m.get("backlog", _int_at_least(1000, MAX_BACKLOG), DEFAULT_BACKLOG),
        node_wait=float(m.get("node_wait", _seconds, DEFAULT_NODE_WAIT)),
    )


def parse_topology(
    text: str, source: str = "<topology>", base: Path | None = None, *, import_actors: bool = True
) -> Topology:
    """Validate a topology document; raise `TopologyError` listing every problem. Relative
    paths in it (the key directory) are taken from `base` (default: the current directory).
    With `import_actors` false, actors named `package.module:Class` are checked by form only
    and their modules are not imported (nothing of theirs runs; their args are not checked)."""
    try:
        document = guarded_compose(text)
    except YamlRefused as exc:
        raise TopologyError(source, [Problem("", exc.message, exc.line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = min(mark.line + 1, text.count("\n") + 1) if mark is not None else None  # libyaml: EOF is a line on
        raise TopologyError(source, [Problem("", f"not valid YAML: {getattr(exc, 'problem', exc)}", line)]) from None
    ctx = _Context(import_actors)
    top = _Mapping(ctx, document, "", "topology")
    if document is None or not top.valid:
        if document is None:
            ctx.problem("", "the topology is empty; it needs 'nodes' and 'tree'", None)
        raise TopologyError(source, ctx.problems)
    cluster = top.get("cluster", _name, "flotilla")
    top.require("nodes", "at least one node")
    nodes = _read_nodes(ctx, top.node_of("nodes")) if top.has("nodes") else {}
    ctx.node_names = set(nodes)
    tree: SupervisorSpec | None = None
    if top.require("tree", "the root supervisor"):
        body = _Mapping(ctx, top.node_of("tree"), "tree", "supervisor")
        if body.valid:
            root_id = body.get("id", _name, "root")
            tree = _read_supervisor(
                ctx, body, root_id, restart="permanent", shutdown="infinity", node=_read_node_ref(ctx, body)
            )
    base = base or Path.cwd()
    data_dir = (base / top.get("data_dir", _text, "data")).resolve()
    unusable = _unusable_dir(data_dir)
    if unusable:
        ctx.problem("data_dir", unusable, top.node_of("data_dir"))
    security = _read_security(ctx, top.node_of("security"), nodes, base)
    security = _read_operators(ctx, top.node_of("operators"), top.node_of("eval_operators"), nodes, security)
    security = _read_clients(ctx, top.node_of("clients"), nodes, security)
    egress = _read_egress(ctx, top.node_of("egress"))
    rules = _read_rules(ctx, top.node_of("rules"))
    intake = _read_intake(ctx, top.node_of("intake"), nodes, security)
    transport = _read_transport(ctx, top.node_of("transport"))
    resilience = _read_resilience(ctx, top.node_of("resilience"))
    if ctx.problems or tree is None:
        problems = sorted(ctx.problems, key=lambda p: (p.line is None, p.line or 0))
        raise TopologyError(source, problems or [Problem("tree", "is invalid")])
    topology = Topology(
        cluster=cluster,
        nodes=nodes,
        tree=tree,
        source=source,
        security=security,
        transport=transport,
        data_dir=data_dir,
        rules=rules,
        intake=intake,
        egress=egress,
    )
    if intake is not None:
        from flotilla.nodes.cluster.directory import Directory  # the directory is built from a topology

        directory = Directory(topology)
        line = top.node_of("intake").start_mark.line + 1  # type: ignore[union-attr]
        if directory.spec_at(intake.router) is None:
            raise TopologyError(
                source,
                [
                    Problem(
                        "intake.router",
                        f"{intake.router!r} is not a path of the tree (the root is {topology.root_path})",
                        line,
                    )
                ],
            )
        if directory.whereis(intake.router) != intake.node:
            raise TopologyError(
                source,
                [
                    Problem(
                        "intake.router",
                        f"{intake.router} runs on "
                        f"{directory.whereis(intake.router)}, not on the intake's node "
                        f"{intake.node}: they share the journal file",
                        line,
                    )
                ],
            )
    _check_actor_paths(topology, ctx.actor_paths)
    if resilience is not None:
        topology = dataclasses.replace(topology, resilience=_check_resilience(topology, *resilience))
    return topology


def _unusable_dir(path: Path) -> str:
    """Why the node could not keep its data under `path`, or ''."""
    if any(path == Path(root) or Path(root) in path.parents for root in FORBIDDEN_DATA_DIRS):
        return f"{path} is under {', '.join(FORBIDDEN_DATA_DIRS)}: a data directory must be on a real file system"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{path} cannot be a directory: {existing} is a file"
    return ""


def load_topology(path: str | Path, *, import_actors: bool = True) -> Topology:
    """Read and validate the topology file at `path` (`import_actors`: see `parse_topology`)."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_TOPOLOGY_BYTES:
            raise TopologyError(source, [Problem("", f"is {size} bytes; the limit is {MAX_TOPOLOGY_BYTES}")])
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(source, [Problem("", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise TopologyError(source, [Problem("", f"is not UTF-8 text: {exc.reason}")]) from None
    return parse_topology(text, source, base=Path(path).resolve().parent, import_actors=import_actors)


def reference_markdown() -> str:
    """The key tables of docs/topology.md, generated from `SECTIONS`."""
    parts = []
    for section, fields in SECTIONS.items():
        parts.append(f"### `{section}`\n\n| key | type | default | meaning |\n|---|---|---|---|")
        for key, f in fields.items():
            parts.append(f"| `{key}` | {f.type} | {f.default} | {f.doc} |")
        parts.append("")
    return "\n".join(parts)


def write_reference(doc: Path) -> None:
    """Replace the generated tables in `doc` (between the reference markers)."""
    text = doc.read_text(encoding="utf-8")
    begin, end = "<!-- reference:begin -->\n", "<!-- reference:end -->"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    doc.write_text(f"{head}{begin}{reference_markdown()}\n{end}{tail}", encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--reference"]:
        print(reference_markdown())
    elif len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_reference(Path(sys.argv[2]))
    else:
        print("usage: python -m flotilla.nodes.config.topology --reference | --write docs/topology.md", file=sys.stderr)
        sys.exit(2)
