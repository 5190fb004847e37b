"""`flotilla check`: validate a topology and print its supervision tree."""

from __future__ import annotations

import argparse
from typing import Any

from flotilla.actors.core.child_spec import Backoff, ChildSpec, PoolSpec, Spec, SupervisorFlags, SupervisorSpec
from flotilla.nodes.cli.common import (
    EXIT_USAGE,
    default_topology,
    load_or_report,
)
from flotilla.nodes.config.topology import DEFAULT_TOPOLOGY, Topology


def _seconds(value: float | str) -> str:
    return f"{value:g}s" if isinstance(value, (int, float)) else str(value)


def _flags_text(flags: SupervisorFlags) -> str:
    text = f"intensity {flags.intensity} in {flags.period:g}s"
    backoff: Backoff | None = flags.backoff
    if backoff is not None:
        text += f", backoff {backoff.min:g}-{backoff.max:g}s"
    return text


def _describe(spec: Spec) -> str:
    if isinstance(spec, ChildSpec):
        return f"worker {spec.actor_name} ({spec.restart}, shutdown {_seconds(spec.shutdown)})"
    if isinstance(spec, PoolSpec):
        w = spec.worker
        return (
            f"pool x{spec.size} of {w.actor_name} ({spec.restart}; replicas {w.restart}, "
            f"shutdown {_seconds(w.shutdown)}; {_flags_text(spec.flags)})"
        )
    return f"supervisor {spec.flags.strategy} ({spec.restart}; {_flags_text(spec.flags)})"


def render_tree(topology: Topology, node: str) -> list[str]:
    """The tree as indented lines, one per child, with each subtree's node."""
    placement = topology.subtree_nodes()
    lines = [f"{node}/{topology.tree.id}  {_describe(topology.tree)}"]

    def walk(spec: SupervisorSpec, prefix: str, path: str) -> None:
        for index, child in enumerate(spec.children):
            last = index == len(spec.children) - 1
            child_path = f"{path}/{child.id}"
            where = placement.get(child_path)
            on_node = f"  [node {where}]" if where and where != placement[path] else ""
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{child.id}  {_describe(child)}{on_node}")
            if isinstance(child, SupervisorSpec):
                walk(child, prefix + ("   " if last else "│  "), child_path)

    walk(topology.tree, "", topology.tree.id)
    return lines


def describe_journal(topology: Topology) -> str:
    """Where the topology's jobs are kept, and where the password comes from (never itself)."""
    journal = topology.journal
    if journal is None:
        return f"SQLite in {topology.data_dir}/<node>/journal.sqlite"
    if journal.path is not None:
        return f"SQLite in {journal.path}"
    secret = (
        f"password from ${journal.password_env}"
        if journal.password_env
        else f"password from {journal.password_file}"
        if journal.password_file
        else "no password"
    )
    return f"PostgreSQL at {journal.where} ({secret}); routers are woken by NOTIFY"


def cmd_check(args: argparse.Namespace) -> int:
    topology = load_or_report(args.topology, import_actors=not args.no_import)
    if topology is None:
        return EXIT_USAGE
    nodes = ", ".join(topology.nodes)
    print(
        f"{topology.source}: valid; cluster {topology.cluster}, "
        f"{len(topology.nodes)} node{'s' if len(topology.nodes) != 1 else ''} ({nodes})"
    )
    for node in topology.nodes.values():
        print(f"  node {node.name}" + (f": {node.description}" if node.description else ""))
    security = topology.security
    if security.plaintext:
        print("node links: PLAINTEXT (security.plaintext): any local user can pose as a node")
    else:
        where = security.keys or f"{topology.data_dir / 'keys'} (generated on first start)"
        print(f"node links: CURVE, keys in {where}")
    for line in render_tree(topology, topology.root_node):
        print(line)
    failover = topology.failover
    if failover is not None:
        print(
            f"singletons: owned by one of {', '.join(failover.candidates)} at a time (lease {failover.lease:g} s, "
            f"failback {failover.failback})"
        )
    if topology.intakes:
        clients = ", ".join(topology.security.clients) or "none"
        operators = ", ".join([*topology.security.operators, "the local user"])
        served = ", ".join(f"{intake.address} on {intake.node}" for intake in topology.intakes)
        print(f"intake: {served}, CURVE; clients: {clients}; operators: {operators}")
    print(f"journal: {describe_journal(topology)}")
    allowed = ", ".join(topology.egress.allow)
    print("egress: public addresses only, never the cluster's own" + (f"; also {allowed}" if allowed else ""))
    resilience = topology.resilience
    if resilience is not None:
        parts = [
            f"breakers {resilience.breakers} ({resilience.shards} shards)" if resilience.breakers else "",
            f"limiter {resilience.limiter}" if resilience.limiter else "",
            f"hold {resilience.hold}" if resilience.hold else "",
            f"proxies {resilience.proxies}" if resilience.proxies else "direct connections",
        ]
        print(
            f"resilience: {', '.join(p for p in parts if p)}; every node runs a gate "
            f"(<node>/services/gate, reporting every {resilience.interval:g} s)"
        )
    return 0


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    check = commands.add_parser("check", help="validate a topology and print its tree")
    check.add_argument(
        "topology",
        nargs="?",
        default=default_topology(),
        help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )
    check.add_argument(
        "--no-import",
        action="store_true",
        help="check actors named package.module:Class by form only, without importing their "
        "modules (so none of their code runs); their args are then not checked",
    )
    check.set_defaults(handler=cmd_check)
