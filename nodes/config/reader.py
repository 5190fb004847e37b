"""Reading the sections of a topology into specs and settings.

Each reader walks one section (`flotilla.nodes.config.walker`), records every problem in
the context and returns what it could build. Keys left out take the schema's defaults
(`flotilla.nodes.config.schema`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from flotilla.actors.catalog import BUILTIN_ACTORS, ActorNotFound, resolve_actor
from flotilla.actors.core.child_spec import (
    DEFAULT_SUPERVISOR_SHUTDOWN,
    RESTART_TYPES,
    STRATEGIES,
    Backoff,
    ChildSpec,
    PoolSpec,
    RestartType,
    Spec,
    Strategy,
    SupervisorFlags,
    SupervisorSpec,
)
from flotilla.actors.pipeline.field_processors import FIELD_TYPES
from flotilla.actors.pipeline.journal_target import JournalConfigError, JournalTarget, is_postgres_url, url_problem
from flotilla.actors.pipeline.pruning import Retention
from flotilla.actors.pipeline.rules import FieldRule, RuleSet
from flotilla.nodes.config.actor_args import check_args, path_args
from flotilla.nodes.config.checks import (
    age_seconds,
    check_address,
    check_age,
    check_css,
    check_css_list,
    check_egress_entries,
    check_flag,
    check_fraction,
    check_host_port,
    check_name,
    check_regex,
    check_seconds,
    check_shutdown,
    check_strip,
    check_text,
    int_at_least,
    is_loopback,
    one_of,
)
from flotilla.nodes.config.model import (
    EgressConfig,
    FailoverConfig,
    IntakeConfig,
    NodeConfig,
    SecurityConfig,
    TransportConfig,
)
from flotilla.nodes.config.schema import (
    FAILBACK,
    FIRST_PORT,
    MAX_BACKLOG,
    MAX_HWM,
    MAX_MESSAGE_BYTES_LIMIT,
    MAX_POOL_SIZE,
)
from flotilla.nodes.config.tree_paths import RESILIENCE_ACTORS
from flotilla.nodes.config.walker import Context, YamlMapping, join, kind_of, value_of

POOL_STRATEGY: Strategy = "one_for_one"
"""A pool restarts its replicas one by one (`PoolSpec` requires it; not a key of `pool`)."""


def read_backoff(ctx: Context, node: Node | None, path: str) -> Backoff | None:
    if node is None:
        return None
    m = YamlMapping(ctx, node, path, "backoff")
    if not m.valid:
        return None
    low = m.get("min", check_seconds)
    high = m.get("max", check_seconds)
    factor = m.get("random_factor", check_fraction)
    reset_after = m.get("reset_after", check_seconds)
    if high < low:
        ctx.problem(join(path, "max"), f"{high!r} must be >= min ({low!r})", m.node_of("max") or node)
        return None
    return Backoff(
        min=float(low),
        max=float(high),
        random_factor=float(factor),
        reset_after=float(reset_after) if reset_after is not None else None,
    )


def read_flags(ctx: Context, m: YamlMapping, *, strategy: bool = True) -> SupervisorFlags:
    return SupervisorFlags(
        strategy=m.get("strategy", one_of(STRATEGIES)) if strategy else POOL_STRATEGY,
        intensity=m.get("intensity", int_at_least(0)),
        period=float(m.get("period", check_seconds)),
        backoff=read_backoff(ctx, m.node_of("backoff"), join(m.path, "backoff")),
    )


def read_node_ref(ctx: Context, m: YamlMapping) -> str | None:
    node = m.get("node", check_name)
    if node is not None and node not in ctx.node_names:
        known = ", ".join(sorted(ctx.node_names)) or "none"
        ctx.problem(
            join(m.path, "node"), f"{node!r} is not a node of this topology (nodes: {known})", m.node_of("node")
        )
        return None
    return node


def read_node_list(ctx: Context, m: YamlMapping, key: str = "nodes") -> tuple[str, ...]:
    node = m.node_of(key)
    value = value_of(node) if node is not None else None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        ctx.problem(join(m.path, key), "must be a non-empty list of node names", node)
        return ()
    unknown = [v for v in value if v not in ctx.node_names]
    if unknown:
        ctx.problem(
            join(m.path, key),
            f"{', '.join(map(repr, unknown))} not a node of this topology (nodes: {', '.join(sorted(ctx.node_names))})",
            node,
        )
        return ()
    return tuple(value)


def read_actor(ctx: Context, m: YamlMapping, args: dict[str, Any]) -> type | None:
    reference = m.get("actor", check_text)
    if reference is None:
        return None
    if reference in BUILTIN_ACTORS and not ctx.import_builtins:
        return _unimported_actor(ctx, m, BUILTIN_ACTORS[reference])
    if not ctx.import_actors and reference not in BUILTIN_ACTORS:
        return _unimported_actor(ctx, m, reference)
    try:
        actor = resolve_actor(reference)
    except ActorNotFound as exc:
        ctx.problem(join(m.path, "actor"), str(exc), m.node_of("actor"))
        return None
    args_node = m.node_of("args")
    key_nodes = {key.value: key for key, _ in args_node.value} if isinstance(args_node, MappingNode) else {}
    problems = check_args(actor, args, reference)
    for problem in problems:
        path = join(m.path, "args") if problem.key is None else join(m.path, f"args.{problem.key}")
        ctx.problem(path, problem.message, key_nodes.get(problem.key) or args_node or m.node_of("actor"))
    for key, (target, kind) in path_args(actor, args).items():
        ctx.actor_paths.append((join(m.path, f"args.{key}"), target, kind, key_nodes.get(key) or args_node))
    return None if problems else actor


def _unimported_actor(ctx: Context, m: YamlMapping, reference: str) -> type | None:
    """A stand-in class named like `reference`, checked by form only (`check --no-import`;
    built-ins for clients, which never run them)."""
    module, _, name = reference.partition(":")
    if not (module and name and all(part.isidentifier() for part in (*module.split("."), *name.split(".")))):
        ctx.problem(
            join(m.path, "actor"),
            f"unknown actor {reference!r}: not a built-in "
            f"({', '.join(sorted(BUILTIN_ACTORS))}) and not of the form package.module:Class",
            m.node_of("actor"),
        )
        return None
    from flotilla.actors.core.actor import Actor

    return type(name.rpartition(".")[2], (Actor,), {"__module__": module, "__qualname__": name})


def read_args(ctx: Context, m: YamlMapping) -> dict[str, Any]:
    node = m.node_of("args")
    if node is None:
        return {}
    value = value_of(node)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        ctx.problem(join(m.path, "args"), "must be a mapping with string keys", node)
        return {}
    return value


def read_supervisor(
    ctx: Context, m: YamlMapping, child_id: str, *, restart: RestartType, shutdown: Any, node: str | None
) -> SupervisorSpec | None:
    flags = read_flags(ctx, m)
    children = read_children(ctx, m.node_of("children"), join(m.path, "children"))
    if children is None:
        return None
    try:
        return SupervisorSpec(
            id=child_id, children=tuple(children), flags=flags, restart=restart, shutdown=shutdown, node=node
        )
    except ValueError as exc:
        ctx.problem(m.path, str(exc), m.node)
        return None


def read_pool(
    ctx: Context,
    node: Node | None,
    path: str,
    child_id: str,
    *,
    restart: RestartType,
    shutdown: Any,
    pool_node: str | None,
    replica_nodes: tuple[str, ...],
) -> PoolSpec | None:
    m = YamlMapping(ctx, node, path, "pool")
    if not m.valid or not m.require("actor", "the replicas' actor"):
        return None
    args = read_args(ctx, m)
    actor = read_actor(ctx, m, args)
    size = m.get("size", int_at_least(0, MAX_POOL_SIZE))
    worker_restart = m.get("restart", one_of(RESTART_TYPES))
    worker_shutdown = m.get("shutdown", check_shutdown(False))
    start_timeout = m.get("start_timeout", check_seconds)
    flags = read_flags(ctx, m, strategy=False)
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


def read_child(ctx: Context, node: Node, path: str) -> Spec | None:
    m = YamlMapping(ctx, node, path, "child")
    if not m.valid:
        return None
    kinds = [k for k in ("actor", "supervisor", "pool") if m.has(k)]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        ctx.problem(path, f"needs exactly one of actor, supervisor, pool ({found})", node)
        return None
    kind = kinds[0]
    child_id = m.get("id", check_name) if m.require("id", "the child's path segment") else None
    restart = m.get("restart", one_of(RESTART_TYPES))
    is_worker = kind == "actor"
    if is_worker:
        shutdown = m.get("shutdown", check_shutdown(False))
    else:
        shutdown = m.get("shutdown", check_shutdown(True), DEFAULT_SUPERVISOR_SHUTDOWN)
    child_node = read_node_ref(ctx, m)
    replica_nodes = read_node_list(ctx, m) if m.has("nodes") else ()
    if m.has("nodes") and kind != "pool":
        ctx.problem(
            join(path, "nodes"), "only pools spread replicas over nodes; use node: for one node", m.node_of("nodes")
        )
    for worker_only in ("args", "start_timeout"):
        if m.has(worker_only) and not is_worker:
            ctx.problem(
                join(path, worker_only), f"belongs inside {kind}: (it applies to workers)", m.node_of(worker_only)
            )
    if kind == "actor":
        args = read_args(ctx, m)
        actor = read_actor(ctx, m, args)
        start_timeout = m.get("start_timeout", check_seconds)
        if actor is None or child_id is None:
            return None
        if child_node is not None:
            ctx.problem(
                join(path, "node"),
                "only supervisors and pools are placed on nodes; move the worker under one",
                m.node_of("node"),
            )
            return None
        return ChildSpec(
            id=child_id, actor=actor, args=args, restart=restart, shutdown=shutdown, start_timeout=float(start_timeout)
        )
    body_path = join(path, kind)
    if kind == "pool":
        pool = read_pool(
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
    body = YamlMapping(ctx, m.node_of("supervisor"), body_path, "supervisor")
    if not body.valid:
        return None
    for misplaced in ("id", "node"):
        if body.has(misplaced):
            ctx.problem(
                join(body_path, misplaced), f"belongs on the child entry ({path}.{misplaced})", body.node_of(misplaced)
            )
    spec = read_supervisor(ctx, body, child_id or "?", restart=restart, shutdown=shutdown, node=child_node)
    return spec if child_id is not None else None


def read_children(ctx: Context, node: Node | None, path: str) -> list[Spec] | None:
    if node is None:
        return []
    if not isinstance(node, SequenceNode):
        if isinstance(node, ScalarNode) and value_of(node) is None:
            return []
        ctx.problem(path, f"must be a list of children, not {kind_of(node)}", node)
        return None
    children: list[Spec] = []
    seen: dict[str, int] = {}
    ok = True
    for index, item in enumerate(node.value):
        item_path = f"{path}[{index}]"
        spec = read_child(ctx, item, item_path)
        if spec is None:
            ok = False
            continue
        if spec.id in seen:
            ctx.problem(join(item_path, "id"), f"{spec.id!r} is already the id of {path}[{seen[spec.id]}]", item)
            ok = False
            continue
        seen[spec.id] = index
        children.append(spec)
    return children if ok else None


def read_nodes(ctx: Context, node: Node | None) -> dict[str, NodeConfig]:
    if not isinstance(node, MappingNode) or not node.value:
        ctx.problem("nodes", "must be a mapping with at least one node, e.g. 'nodes: {alpha: {}}'", node)
        return {}
    nodes: dict[str, NodeConfig] = {}
    seen_addresses: dict[str, str] = {}
    for index, (key_node, value_node) in enumerate(node.value):
        name = value_of(key_node)
        path = f"nodes.{name}"
        error = check_name(name)
        if error is not None:
            ctx.problem(path, error, key_node)
            continue
        if name in nodes:
            ctx.problem(path, "duplicate node", key_node)
            continue
        m = YamlMapping(ctx, value_node, path, "node")
        address = m.get("address", check_address, f"tcp://127.0.0.1:{FIRST_PORT + index}")
        if address in seen_addresses:
            ctx.problem(
                join(path, "address"),
                f"{address} is already the address of node {seen_addresses[address]}",
                m.node_of("address") or key_node,
            )
        seen_addresses[address] = name
        metrics = m.get("metrics", check_host_port)
        if metrics is not None and metrics in seen_addresses:
            ctx.problem(
                join(path, "metrics"),
                f"{metrics} is already used by node {seen_addresses[metrics]}",
                m.node_of("metrics"),
            )
        seen_addresses[metrics or address] = name
        shell = m.get("shell", check_address)
        if shell is not None and shell in seen_addresses:
            ctx.problem(
                join(path, "shell"), f"{shell} is already used by node {seen_addresses[shell]}", m.node_of("shell")
            )
        seen_addresses[shell or address] = name
        nodes[name] = NodeConfig(
            name=name, address=address, description=m.get("description", check_text), metrics=metrics, shell=shell
        )
    return nodes


def read_names(ctx: Context, node: Node | None, key: str) -> list[str]:
    if node is None:
        return []
    value = value_of(node)
    if not isinstance(value, list) or any(check_name(v) is not None for v in value):
        what = "client" if key == "clients" else "operator"
        ctx.problem(key, f"must be a list of {what} names, e.g. [alice, bob]", node)
        return []
    return list(value)


LOCAL_KEY_NAME = "local"
"""The local user's key in the key directory (nodes/intake/auth.py); no client may be named so."""


def read_clients(
    ctx: Context, node: Node | None, nodes: dict[str, NodeConfig], security: SecurityConfig
) -> SecurityConfig:
    """The intake's `clients`: names distinct from nodes, operators and the local user, each
    with its public key in the key directory (when that directory exists already)."""
    names = read_names(ctx, node, "clients")
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


def read_egress(ctx: Context, node: Node | None) -> EgressConfig:
    m = YamlMapping(ctx, node, "egress", "egress")
    allow = m.get("allow", check_egress_entries)
    return EgressConfig(allow=tuple(str(entry) for entry in allow))


def read_operators(
    ctx: Context, node: Node | None, eval_node: Node | None, nodes: dict[str, NodeConfig], security: SecurityConfig
) -> SecurityConfig:
    """The `operators` list, checked with the nodes' TCP shells: a node refuses to open one
    without CURVE keys and named operators whose public keys are there."""
    names = read_names(ctx, node, "operators")
    evaluators = read_names(ctx, eval_node, "eval_operators")
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


def read_security(ctx: Context, node: Node | None, nodes: dict[str, NodeConfig], base: Path) -> SecurityConfig:
    m = YamlMapping(ctx, node, "security", "security")
    keys_value = m.get("keys", check_text)
    insecure = m.get("insecure_bind", lambda v: None if isinstance(v, bool) else f"{v!r} must be true or false")
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
    plaintext = m.get("plaintext", check_flag)
    if plaintext and keys is not None:
        ctx.problem("security.plaintext", "plaintext and keys exclude each other", m.node_of("plaintext"))
    for name, config in nodes.items():
        if plaintext and not is_loopback(config.host):
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
        if config.metrics and not insecure and not is_loopback(config.metrics.rpartition(":")[0].strip("[]")):
            ctx.problem(
                f"nodes.{name}.metrics",
                f"{config.metrics} is not a loopback address: metrics are "
                "plain HTTP without authentication (set security.insecure_bind: true to expose them "
                "knowingly)",
                None,
            )
    return SecurityConfig(keys=keys, insecure_bind=insecure, plaintext=plaintext)


def read_rules(ctx: Context, node: Node | None) -> dict[str, RuleSet]:
    if node is None or (isinstance(node, ScalarNode) and value_of(node) is None):
        return {}
    if not isinstance(node, MappingNode):
        ctx.problem("rules", f"must be a mapping of rule-set names, not {kind_of(node)}", node)
        return {}
    rule_sets = {}
    for key_node, value_node in node.value:
        name = value_of(key_node)
        path = f"rules.{name}"
        if check_name(name) is not None:
            ctx.problem(path, check_name(name), key_node)  # type: ignore[arg-type]
            continue
        m = YamlMapping(ctx, value_node, path, "rule set")
        if not m.valid or not m.require("fields", "at least one field"):
            continue
        markers = m.get(
            "block_markers",
            lambda v: (
                None
                if isinstance(v, list) and all(isinstance(x, str) for x in v)
                else f"{v!r} must be a list of strings"
            ),
        )
        selectors = m.get("block_selectors", check_css_list)
        fields_node = m.node_of("fields")
        if not isinstance(fields_node, MappingNode) or not fields_node.value:
            ctx.problem(join(path, "fields"), "must map at least one field name to its rule", fields_node)
            continue
        fields = {}
        for field_key, field_value in fields_node.value:
            field_name = value_of(field_key)
            field_path = join(path, f"fields.{field_name}")
            f = YamlMapping(ctx, field_value, field_path, "field")
            if not f.valid or not f.require("css", "a CSS selector"):
                continue
            css = f.get("css", check_css)
            if css is None:
                continue
            fields[str(field_name)] = FieldRule(
                css=css,
                attr=f.get("attr", check_text),
                all=f.get("all", check_flag),
                required=f.get("required", check_flag),
                strip=f.get("strip", check_strip),
                regex=f.get("regex", check_regex),
                urljoin=f.get("urljoin", check_flag),
                type=f.get("type", one_of(FIELD_TYPES)),
            )
        budget = m.get("wait_budget", check_seconds)
        rule_sets[name] = RuleSet(
            name=name,
            fields=fields,
            block_markers=tuple(m.lower() for m in markers),
            block_selectors=tuple(selectors),
            wait_budget=float(budget) if budget is not None else None,
            credentials=m.get("credentials", check_flag),
            capture=m.get("capture", check_flag),
        )
    return rule_sets


def read_intakes(
    ctx: Context, node: Node | None, nodes: dict[str, NodeConfig], security: SecurityConfig
) -> tuple[tuple[IntakeConfig, Node, str], ...]:
    """The `intake` section: one mapping (path ``intake``) or a list of them (``intake[i]``),
    each on its own node at its own address. Each intake comes with its YAML node and path,
    for the checks made once the tree is known."""
    if node is None:
        return ()
    if not isinstance(node, SequenceNode):
        intake = read_intake(ctx, node, "intake", nodes, security)
        return ((intake, node, "intake"),) if intake is not None else ()
    if not node.value:
        ctx.problem("intake", "must be a mapping or a non-empty list of them (one per node)", node)
        return ()
    found: list[tuple[IntakeConfig, Node, str]] = []
    node_of: dict[str, str] = {}
    address_of: dict[str, str] = {}
    for index, item in enumerate(node.value):
        path = f"intake[{index}]"
        intake = read_intake(ctx, item, path, nodes, security)
        if intake is None:
            continue
        entries = {k.value: v for k, v in item.value} if isinstance(item, MappingNode) else {}
        if intake.node in node_of:
            ctx.problem(
                join(path, "node"),
                f"{intake.node!r} already serves {node_of[intake.node]}: one intake per node",
                entries.get("node", item),
            )
            continue
        if intake.address in address_of:
            ctx.problem(
                join(path, "address"),
                f"{intake.address} is already the address of {address_of[intake.address]}",
                entries.get("address", item),
            )
            continue
        node_of[intake.node] = path
        address_of[intake.address] = path
        found.append((intake, item, path))
    return tuple(found)


def read_intake(
    ctx: Context, node: Node, path: str, nodes: dict[str, NodeConfig], security: SecurityConfig
) -> IntakeConfig | None:
    m = YamlMapping(ctx, node, path, "intake")
    if not m.valid:
        return None
    for key, what in (("node", "the intake's node"), ("address", "tcp://HOST:PORT"), ("router", "a path")):
        m.require(key, what)
    intake_node = read_node_ref(ctx, m)
    address = m.get("address", check_address)
    router = m.get("router", check_text)
    if address is not None and security.keys is None:
        host = address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
        if not is_loopback(host):
            ctx.problem(
                join(path, "address"),
                f"{address} is not a loopback address and security.keys is not set: "
                "remote clients need a key directory of yours (insecure_bind does not apply to the "
                "intake)",
                m.node_of("address"),
            )
    if address is not None and address in {n.address for n in nodes.values()}:
        ctx.problem(join(path, "address"), f"{address} is also a node's address", m.node_of("address"))
    if intake_node is None or address is None or router is None:
        return None
    return IntakeConfig(node=intake_node, address=address, router=router)


def read_resilience(ctx: Context, node: Node | None) -> tuple[dict[str, Any], dict[str, Node]] | None:
    """The section's values (paths are checked against the tree later) and their YAML nodes."""
    if node is None:
        return None
    m = YamlMapping(ctx, node, "resilience", "resilience")
    if not m.valid:
        return None
    values: dict[str, Any] = {key: m.get(key, check_text) for key in RESILIENCE_ACTORS}
    values["interval"] = float(m.get("interval", check_seconds))
    return values, {key: m.node_of(key) or node for key in RESILIENCE_ACTORS}


def read_failover(ctx: Context, node: Node | None, tree_node: str | None) -> FailoverConfig | None:
    """The `failover` section; the tree's own `node`, if set, must be its first candidate."""
    if node is None:
        return None
    m = YamlMapping(ctx, node, "failover", "failover")
    if not m.valid or not m.require("candidates", "the nodes that may own the tree"):
        return None
    candidates = read_node_list(ctx, m, "candidates")
    if len(set(candidates)) != len(candidates):
        ctx.problem("failover.candidates", "names a node twice", m.node_of("candidates"))
        return None
    if candidates and tree_node is not None and tree_node != candidates[0]:
        ctx.problem(
            "failover.candidates",
            f"the tree is placed on {tree_node!r}: with failover, leave out the tree's `node` "
            f"(its owner is the first candidate that is up, {candidates[0]!r} by preference)",
            m.node_of("candidates"),
        )
    failback = m.get("failback", one_of(FAILBACK))
    lease = m.get("lease", check_seconds)
    if not candidates or failback is None or lease is None:
        return None
    return FailoverConfig(candidates=candidates, failback=failback, lease=float(lease))


def read_retention(ctx: Context, node: Node | None) -> Retention:
    """The `retention` section: ages (seconds, `7d`, or keep), how often and how much to prune."""
    m = YamlMapping(ctx, node, "retention", "retention")
    ages = {name: m.get(name, check_age) for name in ("stored", "dead", "results")}
    return Retention(
        **{name: age_seconds(value) for name, value in ages.items()},
        every=float(m.get("every", check_seconds)),
        batch=m.get("batch", int_at_least(1, 100_000)),
    )


def read_transport(ctx: Context, node: Node | None) -> TransportConfig:
    m = YamlMapping(ctx, node, "transport", "transport")
    interval = m.get("heartbeat_interval", check_seconds)
    timeout = m.get("heartbeat_timeout", check_seconds)
    if timeout <= interval:
        ctx.problem(
            "transport.heartbeat_timeout",
            f"{timeout!r} must be greater than heartbeat_interval ({interval!r}), ideally 3 to 5 times it",
            m.node_of("heartbeat_timeout") or node,
        )
    return TransportConfig(
        heartbeat_interval=float(interval),
        heartbeat_timeout=float(timeout),
        max_message_bytes=m.get("max_message_bytes", int_at_least(1024, MAX_MESSAGE_BYTES_LIMIT)),
        high_water_mark=m.get("high_water_mark", int_at_least(1, MAX_HWM)),
        backlog=m.get("backlog", int_at_least(1000, MAX_BACKLOG)),
        node_wait=float(m.get("node_wait", check_seconds)),
    )


def check_variable_name(value: Any) -> str | None:
    if isinstance(value, str) and value.isidentifier() and value.isascii():
        return None
    return f"{value!r} must be the name of an environment variable (letters, digits, _)"


def read_journal(ctx: Context, node: Node | None, base: Path) -> JournalTarget | None:
    """The `journal` key: a URL or path, or a mapping with the URL and where its password is.
    The password itself is never read here (a node reads it when it opens the journal)."""
    if node is None or (isinstance(node, ScalarNode) and value_of(node) is None):
        return None
    password_env = password_file = None
    where: Node = node
    if isinstance(node, MappingNode):
        m = YamlMapping(ctx, node, "journal", "journal")
        if not m.valid or not m.require("url", "postgresql://USER@HOST:PORT/DBNAME or a SQLite path"):
            return None
        url = m.get("url", check_text)
        password_env = m.get("password_env", check_variable_name)
        file_value = m.get("password_file", check_text)
        password_file = (base / file_value).resolve() if file_value else None
        where = m.node_of("url") or node
        path = "journal.url"
    else:
        url = value_of(node)
        path = "journal"
        if not isinstance(url, str):
            ctx.problem(
                "journal",
                f"must be a URL, a path or a mapping {{url, password_env, password_file}}, not {kind_of(node)}",
                node,
            )
            return None
    if not url:
        ctx.problem(path, "must not be empty", where)
        return None
    if is_postgres_url(url):
        problem = url_problem(url)
        if problem is not None:
            ctx.problem(path, problem, where)
            return None
        target_url: str | None = url
        target_path = None
    else:
        target_url, target_path = None, (base / url).resolve()
    try:
        return JournalTarget(path=target_path, url=target_url, password_env=password_env, password_file=password_file)
    except JournalConfigError as exc:
        ctx.problem("journal", str(exc), node)
        return None
