"""The topology schema is the one place of every default: the reader fills in exactly the
schema's defaults, the specs built with no arguments agree with them, and the docs show them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import msgspec

from flotilla.actors.core.child_spec import Backoff, ChildSpec, PoolSpec, SupervisorFlags, SupervisorSpec
from flotilla.actors.demo.flaky import FlakyWorker
from flotilla.actors.pipeline.rules import FieldRule, RuleSet
from flotilla.actors.resilience.gate import Gate
from flotilla.nodes.config.reference import key_rows, shown
from flotilla.nodes.config.schema import FIRST_PORT, SECTIONS, Section, default_of
from flotilla.nodes.config.topology import Topology, parse_topology

BARE = "nodes: {alpha: {}}\ntree: {}\n"
"""Every section left out."""

EMPTY_SECTIONS = """
nodes: {alpha: {}}
tree:
  backoff: {}
  children:
    - {id: w, actor: flaky}
    - {id: s, supervisor: {}}
    - {id: p, pool: {actor: flaky}}
rules: {r: {fields: {f: {css: p}}}}
security: {}
transport: {}
resilience: {}
egress: {}
failover: {candidates: [alpha]}
journal: {url: "postgresql://fleet@db/jobs"}
retention: {}
"""
"""Every section present with only its required keys."""

Read = Callable[[Topology, Topology], Any]
"""Where the reader put a key's value: from the bare topology or the one of empty sections."""


def worker(t: Topology) -> ChildSpec:
    spec = t.tree.children[0]
    assert isinstance(spec, ChildSpec)
    return spec


def supervisor(t: Topology) -> SupervisorSpec:
    spec = t.tree.children[1]
    assert isinstance(spec, SupervisorSpec)
    return spec


def pool(t: Topology) -> PoolSpec:
    spec = t.tree.children[2]
    assert isinstance(spec, PoolSpec)
    return spec


def backoff(t: Topology) -> Backoff:
    assert t.tree.flags.backoff is not None
    return t.tree.flags.backoff


def field_rule(t: Topology) -> FieldRule:
    return t.rules["r"].fields["f"]


READ: dict[tuple[str, str], Read] = {
    ("topology", "cluster"): lambda bare, full: bare.cluster,
    ("topology", "data_dir"): lambda bare, full: bare.data_dir.name,
    ("topology", "captures"): lambda bare, full: bare.captures,
    ("topology", "rules"): lambda bare, full: bare.rules,
    ("topology", "intake"): lambda bare, full: bare.intakes or None,
    ("topology", "operators"): lambda bare, full: bare.security.operators,
    ("topology", "clients"): lambda bare, full: bare.security.clients,
    ("topology", "eval_operators"): lambda bare, full: bare.security.eval_operators,
    ("topology", "resilience"): lambda bare, full: bare.resilience,
    ("topology", "failover"): lambda bare, full: bare.failover,
    ("failover", "failback"): lambda bare, full: full.failover and full.failover.failback,
    ("failover", "lease"): lambda bare, full: full.failover and full.failover.lease,
    ("topology", "journal"): lambda bare, full: bare.journal,
    ("journal", "password_env"): lambda bare, full: full.journal.password_env,
    ("journal", "password_file"): lambda bare, full: full.journal.password_file,
    ("node", "description"): lambda bare, full: bare.nodes["alpha"].description,
    ("node", "shell"): lambda bare, full: bare.nodes["alpha"].shell,
    ("node", "metrics"): lambda bare, full: bare.nodes["alpha"].metrics,
    ("security", "keys"): lambda bare, full: full.security.keys,
    ("security", "plaintext"): lambda bare, full: full.security.plaintext,
    ("security", "insecure_bind"): lambda bare, full: full.security.insecure_bind,
    ("supervisor", "id"): lambda bare, full: bare.tree.id,
    ("supervisor", "strategy"): lambda bare, full: supervisor(full).flags.strategy,
    ("supervisor", "intensity"): lambda bare, full: supervisor(full).flags.intensity,
    ("supervisor", "period"): lambda bare, full: supervisor(full).flags.period,
    ("supervisor", "backoff"): lambda bare, full: supervisor(full).flags.backoff,
    ("supervisor", "node"): lambda bare, full: bare.tree.node,
    ("supervisor", "children"): lambda bare, full: bare.tree.children,
    ("child", "args"): lambda bare, full: worker(full).args,
    ("child", "restart"): lambda bare, full: worker(full).restart,
    ("child", "shutdown"): lambda bare, full: worker(full).shutdown,
    ("child", "start_timeout"): lambda bare, full: worker(full).start_timeout,
    ("child", "node"): lambda bare, full: supervisor(full).node,
    ("child", "nodes"): lambda bare, full: pool(full).replica_nodes or None,
    ("pool", "size"): lambda bare, full: pool(full).size,
    ("pool", "args"): lambda bare, full: pool(full).worker.args,
    ("pool", "restart"): lambda bare, full: pool(full).worker.restart,
    ("pool", "shutdown"): lambda bare, full: pool(full).worker.shutdown,
    ("pool", "start_timeout"): lambda bare, full: pool(full).worker.start_timeout,
    ("pool", "intensity"): lambda bare, full: pool(full).flags.intensity,
    ("pool", "period"): lambda bare, full: pool(full).flags.period,
    ("pool", "backoff"): lambda bare, full: pool(full).flags.backoff,
    ("resilience", "breakers"): lambda bare, full: full.resilience and full.resilience.breakers,
    ("resilience", "limiter"): lambda bare, full: full.resilience and full.resilience.limiter,
    ("resilience", "hold"): lambda bare, full: full.resilience and full.resilience.hold,
    ("resilience", "proxies"): lambda bare, full: full.resilience and full.resilience.proxies,
    ("resilience", "interval"): lambda bare, full: full.resilience and full.resilience.interval,
    ("egress", "allow"): lambda bare, full: full.egress.allow,
    ("rule set", "block_markers"): lambda bare, full: full.rules["r"].block_markers,
    ("rule set", "block_selectors"): lambda bare, full: full.rules["r"].block_selectors,
    ("rule set", "credentials"): lambda bare, full: full.rules["r"].credentials,
    ("rule set", "wait_budget"): lambda bare, full: full.rules["r"].wait_budget,
    ("rule set", "capture"): lambda bare, full: full.rules["r"].capture,
    ("field", "attr"): lambda bare, full: field_rule(full).attr,
    ("field", "all"): lambda bare, full: field_rule(full).all,
    ("field", "required"): lambda bare, full: field_rule(full).required,
    ("field", "strip"): lambda bare, full: field_rule(full).strip,
    ("field", "regex"): lambda bare, full: field_rule(full).regex,
    ("field", "urljoin"): lambda bare, full: field_rule(full).urljoin,
    ("field", "type"): lambda bare, full: field_rule(full).type,
    ("backoff", "min"): lambda bare, full: backoff(full).min,
    ("backoff", "max"): lambda bare, full: backoff(full).max,
    ("backoff", "random_factor"): lambda bare, full: backoff(full).random_factor,
    ("backoff", "reset_after"): lambda bare, full: backoff(full).reset_after,
    ("transport", "heartbeat_interval"): lambda bare, full: full.transport.heartbeat_interval,
    ("transport", "heartbeat_timeout"): lambda bare, full: full.transport.heartbeat_timeout,
    ("transport", "max_message_bytes"): lambda bare, full: full.transport.max_message_bytes,
    ("transport", "high_water_mark"): lambda bare, full: full.transport.high_water_mark,
    ("transport", "backlog"): lambda bare, full: full.transport.backlog,
    ("transport", "node_wait"): lambda bare, full: full.transport.node_wait,
    ("retention", "stored"): lambda bare, full: full.retention.stored,
    ("retention", "dead"): lambda bare, full: full.retention.dead,
    ("retention", "results"): lambda bare, full: full.retention.results,
    ("retention", "every"): lambda bare, full: full.retention.every,
    ("retention", "batch"): lambda bare, full: full.retention.batch,
}
"""Where to find, in what the reader built, the value of every key that has a default."""

NOT_VALUES = {
    ("child", "actor"): "one of actor, supervisor, pool",
    ("child", "supervisor"): "one of actor, supervisor, pool",
    ("child", "pool"): "one of actor, supervisor, pool",
    ("node", "address"): "depends on the node's place",
}
"""Keys whose default is no value of theirs (with why); checked on their own below."""


def optional_keys() -> list[tuple[str, str]]:
    return [
        (section, f.name)
        for section, struct in SECTIONS.items()
        for f in msgspec.structs.fields(struct)
        if not f.required
    ]


def comparable(value: Any) -> Any:
    """Lists and tuples alike; a default `[]`/`{}` as the reader's empty value."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def test_the_reader_fills_in_exactly_the_schemas_defaults() -> None:
    bare = parse_topology(BARE, "bare.yaml")
    full = parse_topology(EMPTY_SECTIONS, "full.yaml")
    checked = 0
    for section, key in optional_keys():
        default = default_of(section, key)
        if (section, key) in NOT_VALUES:
            continue
        if isinstance(default, Section):
            # A section left out reads as the section present and empty.
            assert getattr(bare, key) == getattr(full, key), f"{section}.{key}"
            continue
        assert (section, key) in READ, f"the test does not know where the reader puts {section}.{key}"
        found = READ[section, key](bare, full)
        assert comparable(found) == comparable(default), f"{section}.{key}: reader {found!r}, schema {default!r}"
        checked += 1
    assert checked == len(READ)
    assert bare.nodes["alpha"].address == f"tcp://127.0.0.1:{FIRST_PORT}"
    assert supervisor(full).shutdown == pool(full).shutdown == SupervisorSpec("x").shutdown
    assert supervisor(full).restart == pool(full).restart == default_of("child", "restart")


def test_specs_built_without_arguments_match_what_the_reader_builds_from_no_keys() -> None:
    full = parse_topology(EMPTY_SECTIONS, "full.yaml")
    assert worker(full) == ChildSpec("w", FlakyWorker)
    assert supervisor(full) == SupervisorSpec("s")
    assert pool(full) == PoolSpec("p", ChildSpec("replica", FlakyWorker))
    assert full.tree.flags == SupervisorFlags(backoff=Backoff())
    assert full.rules["r"] == RuleSet("r", {"f": FieldRule("p")})
    gate_interval = inspect.signature(Gate).parameters["interval"].default
    assert full.resilience is not None and full.resilience.interval == gate_interval


def test_the_reference_shows_each_default_the_schema_holds() -> None:
    for section in SECTIONS:
        for (key, _, default_text, _), f in zip(
            key_rows(section), msgspec.structs.fields(SECTIONS[section]), strict=True
        ):
            if f.required:
                assert default_text == "required", f"{section}.{key}"
            elif "{default}" in (template := f.type.__metadata__[0].extra["default"]):
                assert shown(default_of(section, key)) in default_text, f"{section}.{key}"
            else:
                assert template == default_text
