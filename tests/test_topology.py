"""Loading supervisor_tree.yaml: valid trees become specs; every problem names path and line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from flotilla.actors import Actor, ChildSpec, PoolSpec, SupervisorSpec
from flotilla.actors.catalog import BUILTIN_ACTORS
from flotilla.actors.demo.flaky import FlakyWorker
from flotilla.actors.pipeline.rules import DEFAULT_BLOCK_SELECTORS
from flotilla.nodes.config.topology import TopologyError, load_topology, parse_topology, reference_markdown

ROOT = Path(__file__).resolve().parent.parent
BUILTINS = ", ".join(sorted(BUILTIN_ACTORS))


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as raised:
        parse_topology(text, "t.yaml")
    return [p.format("t.yaml") for p in raised.value.problems]


def test_the_default_topology_is_valid() -> None:
    topology = load_topology(ROOT / "supervisor_tree.yaml")
    assert topology.cluster == "demo"
    assert list(topology.nodes) == ["alpha", "beta"]
    assert [c.id for c in topology.tree.children] == ["alerts", "resilience", "router", "fetching"]
    assert [intake.router for intake in topology.intakes] == ["alpha/root/router"]
    assert topology.resilience is not None and topology.resilience.shards == 2
    assert set(topology.rules) == {"product"}


def test_a_full_tree_becomes_specs_with_defaults_filled_in() -> None:
    topology = parse_topology("""
nodes: {alpha: {}, beta: {description: spare}}
tree:
  strategy: rest_for_one
  intensity: 1
  period: 2.5
  children:
    - id: w
      actor: tests.helpers:Probe
      restart: transient
      shutdown: brutal_kill
    - id: sub
      node: beta
      restart: temporary
      supervisor:
        strategy: one_for_all
        backoff: {min: 0.5, max: 4}
        children: [{id: x, actor: flaky, args: {crash_rate: 0.5}}]
    - id: pool
      pool: {actor: flaky, size: 3, shutdown: 1}
""")
    tree = topology.tree
    assert (tree.id, tree.flags.strategy, tree.flags.intensity, tree.flags.period) == ("root", "rest_for_one", 1, 2.5)
    worker, sub, pool = tree.children
    assert isinstance(worker, ChildSpec) and worker.restart == "transient" and worker.shutdown == "brutal_kill"
    assert worker.start_timeout == 5.0
    assert isinstance(sub, SupervisorSpec) and sub.node == "beta" and sub.restart == "temporary"
    assert sub.flags.backoff is not None and sub.flags.backoff.healthy_after == 2.25
    assert sub.children[0] == ChildSpec("x", FlakyWorker, {"crash_rate": 0.5})
    assert isinstance(pool, PoolSpec) and pool.size == 3 and pool.worker.shutdown == 1
    assert topology.subtree_nodes() == {
        "root": "alpha",
        "root/sub": "beta",
        "root/w": "alpha",
        "root/sub/x": "beta",
        "root/pool": "alpha",
    }


def test_a_misspelt_restart_type_names_the_path_the_line_and_the_choices() -> None:
    text = (
        "nodes: {a: {}}\ntree:\n  children:\n    - {id: x, actor: flaky}\n    - {id: y, actor: flaky}\n"
        "    - id: z\n      actor: flaky\n      restart: permant\n"
    )
    assert problems(text) == [
        "t.yaml:8: tree.children[2].restart: 'permant' is not one of permanent, "
        "transient, temporary (did you mean 'permanent'?)"
    ]


def test_every_problem_is_reported_not_just_the_first() -> None:
    found = problems("""
nodes: {alpha: {}}
tree:
  strategy: one_for_al
  intensty: 3
  children:
    - id: a
      actor: nope
    - id: b
      actor: ticker
      args: {targett: x}
    - id: c
      pool: {actor: flaky, size: -1}
      node: beta
    - id: d
      actor: flaky
      shutdown: infinity
    - id: e
      supervisor: {children: 3}
""")
    assert found == [
        "t.yaml:4: tree.strategy: 'one_for_al' is not one of one_for_one, one_for_all, rest_for_one "
        "(did you mean 'one_for_all'?)",
        "t.yaml:5: tree.intensty: unknown key; did you mean 'intensity'? "
        "(allowed: id, strategy, intensity, period, backoff, node, children)",
        f"t.yaml:8: tree.children[0].actor: unknown actor 'nope': not a built-in ({BUILTINS}) "
        "and not of the form package.module:Class",
        "t.yaml:11: tree.children[1].args.targett: unknown argument of ticker; did you mean 'target'? "
        "(accepted: target, interval, batch)",
        "t.yaml:11: tree.children[1].args: ticker needs 'target'",
        "t.yaml:13: tree.children[2].pool.size: -1 must be an integer >= 0 and <= 1000",
        "t.yaml:14: tree.children[2].node: 'beta' is not a node of this topology (nodes: alpha)",
        "t.yaml:17: tree.children[3].shutdown: 'infinity' is only allowed for supervisors and pools: "
        "a worker that never stops would hang shutdown",
        "t.yaml:19: tree.children[4].supervisor.children: must be a list of children, not int 3",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "t.yaml: the topology is empty; it needs 'nodes' and 'tree'"),
        ("nodes: [a]\ntree: {}", "t.yaml:1: nodes: must be a mapping with at least one node"),
        ("tree: {}", "t.yaml:1: nodes: is required (at least one node)"),
        ("nodes: {a: {}}\ntree: {}\ntree: {}", "t.yaml:3: tree: duplicate key (the first is on line 2)"),
        (
            "nodes: {a: {}}\ntree: {children: [{id: x}]}",
            "t.yaml:2: tree.children[0]: needs exactly one of actor, supervisor, pool (found none)",
        ),
        (
            "nodes: {a: {}}\ntree: {children: [{id: x, actor: flaky, pool: {actor: flaky}}]}",
            "t.yaml:2: tree.children[0]: needs exactly one of actor, supervisor, pool (found actor, pool)",
        ),
        ("nodes: {a: {}}\ntree: {children: [{actor: flaky}]}", "t.yaml:2: tree.children[0].id: is required"),
        (
            "nodes: {a: {}}\ntree: {children: [{id: x, actor: flaky}, {id: x, actor: tally}]}",
            "t.yaml:2: tree.children[1].id: 'x' is already the id of tree.children[0]",
        ),
        (
            "nodes: {a: {}}\ntree: {children: [{id: 'x/y', actor: flaky}]}",
            "t.yaml:2: tree.children[0].id: 'x/y' must not contain '/'",
        ),
        ("nodes: {a: {}}\ntree: {children: [{id: x, actor: 'os:path'}]}", "is not a subclass of flotilla.actors.Actor"),
        ("nodes: {a: {}}\ntree: {children: [{id: x, actor: 'no.such.module:X'}]}", "cannot import 'no.such.module'"),
        (
            "nodes: {a: {}}\ntree: {children: [{id: x, actor: flaky, start_timeout: 0}]}",
            "start_timeout: 0 must be a number of seconds > 0",
        ),
        ("nodes: {a: {}}\ntree: {period: yes}", "tree.period: True must be a number of seconds > 0"),
        ("nodes: {a: {}}\ntree: {backoff: {min: 2, max: 1}}", "tree.backoff.max: 1 must be >= min (2)"),
        (
            "nodes: {a: {}}\ntree: {children: [{id: s, supervisor: {id: s}}]}",
            "tree.children[0].supervisor.id: belongs on the child entry",
        ),
        (
            "nodes: {a: {}}\ntree: {children: [{id: p, pool: {actor: flaky}, args: {}}]}",
            "tree.children[0].args: belongs inside pool:",
        ),
        ("nodes: {a: {}}\ntree: [1, 2", "t.yaml:2: not valid YAML"),
        (
            "nodes: {a: {}}\ntree: {children: [{id: x, actor: flaky, node: a}]}",
            "only supervisors and pools are placed on nodes",
        ),
    ],
)
def test_each_kind_of_mistake_gets_a_clear_message(text: str, expected: str) -> None:
    assert any(expected in p for p in problems(text)), problems(text)


def test_an_unreadable_file_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(tmp_path / "missing.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TopologyError, match="not UTF-8"):
        load_topology(tmp_path / "binary.yaml")


def test_the_reference_in_the_docs_is_generated_from_the_schema() -> None:
    doc = (ROOT / "docs" / "topology.md").read_text(encoding="utf-8")
    generated = re.search(r"<!-- reference:begin -->\n(.*)<!-- reference:end -->", doc, re.S)
    assert generated is not None, "docs/topology.md lacks the reference markers"
    assert generated.group(1).strip() == reference_markdown().strip(), (
        "docs/topology.md is stale: run `python -m flotilla.nodes.config.topology --write docs/topology.md`"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "nodes: {a: {address: 'tcp://10.0.0.5:7000'}}\nsecurity: {plaintext: true}\ntree: {}",
            "nodes.a.address: tcp://10.0.0.5:7000 is not a loopback address and security.plaintext is set",
        ),
        ("nodes: {a: {address: 'tcp://*:7000'}}\ntree: {}", "name the interface to listen on"),
        ("nodes: {a: {address: 'http://x:1'}}\ntree: {}", "must look like tcp://HOST:PORT"),
        (
            "nodes: {a: {address: 'tcp://127.0.0.1:7000'}, b: {address: 'tcp://127.0.0.1:7000'}}\ntree: {}",
            "nodes.b.address: tcp://127.0.0.1:7000 is already the address of node a",
        ),
        ("nodes: {a: {}}\nsecurity: {keys: no-such-dir}\ntree: {}", "security.keys: "),
        (
            "nodes: {a: {}}\ntransport: {heartbeat_interval: 1, heartbeat_timeout: 1}\ntree: {}",
            "transport.heartbeat_timeout: 1 must be greater than heartbeat_interval",
        ),
        ("nodes: {a: {}}\ntransport: {max_message_bytes: 10}\ntree: {}", "must be an integer >= 1024"),
        (
            "nodes: {a: {}}\ntree: {children: [{id: p, pool: {actor: flaky}, nodes: [zz]}]}",
            "'zz' not a node of this topology",
        ),
        (
            "nodes: {a: {}}\ntree: {children: [{id: w, actor: flaky, nodes: [a]}]}",
            "only pools spread replicas over nodes",
        ),
    ],
)
def test_cluster_settings_are_checked(text: str, expected: str) -> None:
    assert any(expected in p for p in problems(text)), problems(text)


def test_a_public_address_is_allowed_with_keys_or_when_asked_for(tmp_path: Path) -> None:
    from flotilla.nodes.security.keys import generate_keys

    generate_keys(tmp_path / "keys", "a")
    keyed = parse_topology(
        "nodes: {a: {address: 'tcp://10.0.0.5:7000'}}\nsecurity: {keys: keys}\ntree: {}", base=tmp_path
    )
    assert keyed.security.keys == (tmp_path / "keys").resolve()
    insecure = parse_topology("nodes: {a: {address: 'tcp://10.0.0.5:7000'}}\nsecurity: {insecure_bind: true}\ntree: {}")
    assert insecure.security.insecure_bind
    with pytest.raises(TopologyError, match="no public key for node"):
        parse_topology("nodes: {a: {}, b: {}}\nsecurity: {keys: keys}\ntree: {}", base=tmp_path)


def test_nodes_get_loopback_addresses_by_default() -> None:
    topology = parse_topology("nodes: {a: {}, b: {}}\ntree: {}")
    assert [n.address for n in topology.nodes.values()] == ["tcp://127.0.0.1:7101", "tcp://127.0.0.1:7102"]
    assert topology.transport.heartbeat_timeout == 1.0


def test_the_directory_places_paths_by_the_topology() -> None:
    from flotilla.nodes.config.directory import Directory

    topology = parse_topology("""
nodes: {a: {}, b: {}, c: {}}
tree:
  children:
    - {id: local, actor: flaky}
    - {id: sub, node: b, supervisor: {children: [{id: w, actor: flaky}]}}
    - {id: pool, node: c, pool: {actor: flaky, size: 3}, nodes: [a, b]}
""")
    directory = Directory(topology)
    assert directory.whereis("a/root") == "a"
    assert directory.whereis("a/root/local") == "a"
    assert directory.whereis("a/root/sub") == "b"
    assert directory.whereis("a/root/sub/w") == "b"
    assert directory.whereis("a/root/sub/started-later") == "b"
    assert directory.whereis("a/root/pool") == "c"
    assert [directory.whereis(f"a/root/pool/{i}") for i in range(4)] == ["a", "b", "a", "b"]
    assert directory.spec_at("a/root/pool/7").id == "7"
    assert directory.spec_at("a/root/nothing") is None
    assert directory.whereis("b/anything") == "b"


def test_a_rule_set_names_its_own_challenge_markers_and_selectors() -> None:
    topology = parse_topology("""
nodes: {a: {}}
tree: {}
rules:
  article:
    fields: {headline: {css: h1, required: true}}
    block_markers: [Access Denied]
    block_selectors: ["#px-captcha"]
  product:
    fields: {title: {css: h1}}
""")
    assert topology.rules["article"].block_markers == ("access denied",)
    assert topology.rules["article"].block_selectors == ("#px-captcha",)
    assert topology.rules["product"].block_selectors == DEFAULT_BLOCK_SELECTORS
    assert problems(
        "nodes: {a: {}}\ntree: {}\nrules:\n  r:\n    fields: {t: {css: h1}}\n    block_selectors: [div, 'a[']\n"
    ) == ["t.yaml:6: rules.r.block_selectors: 'a[' is not a CSS selector selectolax can parse"]


class OpenEnded(Actor):
    """An actor of the user's own: typed parameters, a path argument, and **kwargs."""

    PATH_ARGS: ClassVar[dict[str, str]] = {"sink": "alerts"}

    def __init__(
        self,
        sink: str,
        ratio: float = 0.5,
        mode: Literal["fast", "safe"] = "safe",
        tags: list[str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__()


OPEN_ENDED = """
nodes: {a: {}}
tree:
  children:
    - {id: alerts, actor: alerts}
    - id: mine
      actor: tests.test_topology:OpenEnded
      args: %s
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("{sink: a/root/alerts, ratio: 1, mode: fast, tags: [x], anything: [1, 2]}", []),
        (
            "{sink: a/root/alerts, mode: quick}",
            ["t.yaml:8: tree.children[1].args.mode: 'quick' must be one of 'fast', 'safe'"],
        ),
        (
            "{sink: a/root/alerts, tags: [x, 2]}",
            ["t.yaml:8: tree.children[1].args.tags: ['x', 2] must be a list of strings or null"],
        ),
        (
            "{ratio: '1'}",
            [
                "t.yaml:8: tree.children[1].args.ratio: '1' must be a number",
                "t.yaml:8: tree.children[1].args: tests.test_topology:OpenEnded needs 'sink'",
            ],
        ),
        (
            "{sink: a/root/alert}",
            [
                (
                    "t.yaml:8: tree.children[1].args.sink: 'a/root/alert' names nothing in the tree: "
                    "it must be a worker or a pool of 'alerts'; did you mean 'a/root/alerts'?"
                )
            ],
        ),
    ],
)
def test_an_actor_of_ones_own_is_checked_by_its_annotations_and_path_args(args: str, expected: list[str]) -> None:
    if not expected:
        assert parse_topology(OPEN_ENDED % args).tree.children[1].args["anything"] == [1, 2]  # **extra takes it
    else:
        assert problems(OPEN_ENDED % args) == expected


RETENTION_TREE = """
nodes: {alpha: {}}
tree:
  children:
    - {id: w, actor: flaky}
"""


def test_retention_ages_read_as_seconds_and_keep_as_forever() -> None:
    default = parse_topology(RETENTION_TREE, "t.yaml").retention
    assert (default.stored, default.dead, default.results, default.every, default.batch) == (
        7 * 86400.0,
        None,
        None,
        60.0,
        5000,
    )
    chosen = parse_topology(
        RETENTION_TREE + "retention: {stored: 12h, dead: 30d, results: keep, every: 5, batch: 100}\n", "t.yaml"
    ).retention
    assert (chosen.stored, chosen.dead, chosen.results, chosen.every, chosen.batch) == (
        43200.0,
        2592000.0,
        None,
        5.0,
        100,
    )
    assert parse_topology(RETENTION_TREE + "retention: {stored: 90, dead: 1.5m}\n", "t.yaml").retention.dead == 90.0


def test_a_bad_retention_is_located() -> None:
    found = problems(RETENTION_TREE + "retention:\n  stored: 7w\n  results: -1\n  batch: 0\n")
    assert found == [
        "t.yaml:7: retention.stored: '7w' must be an age (seconds, or a number with s, m, h or d: 7d) or keep",
        "t.yaml:8: retention.results: -1 must be an age (seconds, or a number with s, m, h or d: 7d) or keep",
        "t.yaml:9: retention.batch: 0 must be an integer >= 1 and <= 100000",
    ]
