"""The `flotilla` CLI as a user runs it: real subprocesses, real signals, exit codes."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import FlotillaProcess, run_flotilla


@pytest.fixture
def processes() -> Iterator[list[FlotillaProcess]]:
    started: list[FlotillaProcess] = []
    yield started
    for process in started:
        process.kill()


def start(processes: list[FlotillaProcess], *args: str) -> FlotillaProcess:
    process = FlotillaProcess(*args)
    processes.append(process)
    return process


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tree.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_check_prints_the_tree_of_a_valid_topology() -> None:
    result = run_flotilla("check", "supervisor_tree.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "supervisor_tree.yaml: valid; cluster demo, 1 node (alpha)"
    assert "alpha/root  supervisor one_for_one" in result.stdout
    assert "├─ workers  pool x4 of actors.flaky:FlakyWorker" in result.stdout


def test_check_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: {a: {}}\ntree:\n  strategy: best\n  children:\n    - {id: x, actor: flaky, restart: never}\n")
    result = run_flotilla("check", path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [
        f"{path}:3: tree.strategy: 'best' is not one of one_for_one, one_for_all, rest_for_one",
        f"{path}:5: tree.children[0].restart: 'never' is not one of permanent, transient, temporary",
        f"{path}: 2 problems; the topology is not valid",
    ]


def test_check_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_flotilla("check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_node_stops_the_tree_in_reverse_order_on_a_signal_and_exits_0(
        processes: list[FlotillaProcess], signum: int) -> None:
    node = start(processes, "node", "start", "--topology", "supervisor_tree.yaml", "--log-format", "json")
    node.wait_for_event("node.started")
    node.wait_for_event("supervisor.child_started", child="alpha/root/ticker")
    node.signal(signum)
    assert node.wait() == 0
    names = [e["event"] for e in node.events()]
    assert names.index("tally.final") < names.index("node.stopped")
    stopped = node.wait_for_event("node.stopped")
    assert stopped["reports"]["child_started"] >= 6


def test_node_started_for_a_while_stops_by_itself_with_exit_0(processes: list[FlotillaProcess]) -> None:
    node = start(processes, "node", "start", "--run-for", "1", "--log-format", "json")
    assert node.wait() == 0
    node.wait_for_event("node.run_for_elapsed")
    node.wait_for_event("node.stopped")


def test_node_whose_root_gives_up_exits_non_zero(tmp_path: Path, processes: list[FlotillaProcess]) -> None:
    path = write(tmp_path, """
nodes: {a: {}}
tree:
  intensity: 0
  children:
    - id: pool
      pool: {actor: flaky, size: 2, args: {crash_rate: 1.0}, intensity: 2}
    - id: ticker
      actor: ticker
      args: {target: a/root/pool, interval: 0.01}
""")
    node = start(processes, "node", "start", "--topology", path, "--log-format", "json")
    assert node.wait() == 1
    gave_up = [e for e in node.events() if e["event"] == "supervisor.gave_up"]
    assert [e["supervisor"] for e in gave_up] == ["a/root/pool", "a/root"]
    failed = node.wait_for_event("node.tree_failed")
    assert failed["reason"] == "Shutdown(reached_max_restart_intensity)"


def test_node_whose_tree_cannot_start_exits_non_zero(tmp_path: Path, processes: list[FlotillaProcess]) -> None:
    path = write(tmp_path, "nodes: {a: {}}\ntree:\n  children:\n    - {id: w, actor: flaky, args: {fail_start_rate: 1.0}}\n")
    node = start(processes, "node", "start", "--topology", path, "--log-format", "json")
    assert node.wait() == 1
    failed = node.wait_for_event("node.start_failed")
    assert "failed_to_start_child w" in failed["error"]


def test_node_start_with_an_invalid_topology_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: {a: {}}\ntree: {intensity: -1}\n")
    result = run_flotilla("node", "start", "--topology", path)
    assert result.returncode == 2
    assert "tree.intensity: -1 must be an integer >= 0" in result.stderr


def test_node_start_refuses_an_unknown_node(tmp_path: Path) -> None:
    result = run_flotilla("node", "start", "--node", "omega")
    assert result.returncode == 2
    assert "no node 'omega' (nodes: alpha)" in result.stderr
