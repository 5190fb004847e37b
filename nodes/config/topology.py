"""Load and validate `supervisor_tree.yaml` into supervisor specs.

Every problem is collected, not only the first, and each names its YAML path and line:
``supervisor_tree.yaml:14: tree.children[2].restart: 'permant' is not one of permanent,
transient, temporary``. Unknown keys are errors. The keys of each section, their types and
defaults are declared once, in `flotilla.nodes.config.schema`; the reader
(`flotilla.nodes.config.reader`) takes its defaults from there, and `reference_markdown()`
renders them for docs/topology.md (a test keeps the two in step).

This module is the public entry: `load_topology`, `parse_topology` and what they return.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from flotilla.actors.core.child_spec import DEFAULT_RESTART, DEFAULT_SUPERVISOR_SHUTDOWN, SupervisorSpec
from flotilla.nodes.config.checks import check_name, check_text, unusable_dir
from flotilla.nodes.config.model import (
    EgressConfig,
    IntakeConfig,
    NodeConfig,
    ResilienceConfig,
    SecurityConfig,
    Topology,
    TransportConfig,
)
from flotilla.nodes.config.problems import Problem, TopologyError
from flotilla.nodes.config.reader import (
    read_clients,
    read_egress,
    read_failover,
    read_intakes,
    read_journal,
    read_node_ref,
    read_nodes,
    read_operators,
    read_resilience,
    read_retention,
    read_rules,
    read_security,
    read_supervisor,
    read_transport,
)
from flotilla.nodes.config.reference import reference_markdown, write_reference
from flotilla.nodes.config.tree_paths import (
    check_actor_paths,
    check_intake_count,
    check_intake_router,
    check_resilience,
)
from flotilla.nodes.config.walker import Context, YamlMapping
from flotilla.nodes.config.yaml_guard import YamlRefused
from flotilla.nodes.config.yaml_guard import compose as guarded_compose

__all__ = [
    "DEFAULT_TOPOLOGY",
    "MAX_TOPOLOGY_BYTES",
    "EgressConfig",
    "IntakeConfig",
    "NodeConfig",
    "Problem",
    "ResilienceConfig",
    "SecurityConfig",
    "Topology",
    "TopologyError",
    "TransportConfig",
    "load_topology",
    "parse_topology",
    "reference_markdown",
    "write_reference",
]

DEFAULT_TOPOLOGY = "supervisor_tree.yaml"
MAX_TOPOLOGY_BYTES = 256 * 1024
"""A topology file larger than this is refused before parsing (a large one is a few tens of
KB). What bounds the time `check` takes is the number of values (`MAX_YAML_NODES`): 12,000
take about 2 s on a busy machine, most of it in PyYAML."""


def parse_topology(
    text: str,
    source: str = "<topology>",
    base: Path | None = None,
    *,
    import_actors: bool = True,
    import_builtins: bool = True,
) -> Topology:
    """Validate a topology document; raise `TopologyError` listing every problem. Relative
    paths in it (the key directory) are taken from `base` (default: the current directory).
    With `import_actors` false, actors named `package.module:Class` are checked by form only
    and their modules are not imported (nothing of theirs runs; their args are not checked).
    With `import_builtins` false too, the built-in actors are taken by name alone (their args
    unchecked): what a client of a running cluster needs, without importing the fetcher's HTTP
    stack."""
    try:
        document = guarded_compose(text)
    except YamlRefused as exc:
        raise TopologyError(source, [Problem("", exc.message, exc.line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = min(mark.line + 1, text.count("\n") + 1) if mark is not None else None  # libyaml: EOF is a line on
        raise TopologyError(source, [Problem("", f"not valid YAML: {getattr(exc, 'problem', exc)}", line)]) from None
    ctx = Context(import_actors, import_actors or import_builtins)
    top = YamlMapping(ctx, document, "", "topology")
    if document is None or not top.valid:
        if document is None:
            ctx.problem("", "the topology is empty; it needs 'nodes' and 'tree'", None)
        raise TopologyError(source, ctx.problems)
    cluster = top.get("cluster", check_name)
    top.require("nodes", "at least one node")
    nodes = read_nodes(ctx, top.node_of("nodes")) if top.has("nodes") else {}
    ctx.node_names = set(nodes)
    tree: SupervisorSpec | None = None
    if top.require("tree", "the root supervisor"):
        body = YamlMapping(ctx, top.node_of("tree"), "tree", "supervisor")
        if body.valid:
            root_id = body.get("id", check_name)
            tree = read_supervisor(
                ctx,
                body,
                root_id,
                restart=DEFAULT_RESTART,
                shutdown=DEFAULT_SUPERVISOR_SHUTDOWN,
                node=read_node_ref(ctx, body),
            )
    base = base or Path.cwd()
    data_dir = (base / top.get("data_dir", check_text)).resolve()
    unusable = unusable_dir(data_dir)
    if unusable:
        ctx.problem("data_dir", unusable, top.node_of("data_dir"))
    captures_value = top.get("captures", check_text)
    captures = (base / captures_value).resolve() if captures_value else None
    unusable = unusable_dir(captures) if captures is not None else ""
    if unusable:
        ctx.problem("captures", unusable, top.node_of("captures"))
    security = read_security(ctx, top.node_of("security"), nodes, base)
    security = read_operators(ctx, top.node_of("operators"), top.node_of("eval_operators"), nodes, security)
    security = read_clients(ctx, top.node_of("clients"), nodes, security)
    egress = read_egress(ctx, top.node_of("egress"))
    rules = read_rules(ctx, top.node_of("rules"))
    intakes = read_intakes(ctx, top.node_of("intake"), nodes, security)
    transport = read_transport(ctx, top.node_of("transport"))
    resilience = read_resilience(ctx, top.node_of("resilience"))
    failover = read_failover(ctx, top.node_of("failover"), tree.node if tree is not None else None)
    journal = read_journal(ctx, top.node_of("journal"), base)
    retention = read_retention(ctx, top.node_of("retention"))
    if failover is not None and len(failover.candidates) > 1 and (journal is None or journal.backend == "sqlite"):
        ctx.problem(
            "failover.candidates",
            "failover between nodes needs a PostgreSQL journal (journal: postgresql://...): a SQLite "
            "journal is one node's file, so only that node can own the tree",
            top.node_of("failover"),
        )
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
        intakes=tuple(intake for intake, _, _ in intakes),
        egress=egress,
        failover=failover,
        journal=journal,
        retention=retention,
        captures=captures,
    )
    where = [(path, yaml_node.start_mark.line + 1) for _, yaml_node, path in intakes]
    for (intake, _, _), (path, line) in zip(intakes, where, strict=True):
        check_intake_router(topology, intake, path, line)
    check_intake_count(topology, where)
    check_actor_paths(topology, ctx.actor_paths)
    if resilience is not None:
        topology = dataclasses.replace(topology, resilience=check_resilience(topology, *resilience))
    return topology


def rule_set(topology: Topology, chosen: str | None) -> str:
    """The rule set a command means: `chosen`, else the topology's only one. Raises
    ValueError saying what to do when that cannot be decided."""
    if chosen:
        return chosen
    names = sorted(topology.rules)
    if len(names) == 1:
        return names[0]
    if not names:
        raise ValueError(f"{topology.source}: the topology has no rule sets (rules:)")
    raise ValueError(
        f"{topology.source}: the topology has {len(names)} rule sets ({', '.join(names)}): choose one with --rules"
    )


def load_topology(path: str | Path, *, import_actors: bool = True, import_builtins: bool = True) -> Topology:
    """Read and validate the topology file at `path` (`import_actors`, `import_builtins`: see
    `parse_topology`)."""
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
    return parse_topology(
        text, source, base=Path(path).resolve().parent, import_actors=import_actors, import_builtins=import_builtins
    )


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--reference"]:
        print(reference_markdown())
    elif len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_reference(Path(sys.argv[2]))
    else:
        print("usage: python -m flotilla.nodes.config.topology --reference | --write docs/topology.md", file=sys.stderr)
        sys.exit(2)
