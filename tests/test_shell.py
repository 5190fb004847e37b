"""The remote shell and the metrics endpoint against real node processes: the shell driven
as a real process in a pseudo-terminal (start, complete a path, tree, restart, quit, the node
still up), `--exec ... --json` answers checked, bad commands refused, every command in the
audit log, a TCP shell refused without keys and closed to operators not listed, and the
metrics endpoint scraped and parsed with prometheus_client's parser."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.shell.client import ShellClient
from flotilla.nodes.shell.protocol import answer_decoder, shell_address
from scripts.harness import free_ports, wait_until
from tests.cluster_harness import LiveCluster, write_topology
from tests.processes import ROOT, flotilla_command, run_flotilla

TREE = """
children:
  - id: alerts
    actor: alerts
  - id: hold
    actor: hold
  - id: workers
    node: beta
    supervisor:
      children:
        - id: pool
          pool: {actor: flaky, size: 2, args: {crash_rate: 0, report_to: alpha/root/tally}}
        - id: ticker
          actor: ticker
          args: {target: alpha/root/workers/pool, interval: 0.05}
  - id: tally
    actor: tally
  - id: crashing
    supervisor:
      intensity: 1000
      children:
        - {id: worker, actor: flaky, args: {crash_rate: 1.0}}
        - {id: ticker, actor: ticker, args: {target: alpha/root/crashing/worker, interval: 0.3}}
"""


def start(tmp_path: Path, clusters: list[LiveCluster]) -> tuple[LiveCluster, int]:
    """Two nodes; alpha serves metrics on a free port."""
    port = free_ports(1)[0]
    path = write_topology(tmp_path, TREE, nodes=("alpha", "beta"), extra="resilience: {hold: alpha/root/hold}")
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("  alpha: {address: ", f"  alpha: {{metrics: '127.0.0.1:{port}', address: "), encoding="utf-8"
    )
    cluster = LiveCluster(path, load_topology(path))
    clusters.append(cluster)
    cluster.start_node("beta")
    cluster.start_node("alpha").wait_for_event("shell.listening", timeout=30)
    cluster.processes["beta"].wait_for_event("shell.listening", timeout=30)
    return cluster, port


def shell(cluster: LiveCluster, command: str, node: str = "alpha") -> dict:
    done = run_flotilla("shell", node, "--topology", str(cluster.topology_path), "--exec", command, "--json")
    answer = json.loads(done.stdout)
    assert (done.returncode == 0) == answer["ok"], done.stderr
    return answer


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCluster]:
    """One two-node cluster for the tests of single commands, its whole tree up; stopped after
    the last of them. Each test leaves the tree as it found it (a restart aside)."""
    made: list[LiveCluster] = []
    try:
        cluster, _ = start(tmp_path_factory.mktemp("shell"), made)
        wait_until(
            lambda: any(r["path"] == "alpha/root/workers/pool/1" for r in shell(cluster, "tree")["data"]),
            timeout=20,
            what="the whole tree, across nodes",
        )
        yield cluster
    finally:
        for cluster in made:
            cluster.stop()


def test_nodes_lists_every_node_and_whether_it_is_up(running: LiveCluster) -> None:
    nodes = shell(running, "nodes")["data"]
    assert [(n["node"], n["up"]) for n in nodes] == [("alpha", True), ("beta", True)]


def test_tree_shows_the_whole_tree_across_nodes(running: LiveCluster) -> None:
    tree = {row["path"]: row for row in shell(running, "tree")["data"]}
    assert tree["alpha/root/workers/ticker"]["node"] == "beta" and tree["alpha/root/workers"]["kind"] == "supervisor"
    assert tree["alpha/root/tally"]["node"] == "alpha"
    assert tree["alpha/root/workers/pool/0"]["status"] == "running"


def test_inspect_shows_an_actor_from_the_node_it_runs_on(running: LiveCluster) -> None:
    inspected = shell(running, "inspect alpha/root/workers/ticker", node="beta")["data"]
    assert inspected["actor"] == "flotilla.actors.demo.ticker:Ticker" and inspected["incarnation"] >= 1
    assert "mailbox" in inspected and "uptime" in inspected


def test_inspect_refuses_a_path_with_no_live_actor(running: LiveCluster) -> None:
    refused = shell(running, "inspect alpha/root/nowhere")
    assert not refused["ok"] and "alpha/root/nowhere: no live incarnation" in refused["error"]


def test_restart_starts_the_next_incarnation(running: LiveCluster) -> None:
    before = shell(running, "inspect alpha/root/workers/ticker")["data"]["incarnation"]
    restarted = shell(running, "restart alpha/root/workers/ticker")
    assert restarted["ok"], restarted
    assert shell(running, "inspect alpha/root/workers/ticker")["data"]["incarnation"] == before + 1


def test_count_children_counts_a_pools_workers(running: LiveCluster) -> None:
    counts = shell(running, "count_children alpha/root/workers/pool")["data"]
    assert counts["workers"] == 2 and counts["active"] == 2


def test_scale_grows_a_pool(running: LiveCluster) -> None:
    def active() -> int:
        return int(shell(running, "count_children alpha/root/workers/pool")["data"]["active"])

    assert shell(running, "scale alpha/root/workers/pool 3")["ok"]
    try:
        wait_until(lambda: active() == 3, timeout=10, what="the pool to grow")
    finally:
        assert shell(running, "scale alpha/root/workers/pool 2")["ok"]
        wait_until(lambda: active() == 2, timeout=10, what="the pool to shrink back")


def test_hold_sets_the_fleets_hold(running: LiveCluster) -> None:
    assert shell(running, "hold on")["data"]["on"] is True
    assert shell(running, "hold auto")["data"]["mode"] == "auto"


def test_a_bad_or_oversized_request_is_answered_with_an_error(running: LiveCluster) -> None:
    raw = ShellClient(shell_address(running.topology.node_data_dir("alpha")))
    try:
        raw._socket.send(b"\x93not a request")  # noqa: SLF001  forging what a peer would send
        assert answer_decoder.decode(raw._socket.recv()).error.startswith("bad request")  # noqa: SLF001  forging what a peer would send
        too_many = raw.call("inspect", ["x"] * 65)
        assert not too_many.ok and "bad request" in too_many.error and "64" in too_many.error
        too_long = raw.call("inspect", ["x" * 2049])
        assert not too_long.ok and "bad request" in too_long.error
    finally:
        raw.close()


def test_an_unknown_command_is_refused(running: LiveCluster) -> None:
    unknown = shell(running, "rm -rf /")
    assert not unknown["ok"] and "unknown command 'rm'" in unknown["error"]


def test_trace_shows_the_messages_an_actor_receives(running: LiveCluster) -> None:
    traced = run_flotilla(
        "shell", "--topology", str(running.topology_path), "--exec", "trace alpha/root/tally 0.5", "--json"
    )
    assert {m["type"] for m in json.loads(traced.stdout)["data"]} == {"Done"}


def test_logs_shows_the_nodes_recent_events(running: LiveCluster) -> None:
    assert shell(running, "restart alpha/root/tally")["ok"]
    logged = shell(running, "logs 2000 --audit")["data"]  # the crashing worker logs two events every 0.3 s
    assert any(e["event"] == "shell.command" and e.get("command") == "restart" for e in logged)
    assert any(e["event"] == "supervisor.child_started" for e in logged)


def test_logs_follow_streams_new_events(running: LiveCluster) -> None:
    follower = subprocess.Popen(
        flotilla_command("shell", "--topology", str(running.topology_path), "--exec", "logs --follow", "--json"),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # started as `flotilla ... &` in a script is (SIGINT ignored): Ctrl-C must still stop it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert follower.stdout is not None
        deadline = time.monotonic() + 30
        followed = None
        while followed is None:  # restart until the follower (starting meanwhile) shows one
            assert time.monotonic() < deadline and follower.poll() is None, "logs --follow showed no restart"
            assert shell(running, "restart alpha/root/tally")["ok"]
            round_ends = time.monotonic() + 1.0
            while time.monotonic() < round_ends and select.select([follower.stdout], [], [], 0.5)[0]:
                event = json.loads(follower.stdout.readline())
                if event["event"] == "supervisor.child_started" and event["child"] == "alpha/root/tally":
                    followed = event
                    break
    finally:
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=10)  # drain its output, or a full pipe keeps it from exiting
        assert follower.returncode == 0


def test_every_command_is_audited_before_and_after_as_the_local_user(running: LiveCluster) -> None:
    assert shell(running, "restart alpha/root/tally")["ok"]
    assert not shell(running, "rm -rf /")["ok"]
    assert shell(running, "hold auto")["ok"]
    raw = ShellClient(shell_address(running.topology.node_data_dir("alpha")))
    try:  # a bad frame is audited when its refusal is logged: the node's first one always is
        raw._socket.send(b"\x93not a request")  # noqa: SLF001  forging what a peer would send
        raw._socket.recv()  # noqa: SLF001
    finally:
        raw.close()
    audit = [
        json.loads(line)
        for line in (running.topology.node_data_dir("alpha") / "audit.log").read_text(encoding="utf-8").splitlines()
    ]
    commands = [(entry["command"], entry["outcome"]) for entry in audit]
    assert ("restart", "started") in commands and ("restart", "done") in commands
    assert ("rm", "failed") in commands and ("hold", "done") in commands
    assert ("?", "refused") in commands
    assert all(entry["operator"].startswith("local:") for entry in audit)


def test_the_shell_socket_is_for_the_nodes_user_only(running: LiveCluster) -> None:
    socket = running.topology.node_data_dir("alpha") / "shell.sock"
    assert stat.S_IMODE(os.stat(socket).st_mode) == 0o600  # only the node's user
    assert stat.S_IMODE(os.stat(socket.parent).st_mode) == 0o700


def test_the_interactive_shell_in_a_terminal(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster, _ = start(tmp_path, clusters)
    wait_until(
        lambda: any(r["path"] == "alpha/root/workers/ticker" for r in shell(cluster, "tree")["data"]),
        timeout=20,
        what="the tree",
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "flotilla.nodes.cli", "shell", "--topology", str(cluster.topology_path)],
        cwd=str(ROOT),
        env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"},
        encoding="utf-8",
        timeout=20,
        dimensions=(40, 200),
    )
    try:
        child.expect("alpha>")
        child.send("inspect alpha/root/workers/tic")
        child.send("\t")  # completion of an actor path
        child.expect("ticker")
        child.send("\r")
        child.expect("flotilla.actors.demo.ticker:Ticker")
        child.expect("alpha>")
        child.sendline("tree")
        child.expect("alpha/root/workers/pool/1")
        child.expect("alpha>")
        child.sendline("restart alpha/root/workers/ticker")
        child.expect("restarted")
        child.expect("alpha>")
        child.sendline("quit")
        child.expect("the node keeps running")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert cluster.processes["alpha"].proc.poll() is None and cluster.processes["beta"].proc.poll() is None
    assert shell(cluster, "inspect alpha/root/workers/ticker")["data"]["incarnation"] == 2


def test_the_metrics_endpoint_parses(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    _, port = start(tmp_path, clusters)

    def scrape() -> dict[str, list]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {family.name: family.samples for family in text_string_to_metric_families(text)}

    wait_until(
        lambda: "flotilla_restarts" in scrape() and scrape()["flotilla_restarts"],
        timeout=10,
        what="the restart to be counted",
    )
    families = scrape()
    restarts = {
        (s.labels["supervisor"], s.labels["child"]): s.value
        for s in families["flotilla_restarts"]
        if s.name == "flotilla_restarts_total"
    }
    assert restarts[("alpha/root/crashing", "alpha/root/crashing/worker")] >= 1  # it crashes on every message
    exits = {
        (s.labels["child"], s.labels["reason"]): s.value
        for s in families["flotilla_child_exits"]
        if s.name == "flotilla_child_exits_total"
    }
    assert exits.get(("alpha/root/crashing/worker", "Crash"), 0) >= 1, exits  # the reason's kind, as in Crash(...)
    up = {s.labels["node"]: s.value for s in families["flotilla_node_up"]}
    assert up == {"alpha": 1.0, "beta": 1.0}
    owner = {s.labels["node"]: s.value for s in families["flotilla_tree_owner"]}
    assert owner == {"alpha": 1.0, "beta": 0.0}  # no failover: the root's node owns the tree
    assert families["flotilla_tree_lease_token"][0].value == 0.0
    assert any(s.labels["path"] == "alpha/root/tally" for s in families["flotilla_mailbox_depth"])
    assert families["flotilla_hold"][0].value == 0.0
    assert any(s.labels["peer"] == "beta" and s.value > 0 for s in families["flotilla_transport_sent_frames"])
    assert "flotilla_dead_letters" in families
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"flotilla_\w+", target["expr"])
    }
    assert used and {re.sub(r"_(total|bucket)$", "", name) for name in used} <= set(families)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("metrics: '10.0.0.1:9100'", "is not a loopback address: metrics are plain HTTP"),
        ("metrics: 'nine'", "must be HOST:PORT"),
    ],
)
def test_metrics_addresses_are_checked(tmp_path: Path, text: str, problem: str) -> None:
    topology = tmp_path / "t.yaml"
    topology.write_text("nodes: {alpha: {" + text + "}}\ntree: {children: [{id: a, actor: tally}]}\n", encoding="utf-8")
    done = run_flotilla("check", str(topology))
    assert done.returncode == 2 and problem in done.stderr


def test_a_tcp_shell_needs_keys_and_accepts_only_listed_operators(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    node_port, shell_port = free_ports(2)
    body = (
        f"nodes: {{alpha: {{address: 'tcp://127.0.0.1:{node_port}', shell: 'tcp://127.0.0.1:{shell_port}'}}}}\n"
        "tree: {children: [{id: tally, actor: tally}]}\n"
    )
    refused = tmp_path / "open.yaml"
    refused.write_text(body, encoding="utf-8")
    done = run_flotilla("check", str(refused))
    assert done.returncode == 2 and "nodes.alpha.shell: a TCP shell needs security.keys" in done.stderr

    keys, own = tmp_path / "keys", tmp_path / "operators"  # operators keep their secret keys to themselves
    assert run_flotilla("keys", "generate", str(keys), "--name", "alpha").returncode == 0
    assert (
        run_flotilla("keys", "generate", str(own), "--name", "alice", "--name", "bob", "--name", "mallory").returncode
        == 0
    )
    for name in ("alice", "bob", "mallory"):
        shutil.copy(own / f"{name}.key", keys / f"{name}.key")
    path = tmp_path / "secure.yaml"
    path.write_text(
        body + "security: {keys: keys}\noperators: [alice, bob]\neval_operators: [alice]\n", encoding="utf-8"
    )
    cluster = LiveCluster(path, load_topology(path))
    clusters.append(cluster)
    cluster.start_node("alpha").wait_for_event("shell.listening", timeout=30)

    def tcp_shell(operator: str, command: str = "nodes") -> subprocess.CompletedProcess[str]:
        return run_flotilla(
            "shell",
            "alpha",
            "--topology",
            str(path),
            "--operator",
            operator,
            "--operator-key",
            str(own / f"{operator}.key_secret"),
            "--timeout",
            "3",
            "--exec",
            command,
            "--json",
        )

    allowed = tcp_shell("alice")
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["data"][0]["node"] == "alpha"
    stranger = tcp_shell("mallory")  # a well-formed key, not on the list
    assert stranger.returncode == 1 and "no answer" in stranger.stderr
    cluster.processes["alpha"].wait_for_event("shell.operator_rejected", timeout=10)
    evaluated = tcp_shell("alice", "eval system.node + '!'")
    assert json.loads(evaluated.stdout)["data"] == "'alpha!'"
    for refused in (
        tcp_shell("bob", "eval 1 + 1"),  # an operator, but not one allowed to evaluate
        run_flotilla("shell", "alpha", "--topology", str(path), "--exec", "eval 1 + 1", "--json"),
    ):
        assert refused.returncode == 1 and "may not evaluate Python" in json.loads(refused.stdout)["error"]
    audit = (cluster.topology.node_data_dir("alpha") / "audit.log").read_text(encoding="utf-8")
    shutil.copy(own / "alice.key_secret", keys / "alice.key_secret")  # deployed with the nodes by mistake
    cluster.processes["alpha"].signal(signal.SIGTERM)
    assert cluster.processes["alpha"].wait(30) == 0
    again = cluster.start_node("alpha")
    again.wait_for_event("node.bad_keys", timeout=30)
    assert again.wait(30) == 2
    entries = [json.loads(line) for line in audit.splitlines()]
    operators = [e["operator"] for e in entries if e["outcome"] != "started"]
    assert operators[:3] == ["key:alice", "key:alice", "key:bob"] and operators[3].startswith("local:")
