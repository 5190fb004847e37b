"""The sections of `supervisor_tree.yaml`: their keys, types, defaults and meanings, once.

Each section is a msgspec Struct whose fields are the section's keys, in the order the docs
list them. A field's default is the key's default; its `Meta` carries the meaning
(`description`) and, in `extra`, the type as the docs write it and, where the default needs
words, how the docs show it (``{default}`` stands for the value). A field without a default
is a required key.

Defaults of what a supervisor runs belong to the specs (`flotilla.actors.core.child_spec`),
those of extraction rules (and the router's wait budget they fall back to) to
`flotilla.actors.pipeline.rules`, the gate's interval to the gate: the schema reads them from
there (`spec_default`) and owns only the rest. The reader
(`flotilla.nodes.config.reader`) takes every default from here (`default_of`), and
`reference_markdown()` renders the tables of docs/topology.md from here.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import msgspec

from flotilla.actors.catalog import BUILTIN_ACTORS
from flotilla.actors.core.child_spec import (
    RESTART_TYPES,
    STRATEGIES,
    Backoff,
    ChildSpec,
    PoolSpec,
    SupervisorFlags,
    SupervisorSpec,
)
from flotilla.actors.pipeline.field_processors import FIELD_TYPES, URL_ATTRIBUTES
from flotilla.actors.pipeline.pruning import Retention
from flotilla.actors.pipeline.rules import CHALLENGE_MAX_WORDS, DEFAULT_WAIT_BUDGET, FieldRule, RuleSet
from flotilla.actors.resilience.gate import DEFAULT_INTERVAL as GATE_INTERVAL

FIRST_PORT = 7101
"""Node `i` (0-based, in the order of `nodes`) listens on ``127.0.0.1:FIRST_PORT + i`` unless
its `address` says otherwise."""
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


def key(type_text: str, description: str, default_text: str = "{default}") -> msgspec.Meta:
    """A key's documentation: its type as the docs write it, what it means, and how the docs
    show its default (``{default}`` is replaced by the value)."""
    return msgspec.Meta(description=description, extra={"type": type_text, "default": default_text})


def spec_default(cls: type, name: str) -> Any:
    """The default of field `name` of the dataclass `cls`, which owns it."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise LookupError(f"{cls.__name__} has no field {name!r} with a default")


class Section(msgspec.Struct, kw_only=True, frozen=True):
    """A section of the topology (a YAML mapping); its fields are the keys."""


class BackoffSection(Section, kw_only=True, frozen=True):
    min: Annotated[float, key("seconds > 0", "Delay before the first restart in a row.")] = spec_default(Backoff, "min")
    max: Annotated[float, key("seconds ≥ min", "Cap on the doubling delay.")] = spec_default(Backoff, "max")
    random_factor: Annotated[float, key("0..1", "Each delay is stretched by up to this fraction, at random.")] = (
        spec_default(Backoff, "random_factor")
    )
    reset_after: Annotated[
        float | None,
        key("seconds > 0", "Running this long makes the next restart the first in a row again.", "(min + max) / 2"),
    ] = spec_default(Backoff, "reset_after")


class NodeSection(Section, kw_only=True, frozen=True):
    address: Annotated[
        str | None,
        key(
            "tcp://HOST:PORT",
            "Where the node listens for its peers (CURVE, see `security`). With "
            "`security.plaintext` HOST must be a loopback address.",
            f"`tcp://127.0.0.1:<{FIRST_PORT} + index>`",
        ),
    ] = None
    description: Annotated[str, key("string", "Free text shown by `flotilla check`.")] = ""
    shell: Annotated[
        str | None,
        key(
            "tcp://HOST:PORT",
            "A TCP listener for remote shells, besides the node's IPC socket. Needs "
            "`security.keys` and `operators`: only those operators' keys are accepted.",
            "{default}: the IPC socket only",
        ),
    ] = None
    metrics: Annotated[
        str | None,
        key(
            "HOST:PORT",
            "Where the node serves Prometheus metrics over HTTP (`/metrics`). Loopback "
            "only unless `security.insecure_bind` is true.",
            "{default}: no metrics endpoint",
        ),
    ] = None


class SecuritySection(Section, kw_only=True, frozen=True):
    keys: Annotated[
        str | None,
        key(
            "directory",
            "Key directory made by `flotilla keys generate`: `<node>.key` (public) and "
            "`<node>.key_secret` (0600) for every node. Without it the keys are "
            "generated on first start in `<data_dir>/keys/` (one host). Either way node "
            "links use CURVE and accept only the cluster's own public keys. Relative "
            "to the topology file.",
        ),
    ] = None
    plaintext: Annotated[
        bool,
        key(
            "boolean",
            "Node links without CURVE (neither encrypted nor authenticated: any "
            "local user can pose as a node). Loopback addresses only; every node "
            "logs `transport.plaintext` at start.",
        ),
    ] = False
    insecure_bind: Annotated[
        bool,
        key(
            "boolean",
            "Allow metrics, and an intake without keys, on a non-loopback "
            "address (that traffic is then neither encrypted nor "
            "authenticated). Never node links in plaintext.",
        ),
    ] = False


class TransportSection(Section, kw_only=True, frozen=True):
    heartbeat_interval: Annotated[
        float, key("seconds > 0", "How often every node sends a heartbeat to every peer.")
    ] = 0.2
    heartbeat_timeout: Annotated[
        float,
        key("seconds > interval", "Silence after which a peer is declared down (killed, frozen or cut off alike)."),
    ] = 1.0
    max_message_bytes: Annotated[
        int,
        key(
            f"integer 1024..{MAX_MESSAGE_BYTES_LIMIT}",
            "Largest envelope (ZeroMQ MAXMSGSIZE); a peer sending more is "
            "disconnected by ZeroMQ, and a local send of more raises.",
        ),
    ] = 1 << 20
    high_water_mark: Annotated[
        int, key(f"integer 1..{MAX_HWM}", "ZeroMQ send/receive queue per peer, in messages.")
    ] = 10_000
    backlog: Annotated[
        int,
        key(
            f"integer 1000..{MAX_BACKLOG}",
            "Envelopes a sender may be ahead of the network per peer; past it the "
            "sender waits (up to 5 s) for room, then its envelope fails.",
        ),
    ] = 50_000
    node_wait: Annotated[
        float,
        key(
            "seconds > 0",
            "Deprecated and ignored (accepted so that older topologies load): a supervisor no "
            "longer waits for the node of a remote child while it starts; the child waits for "
            "its node and starts when it joins (nodes start in any order).",
        ),
    ] = 30.0


class ChildSection(Section, kw_only=True, frozen=True):
    id: Annotated[str, key("name", "Path segment of the child, unique among its siblings.")]
    actor: Annotated[
        str | None,
        key(
            "actor reference",
            "A worker: a built-in name ("
            + ", ".join(sorted(BUILTIN_ACTORS))
            + ") or `package.module:Class` (a subclass of `flotilla.actors.Actor`).",
            "one of actor, supervisor, pool",
        ),
    ] = None
    supervisor: Annotated[
        SupervisorSection | None,
        key("supervisor (without `id`)", "A nested supervisor.", "one of actor, supervisor, pool"),
    ] = None
    pool: Annotated[
        PoolSection | None,
        key("pool", "A pool of identical workers under their own supervisor.", "one of actor, supervisor, pool"),
    ] = None
    args: Annotated[dict[str, Any], key("mapping", "Keyword arguments of the actor's constructor (workers only).")] = (
        msgspec.field(default_factory=lambda: spec_default(ChildSpec, "args"))
    )
    restart: Annotated[
        str,
        key(
            " \\| ".join(RESTART_TYPES),
            "permanent: always restarted; transient: unless it exits Normal or Shutdown; temporary: never.",
        ),
    ] = spec_default(ChildSpec, "restart")
    shutdown: Annotated[
        float | str,
        key(
            "seconds > 0 \\| brutal_kill \\| infinity",
            "Time to stop before the child is abandoned; `infinity` only for "
            "supervisors and pools, whose own children are bounded.",
            f"{{default}} for workers, `{spec_default(SupervisorSpec, 'shutdown')}` for supervisors and pools",
        ),
    ] = spec_default(ChildSpec, "shutdown")
    start_timeout: Annotated[
        float, key("seconds > 0", "Time `on_start` may take (workers only); the constructor must be quick.")
    ] = spec_default(ChildSpec, "start_timeout")
    node: Annotated[str | None, key("node name", "Node that runs this child.", "the parent's node")] = None
    nodes: Annotated[
        list[str] | None,
        key("list of node names", "Pools only: replica i runs on nodes[i % len(nodes)].", "the pool's node"),
    ] = None


class SupervisorSection(Section, kw_only=True, frozen=True):
    id: Annotated[
        str, key("name", "Path segment of the supervisor.", "{default} for the tree; required for a child")
    ] = "root"
    strategy: Annotated[
        str,
        key(" \\| ".join(STRATEGIES), "Which children restart when one exits and must be restarted."),
    ] = spec_default(SupervisorFlags, "strategy")
    intensity: Annotated[
        int, key("integer ≥ 0", "Restarts allowed within `period`; one more and the supervisor gives up.")
    ] = spec_default(SupervisorFlags, "intensity")
    period: Annotated[float, key("seconds > 0", "Window for `intensity`.")] = spec_default(SupervisorFlags, "period")
    backoff: Annotated[
        BackoffSection | None,
        key("backoff", "Delay restarts with exponential backoff and jitter.", "{default} (restart at once, as OTP)"),
    ] = spec_default(SupervisorFlags, "backoff")
    node: Annotated[
        str | None, key("node name", "Node that runs this subtree.", "the parent's node (the tree: the first node)")
    ] = None
    children: Annotated[list[ChildSection], key("list of child", "Started in order, stopped in reverse order.")] = (
        msgspec.field(default_factory=lambda: list(spec_default(SupervisorSpec, "children")))
    )


class PoolSection(Section, kw_only=True, frozen=True):
    size: Annotated[int, key(f"integer 0..{MAX_POOL_SIZE}", "Replicas started at first; scalable at run time.")] = (
        spec_default(PoolSpec, "size")
    )
    actor: Annotated[str, key("actor reference", "The replicas' actor.")]
    args: Annotated[dict[str, Any], key("mapping", "Keyword arguments for every replica.")] = msgspec.field(
        default_factory=lambda: spec_default(ChildSpec, "args")
    )
    restart: Annotated[str, key(" \\| ".join(RESTART_TYPES), "Restart type of each replica.")] = spec_default(
        ChildSpec, "restart"
    )
    shutdown: Annotated[float | str, key("seconds > 0 \\| brutal_kill", "Shutdown timeout of each replica.")] = (
        spec_default(ChildSpec, "shutdown")
    )
    start_timeout: Annotated[float, key("seconds > 0", "Start timeout of each replica.")] = spec_default(
        ChildSpec, "start_timeout"
    )
    intensity: Annotated[int, key("integer ≥ 0", "As for a supervisor.")] = spec_default(SupervisorFlags, "intensity")
    period: Annotated[float, key("seconds > 0", "As for a supervisor.")] = spec_default(SupervisorFlags, "period")
    backoff: Annotated[BackoffSection | None, key("backoff", "As for a supervisor.")] = spec_default(
        SupervisorFlags, "backoff"
    )


class IntakeSection(Section, kw_only=True, frozen=True):
    node: Annotated[
        str,
        key(
            "node name",
            "The node that serves the intake socket and keeps the journal (`<data_dir>/<node>/journal.sqlite`).",
        ),
    ]
    address: Annotated[
        str,
        key(
            "tcp://HOST:PORT",
            "Where clients connect, always with CURVE. "
            "Loopback only without `security.keys` (whatever `insecure_bind` says): remote "
            "clients need the keys of a key directory you distribute.",
        ),
    ]
    router: Annotated[str, key("path", "The router actor, on the same node: the intake wakes it when jobs arrive.")]


FAILBACK = ("stay", "return")
"""What the tree does when a candidate earlier in the list than its owner comes back."""


class FailoverSection(Section, kw_only=True, frozen=True):
    candidates: Annotated[
        list[str],
        key(
            "list of node names",
            "Nodes that may run the tree's root and every child not placed with `node:` (the "
            "fleet's singletons: router, breakers, limiter, Hold, proxies), in order of "
            "preference. One node at a time owns them, by a lease in the PostgreSQL journal; "
            "when the owner is gone a survivor takes them over. Paths keep the first "
            "candidate's name whichever node runs them.",
        ),
    ]
    failback: Annotated[
        str,
        key(
            " \\| ".join(FAILBACK),
            "When a candidate earlier in the list joins while a later one owns the tree: "
            "`stay` keeps it where it is (no second interruption; move it with a restart), "
            "`return` hands it back (Erlang's takeover).",
        ),
    ] = "stay"
    lease: Annotated[
        float,
        key(
            "seconds > 0",
            "How long an owner's lease lasts without renewal (renewed every quarter of it). "
            "A dead owner is replaced within about this long; an owner that cannot renew "
            "stops acting as owner a quarter of it before its lease ends.",
        ),
    ] = 2.0


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "keep"
    return f"{seconds / 86400:g}d" if seconds % 86400 == 0 else f"{seconds:g}"


class RetentionSection(Section, kw_only=True, frozen=True):
    stored: Annotated[
        float | str | None,
        key(
            "age or keep",
            "How long stored jobs stay in the journal, with their attempts, events and batch "
            "memberships (results stay: see `results`). An age is seconds or a number with "
            "s, m, h or d.",
            f"`{_age_text(Retention.stored)}`",
        ),
    ] = spec_default(Retention, "stored")
    dead: Annotated[
        float | str | None,
        key(
            "age or keep",
            "How long dead and parked jobs (the dead-letter queue) stay before they are deleted.",
            f"`{_age_text(Retention.dead)}`",
        ),
    ] = spec_default(Retention, "dead")
    results: Annotated[
        float | str | None,
        key(
            "age or keep",
            "How long results stay (export them first). A result also keeps a later submission "
            "of its key from storing a second one.",
            f"`{_age_text(Retention.results)}`",
        ),
    ] = spec_default(Retention, "results")
    every: Annotated[float, key("seconds > 0", "How often each router's pruner looks for what to delete.")] = (
        spec_default(Retention, "every")
    )
    batch: Annotated[
        int, key("integer ≥ 1", "Most jobs (and results) deleted per transaction, so none holds the journal long.")
    ] = spec_default(Retention, "batch")


class ResilienceSection(Section, kw_only=True, frozen=True):
    breakers: Annotated[
        str | None,
        key(
            "path of a pool of `breakers`",
            "The breaker shards; a target belongs to shard crc32(target) % pool size.",
            "{default}: no circuit breakers",
        ),
    ] = None
    limiter: Annotated[
        str | None, key("path of a `limiter`", "The fleet's rate limiter.", "{default}: no rate limits")
    ] = None
    hold: Annotated[str | None, key("path of a `hold`", "The Hold monitor.", "{default}: no Hold")] = None
    proxies: Annotated[str | None, key("path of a `proxies`", "The proxy pool.", "{default}: direct connections")] = (
        None
    )
    interval: Annotated[float, key("seconds > 0", "How often each node's gate reports and refreshes its view.")] = (
        GATE_INTERVAL
    )


class EgressSection(Section, kw_only=True, frozen=True):
    allow: Annotated[
        list[str],
        key(
            "list of CIDRs or host names",
            "Addresses (`127.0.0.1`, `10.1.0.0/16`, `::1`) and host names (any address they "
            "resolve to) fetchers may reach although the default policy refuses them. The "
            "cluster's own endpoints stay refused.",
        ),
    ] = []


class JournalSection(Section, kw_only=True, frozen=True):
    url: Annotated[
        str,
        key(
            "postgresql://USER@HOST:PORT/DBNAME or path",
            "The PostgreSQL database the nodes share, or a SQLite file (relative to the topology "
            "file; one host). A password in the URL is refused: give `password_env` or `password_file`.",
        ),
    ]
    password_env: Annotated[
        str | None,
        key(
            "variable name",
            "The environment variable that holds the database's password (a node that opens "
            "the journal refuses to start without it).",
            "{default}: no password (trust, peer or a `.pgpass` file)",
        ),
    ] = None
    password_file: Annotated[
        str | None,
        key(
            "path",
            "A file whose first line is the password: owned by the node's user, mode 0600 or 0400, "
            "else the node refuses it. Relative to the topology file.",
            "{default}",
        ),
    ] = None


class FieldSection(Section, kw_only=True, frozen=True):
    css: Annotated[str, key("CSS selector", "Where the field is on the page.")]
    attr: Annotated[
        str | None, key("attribute name", "Read this attribute instead.", "{default}: the element's text")
    ] = spec_default(FieldRule, "attr")
    all: Annotated[bool, key("boolean", "Take every match (a list) instead of the first.")] = spec_default(
        FieldRule, "all"
    )
    required: Annotated[bool, key("boolean", "A 200 page without it is DRIFT.")] = spec_default(FieldRule, "required")
    strip: Annotated[
        bool | str,
        key(
            "boolean or characters",
            '`true`: whitespace trimmed, and collapsed in text; characters (`"€$ "`): whitespace, then '
            "those characters stripped from both ends; `false`: the value as the page has it.",
        ),
    ] = spec_default(FieldRule, "strip")
    regex: Annotated[
        str | None,
        key(
            "regular expression",
            "Python `re` pattern searched in the value: its first group (or the whole match) becomes "
            "the value; no match, no value. Runs in the parse sandbox, under `parse_timeout`.",
            "{default}",
        ),
    ] = spec_default(FieldRule, "regex")
    urljoin: Annotated[
        bool | None,
        key(
            "boolean",
            "Make the value an absolute URL against the page's `<base href>` or URL (after redirects).",
            f"`true` when `attr` is {' or '.join(f'`{a}`' for a in sorted(URL_ATTRIBUTES))}, else `false`",
        ),
    ] = spec_default(FieldRule, "urljoin")
    type: Annotated[
        str,
        key(
            " \\| ".join(FIELD_TYPES),
            "`int`, `float` or `price` make the value a JSON number (see Extraction rules); one that "
            "does not convert is no value.",
        ),
    ] = spec_default(FieldRule, "type")


class RuleSetSection(Section, kw_only=True, frozen=True):
    fields: Annotated[dict[str, FieldSection], key("mapping of name → field", "The fields to take from a page.")]
    block_markers: Annotated[
        tuple[str, ...],
        key(
            "list of strings",
            "Text (any case) that marks a short 200 page (at most "
            f"{CHALLENGE_MAX_WORDS} words of visible text) as a challenge, in "
            "its title or text: such a page is BLOCKED, not DRIFT. A page with "
            "every required field is never a challenge.",
        ),
    ] = spec_default(RuleSet, "block_markers")
    block_selectors: Annotated[
        tuple[str, ...],
        key(
            "list of CSS selectors",
            "Elements that mark a short 200 page as a challenge "
            "(Cloudflare's challenge form and iframe, Turnstile, "
            "Incapsula, hCaptcha, reCAPTCHA by default).",
            "challenge forms and widgets (docs/resilience.md)",
        ),
    ] = spec_default(RuleSet, "block_selectors")
    credentials: Annotated[
        bool,
        key(
            "boolean",
            "Accept URLs with `user:password@`: the password is sealed with the cluster's "
            "credentials key before it is written, sent only as Basic auth, and shown as "
            "`***` (docs/security.md).",
            "{default}: such URLs are rejected",
        ),
    ] = spec_default(RuleSet, "credentials")
    capture: Annotated[
        bool,
        key(
            "boolean",
            "Keep every 200 page of its jobs, gzip-compressed, under its content hash in the "
            "topology's `captures` directory, so that `flotilla reextract` can apply fixed rules "
            "to the stored results without fetching again (docs/journal.md).",
            "{default}: pages are not kept",
        ),
    ] = spec_default(RuleSet, "capture")
    wait_budget: Annotated[
        float | None,
        key(
            "seconds > 0",
            "How long its jobs may wait behind an open breaker, Hold or a missing proxy "
            "before they end dead (docs/resilience.md).",
            f"the router's `wait_budget` (`{DEFAULT_WAIT_BUDGET:g}`)",
        ),
    ] = spec_default(RuleSet, "wait_budget")


class TopologySection(Section, kw_only=True, frozen=True):
    cluster: Annotated[str, key("name", "Name of the cluster the nodes form.")] = "flotilla"
    nodes: Annotated[
        dict[str, NodeSection],
        key("mapping of name → node", "The nodes of the cluster; at least one. Names are path segments."),
    ]
    tree: Annotated[SupervisorSection, key("supervisor", "The root supervisor and everything under it.")]
    data_dir: Annotated[
        str,
        key(
            "directory",
            "Where nodes keep their files (`<data_dir>/<node>/`) "
            "and `flotilla up` its pid file. Relative to the topology file.",
        ),
    ] = "data"
    captures: Annotated[
        str | None,
        key(
            "directory",
            "Where the pages of rule sets with `capture: true` are kept (created with mode 0700). "
            "Relative to the topology file. The nodes that fetch and the intake node must all "
            "reach it: on several hosts, shared storage (docs/operations.md).",
            "`<data_dir>/pages`",
        ),
    ] = None
    journal: Annotated[
        str | JournalSection | None,
        key(
            "URL, path or journal",
            "Where jobs and results are kept: `postgresql://USER@HOST:PORT/DBNAME` (several "
            "nodes' intakes and routers share it) or a SQLite file; a string is the `url` of a "
            "`journal` mapping (docs/journal.md).",
            "{default}: SQLite in `<data_dir>/<node>/journal.sqlite`",
        ),
    ] = None
    security: Annotated[
        SecuritySection,
        key("security", "CURVE keys for every socket.", "keys generated in `<data_dir>/keys/` on first start"),
    ] = SecuritySection()
    rules: Annotated[
        dict[str, RuleSetSection],
        key("mapping of name → rule set", "Extraction rules jobs refer to by name (see below)."),
    ] = {}
    intake: Annotated[
        IntakeSection | list[IntakeSection] | None,
        key(
            "intake, or a list of them",
            "Where clients submit jobs. A list names one intake per node (distinct nodes and "
            "addresses); clients fail over between them. Several intakes need a journal every "
            "node reaches: the SQLite journal is one node's file, so it allows one.",
            "{default}: no intake socket",
        ),
    ] = None
    transport: Annotated[
        TransportSection, key("transport", "Node-to-node transport settings.", "the defaults below")
    ] = TransportSection()
    operators: Annotated[
        list[str],
        key(
            "list of names",
            "Operators allowed on TCP shells; each one's public key is `<name>.key` in "
            "`security.keys` (`flotilla keys generate DIR --name NAME`).",
        ),
    ] = []
    clients: Annotated[
        list[str],
        key(
            "list of names",
            "Clients allowed on the intake (submit, and read their own jobs and results); "
            "each one's public key is `<name>.key` in the key directory (`security.keys`, "
            "else `<data_dir>/keys`). Operators and the local user (`local.key`) are "
            "always allowed, with control requests too.",
        ),
    ] = []
    egress: Annotated[
        EgressSection,
        key(
            "egress",
            "Where fetchers may connect (docs/security.md).",
            "no private, loopback, link-local, multicast, reserved or metadata address; not the cluster's own",
        ),
    ] = EgressSection()
    eval_operators: Annotated[
        list[str],
        key(
            "list of names",
            "Operators (of `operators`) whose TCP shells may evaluate Python in a "
            "node with `eval EXPR`. Nobody else can, and never over the IPC socket.",
            "{default}: no one",
        ),
    ] = []
    resilience: Annotated[
        ResilienceSection | None,
        key(
            "resilience",
            "The fleet's control actors, which every node's gate reports to.",
            "{default}: no breakers, limits, proxies or Hold",
        ),
    ] = None
    failover: Annotated[
        FailoverSection | None,
        key(
            "failover",
            "Which nodes may own the tree's singletons, and how they hand over (docs/deploy.md).",
            "{default}: the root's node owns them, always",
        ),
    ] = None
    retention: Annotated[
        RetentionSection,
        key(
            "retention",
            "What the journal keeps of jobs that ended, and for how long (docs/journal.md).",
            "the defaults below",
        ),
    ] = RetentionSection()


SECTIONS: dict[str, type[Section]] = {
    "topology": TopologySection,
    "node": NodeSection,
    "security": SecuritySection,
    "transport": TransportSection,
    "supervisor": SupervisorSection,
    "child": ChildSection,
    "pool": PoolSection,
    "intake": IntakeSection,
    "resilience": ResilienceSection,
    "failover": FailoverSection,
    "retention": RetentionSection,
    "egress": EgressSection,
    "journal": JournalSection,
    "rule set": RuleSetSection,
    "field": FieldSection,
    "backoff": BackoffSection,
}
"""Every section by the name problems and the docs give it, in the docs' order."""


_FIELDS: dict[str, dict[str, msgspec.structs.FieldInfo]] = {
    section: {f.name: f for f in msgspec.structs.fields(struct)} for section, struct in SECTIONS.items()
}
"""The keys of every section, looked up once (the reader asks for defaults key by key)."""


def keys_of(section: str) -> list[str]:
    """The keys section `section` accepts, in the docs' order."""
    return list(_FIELDS[section])


def default_of(section: str, name: str) -> Any:
    """The default of key `name` of `section` (None for a required key)."""
    f = _FIELDS[section][name]
    if f.default_factory is not msgspec.NODEFAULT:
        return f.default_factory()
    return None if f.default is msgspec.NODEFAULT else f.default
