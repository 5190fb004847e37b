"""Hostile topology files: alias bombs, recursive aliases and deep nesting are refused fast
with a line; values the node could not use are refused by `check`; `check --no-import`
validates without running a named module's code."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flotilla.nodes.config.topology import MAX_TOPOLOGY_BYTES, TopologyError, parse_topology
from flotilla.nodes.config.yaml_guard import MAX_YAML_DEPTH, MAX_YAML_NODES
from tests.processes import run_flotilla

VALID_TAIL = "tree: {children: [{id: w, actor: flaky}]}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as raised:
        parse_topology(text, "t.yaml")
    return [p.format("t.yaml") for p in raised.value.problems]


def billion_laughs(levels: int = 9) -> str:
    lines = ["nodes: {a: {}}", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n" + VALID_TAIL


def test_an_alias_bomb_is_refused_in_under_two_seconds() -> None:
    started = time.monotonic()
    found = problems(billion_laughs())
    assert time.monotonic() - started < 2.0
    assert found == [
        f"t.yaml:2: more than {MAX_YAML_NODES} values once aliases are expanded (an alias bomb?)"
    ] or found[0].endswith("(an alias bomb?)"), found


def test_flotilla_check_answers_an_alias_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs(), encoding="utf-8")
    done = run_flotilla("check", str(path), timeout=30)
    assert done.returncode == 2 and "an alias bomb?" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodes: {a: {}}\nx: &x [1, *x]\n" + VALID_TAIL, "t.yaml:2: an alias refers to a value that contains it"),
        ("nodes: {a: {}}\nx: &x {k: *x}\n" + VALID_TAIL, "t.yaml:2: an alias refers to a value that contains it"),
        (
            "nodes: {a: {}}\nx: " + "[" * (MAX_YAML_DEPTH + 5) + "]" * (MAX_YAML_DEPTH + 5) + "\n" + VALID_TAIL,
            f"t.yaml:2: nested more than {MAX_YAML_DEPTH} levels deep",
        ),
        ("nodes: {a: {}}\nx: " + "[" * 5000 + "]" * 5000 + "\n" + VALID_TAIL, "t.yaml:2: not valid YAML"),
        ("nodes: {a: {}}\nx:\n" + "- " * 3000 + "1\n" + VALID_TAIL, "t.yaml:3: not valid YAML"),
        (
            "nodes: {a: {}}\nx: [" + ", ".join(["1"] * (MAX_YAML_NODES + 1)) + "]\n" + VALID_TAIL,
            f"t.yaml:2: more than {MAX_YAML_NODES} values",
        ),
    ],
)
def test_recursion_and_depth_are_refused_with_a_line(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "nodes: {a: {}}\ntransport: {max_message_bytes: 1000000000000000000000000000000}\n" + VALID_TAIL,
            "t.yaml:2: transport.max_message_bytes: 1000000000000000000000000000000"
            " must be an integer >= 1024 and <= 67108864",
        ),
        (
            "nodes: {a: {}}\ntransport: {max_message_bytes: 1e30}\n" + VALID_TAIL,
            "t.yaml:2: transport.max_message_bytes: '1e30' must be an integer",
        ),
        (
            "nodes: {a: {}}\ntransport: {max_message_bytes: 1.0e+30}\n" + VALID_TAIL,
            "t.yaml:2: transport.max_message_bytes: 1e+30 must be an integer",
        ),
        (
            "nodes: {a: {}}\ntransport: {high_water_mark: 1000000000000}\n" + VALID_TAIL,
            "t.yaml:2: transport.high_water_mark: 1000000000000 must be an integer >= 1 and <= 1000000",
        ),
        (
            "nodes: {a: {}}\ntransport: {backlog: 100000000}\n" + VALID_TAIL,
            "t.yaml:2: transport.backlog: 100000000 must be an integer >= 1000 and <= 1000000",
        ),
        (
            "nodes: {a: {}}\ntransport: {heartbeat_interval: .inf, heartbeat_timeout: .nan}\n" + VALID_TAIL,
            "t.yaml:2: transport.heartbeat_interval: inf must be a number of seconds > 0 and <= 86400",
        ),
        (
            "nodes: {a: {metrics: '127.0.0.1:99999'}}\n" + VALID_TAIL,
            "t.yaml:1: nodes.a.metrics: '127.0.0.1:99999' must be HOST:PORT with a port in 1..65535",
        ),
        (
            "nodes: {a: {address: 'tcp://127.0.0.1:７１０１'}}\n" + VALID_TAIL,
            "t.yaml:1: nodes.a.address: 'tcp://127.0.0.1:７１０１' must look like tcp://HOST:PORT"
            " with a port in 1..65535",
        ),
        ("nodes: {a: {}}\ndata_dir: /proc/self\n" + VALID_TAIL, "t.yaml:2: data_dir: /proc/"),
        ("nodes: {a: {}}\ndata_dir: /dev/null/data\n" + VALID_TAIL, "t.yaml:2: data_dir: /dev/null/data is under"),
        (
            "nodes: {a: {}}\ntree: {children: [{id: p, pool: {actor: flaky, size: 100000000}}]}\n",
            "t.yaml:2: tree.children[0].pool.size: 100000000 must be an integer >= 0 and <= 1000",
        ),
        (
            "cluster: " + "c" * 200 + "\nnodes: {a: {}}\n" + VALID_TAIL,
            "t.yaml:1: cluster: 'cccccccccccccccccccc'... is longer than 64",
        ),
        (
            "nodes: {a: {shell: 'tcp://127.0.0.1:7999'}}\n" + VALID_TAIL,
            "t.yaml:1: nodes.a.shell: a TCP shell needs security.keys",
        ),
    ],
)
def test_values_the_node_cannot_use_are_refused_by_check(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_has_a_line() -> None:
    text = (
        "nodes: {a: {address: 'tcp://10.1.2.3:7101', shell: 'tcp://127.0.0.1:7999', metrics: '10.1.2.3:9100'}}\n"
        "operators: [bob]\neval_operators: [eve]\n" + VALID_TAIL
    )
    found = problems(text)
    assert len(found) >= 3 and all(p.startswith("t.yaml:") and p.split(":")[1].isdigit() for p in found), found


def test_an_oversized_topology_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("nodes: {a: {}}\n" + "#" * MAX_TOPOLOGY_BYTES + "\n" + VALID_TAIL, encoding="utf-8")
    done = run_flotilla("check", str(path))
    assert done.returncode == 2 and f"the limit is {MAX_TOPOLOGY_BYTES}" in done.stderr


def test_check_no_import_validates_without_running_a_module(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "sideeffect_actor.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "from actors import Actor\nclass Thing(Actor):\n    pass\n",
        encoding="utf-8",
    )
    topology = tmp_path / "t.yaml"
    topology.write_text(
        "nodes: {a: {}}\ntree: {children: [{id: t, actor: 'sideeffect_actor:Thing'}, "
        "{id: bad, actor: 'not a reference'}]}\n",
        encoding="utf-8",
    )
    done = run_flotilla("check", "--no-import", str(topology))
    assert done.returncode == 2 and "tree.children[1].actor: unknown actor 'not a reference'" in done.stderr
    topology.write_text(
        "nodes: {a: {}}\ntree: {children: [{id: t, actor: 'sideeffect_actor:Thing'}]}\n", encoding="utf-8"
    )
    done = run_flotilla("check", "--no-import", str(topology))
    assert done.returncode == 0, done.stderr
    assert "sideeffect_actor:Thing" in done.stdout
    assert not marker.exists()
