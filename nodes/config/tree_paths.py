"""Checks of paths in a topology that name actors of its tree: the intake's router, the
`resilience` section's actors, and actor arguments that name other actors (`PATH_ARGS`).

They run on a topology whose sections are valid, and raise `TopologyError` with the problems.
"""

from __future__ import annotations

import difflib
from typing import Any

from yaml.nodes import Node

from flotilla.actors.catalog import BUILTIN_ACTORS
from flotilla.actors.core.child_spec import ChildSpec, PoolSpec, Spec, SupervisorSpec
from flotilla.nodes.config.model import IntakeConfig, ResilienceConfig, Topology
from flotilla.nodes.config.problems import Problem, TopologyError

RESILIENCE_ACTORS = {
    "breakers": "flotilla.actors.resilience.breakers:BreakerShard",
    "limiter": "flotilla.actors.resilience.limiter:RateLimiter",
    "hold": "flotilla.actors.resilience.hold:HoldMonitor",
    "proxies": "flotilla.actors.resilience.proxies:ProxyPool",
}
"""The actor each path of the `resilience` section must name."""


def check_intake_router(topology: Topology, intake: IntakeConfig, path: str, line: int) -> None:
    """The intake's router must be a path of the tree, on the intake's node when they share a
    SQLite journal (with PostgreSQL, anywhere: NOTIFY wakes it); `path` and `line` are the
    intake section's (``intake`` or ``intake[i]``)."""
    from flotilla.nodes.config.directory import Directory  # the directory is built from a topology

    directory = Directory(topology)
    if directory.spec_at(intake.router) is None:
        raise TopologyError(
            topology.source,
            [
                Problem(
                    f"{path}.router",
                    f"{intake.router!r} is not a path of the tree (the root is {topology.root_path})",
                    line,
                )
            ],
        )
    if directory.whereis(intake.router) != intake.node and not topology.journal_is_shared:
        raise TopologyError(
            topology.source,
            [
                Problem(
                    f"{path}.router",
                    f"{intake.router} runs on "
                    f"{directory.whereis(intake.router)}, not on the intake's node "
                    f"{intake.node}: they share the journal file",
                    line,
                )
            ],
        )


def check_intake_count(topology: Topology, where: list[tuple[str, int]]) -> None:
    """More than one intake needs a journal every node reaches (`Topology.journal_is_shared`):
    each SQLite journal is one node's file, and intakes on two of them would take two sets of
    jobs. `where` holds each intake's path and line, in order."""
    if len(topology.intakes) > 1 and not topology.journal_is_shared:
        path, line = where[1]
        raise TopologyError(
            topology.source,
            [Problem(path, "several intakes need a PostgreSQL journal (journal: postgresql://...)", line)],
        )


def check_resilience(topology: Topology, values: dict[str, Any], where: dict[str, Node]) -> ResilienceConfig:
    """Each path must name the right kind of actor in the tree (breakers: a pool of them)."""
    from flotilla.nodes.config.directory import Directory  # the directory is built from a topology

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
        breakers=values["breakers"],
        shards=shards,
        limiter=values["limiter"],
        hold=values["hold"],
        proxies=values["proxies"],
        interval=values["interval"],
    )


def check_actor_paths(topology: Topology, actor_paths: list[tuple[str, str, str, Node | None]]) -> None:
    """Each actor argument that names an actor (`PATH_ARGS`) must name one of its kind in the
    tree: a worker of that built-in actor, or a pool of them."""
    from flotilla.nodes.config.directory import Directory  # the directory is built from a topology

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
