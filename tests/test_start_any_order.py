"""Nodes start in any order: real node processes, the real demo site, a real journal.

A child placed on a node that is not up waits for it (logged once, with the node's name) and
starts when the node joins; the rest of the tree serves meanwhile; SIGTERM stops a node that
waits for a peer at once, with exit code 0."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.actors.core.messages import ChildInfo, WhichChildren
from flotilla.actors.demo.messages import Work
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, make_cluster
from tests.processes import run_flotilla

TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_in_flight: 10, max_attempts: 3,
           transient_base: 0.05, transient_cap: 0.2, blocked_delay: 0.1, visibility: 5}
  - id: fetching
    node: beta
    supervisor:
      strategy: rest_for_one
      children:
        - id: extractors
          pool: {actor: extractor, size: 1}
        - id: fetchers
          pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/fetching/extractors,
                 timeout: 2.0, max_body_bytes: 200000, max_redirects: 3}}
  - id: spread
    pool: {actor: tally, size: 2}
    nodes: [alpha, beta]
  - id: tally
    actor: tally
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
"""

STOP_BOUND = 5.0
"""Seconds a node may take from SIGTERM to its exit in these tests (it takes about one)."""


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess()
    yield process
    process.stop()


def cluster_of(tmp_path: Path, clusters: list[LiveCluster]) -> LiveCluster:
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "beta"), extra=EXTRA % free_ports(1)[0])
    clusters.append(cluster)
    return cluster


def shell(cluster: LiveCluster, command: str) -> dict:
    done = run_flotilla("shell", "alpha", "--topology", str(cluster.topology_path), "--exec", command, "--json")
    answer = json.loads(done.stdout)
    assert answer["ok"], answer
    return answer["data"]


def test_alpha_alone_waits_for_beta_serves_and_starts_beta_s_children_when_it_joins(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    cluster = cluster_of(tmp_path, clusters)
    alpha = cluster.start_node("alpha")
    waiting = alpha.wait_for_event("supervisor.waiting_for_node", timeout=10, child="alpha/root/fetching")
    assert waiting["waiting_for"] == "beta" and waiting["level"] == "warning"
    replica = alpha.wait_for_event("supervisor.waiting_for_node", timeout=10, child="alpha/root/spread/1")
    assert replica["waiting_for"] == "beta"
    alpha.wait_for_event("intake.listening", timeout=10)  # the rest of the tree serves
    alpha.wait_for_event("supervisor.child_started", timeout=10, child="alpha/root/tally")  # after the waiting one
    assert alpha.proc.poll() is None

    counts = shell(cluster, "count_children alpha/root")
    assert counts["specs"] == 4 and counts["active"] == 3 and counts["waiting"] == 1
    rows = {row["id"]: row for row in shell(cluster, "which_children alpha/root")}
    assert rows["fetching"]["status"] == "restarting" and rows["fetching"]["waiting_for"] == "beta"
    assert rows["router"]["status"] == "running" and rows["router"]["waiting_for"] == ""
    pool = shell(cluster, "count_children alpha/root/spread")
    assert pool["active"] == 1 and pool["waiting"] == 1  # the replica on alpha runs

    with IntakeClient.for_topology(cluster.topology) as client:
        [ack] = client.submit([JobSpec(f"{site.url}/product/7", "product")])
        assert ack.status == "accepted"
        assert client.counts().states["pending"] == 1  # kept in the journal while no fetcher is up

        cluster.start_node("beta")
        alpha.wait_for_event("supervisor.child_started", timeout=20, child="alpha/root/fetching")
        wait_until(lambda: client.counts().states["stored"] == 1, timeout=30, what="the job to be stored")
    wait_until(
        lambda: shell(cluster, "count_children alpha/root/spread")["active"] == 2,
        timeout=10,
        what="the replica on beta to start",
    )
    counts = shell(cluster, "count_children alpha/root")
    assert counts["active"] == 4 and counts["waiting"] == 0
    waits = [e for e in alpha.events() if e["event"] == "supervisor.waiting_for_node"]
    assert len(waits) == 2  # each child logged once while it waited
    assert not [e for e in alpha.events() if e["event"] in ("supervisor.start_failed", "supervisor.child_exited")]


def test_beta_first_then_alpha_starts_the_whole_tree(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = cluster_of(tmp_path, clusters)
    cluster.start_node("beta").wait_for_event("node.started", timeout=15)
    alpha = cluster.start_node("alpha")
    alpha.wait_for_event("node.started", timeout=30)
    wait_until(
        lambda: shell(cluster, "count_children alpha/root")["active"] == 4,
        timeout=20,
        what="the whole tree to run",
    )
    assert shell(cluster, "count_children alpha/root/spread")["active"] == 2


@pytest.mark.parametrize("node", ["alpha", "beta"])
def test_sigterm_stops_a_node_waiting_for_its_peer_at_once_with_exit_0(
    tmp_path: Path, clusters: list[LiveCluster], node: str
) -> None:
    """alpha waits for beta to start beta's children; beta alone waits for alpha to ask."""
    cluster = cluster_of(tmp_path, clusters)
    process = cluster.start_node(node)
    if node == "alpha":
        process.wait_for_event("supervisor.waiting_for_node", timeout=10, child="alpha/root/fetching")
    process.wait_for_event("node.started", timeout=15)
    sent = time.monotonic()
    process.signal(signal.SIGTERM)
    code = process.wait(timeout=STOP_BOUND + 5)
    took = time.monotonic() - sent
    assert code == 0
    assert process.wait_for_event("node.signal", timeout=1)["signal"] == "SIGTERM"
    process.wait_for_event("node.stopped", timeout=1)
    assert took < STOP_BOUND, f"{node} took {took:.2f} s to stop"
    print(f"{node}: SIGTERM to exit in {took:.2f} s")


def test_a_topology_that_still_sets_node_wait_loads(tmp_path: Path) -> None:
    """`transport.node_wait` is deprecated and ignored, not an unknown key."""
    path = tmp_path / "old.yaml"
    path.write_text(
        "nodes: {a: {address: 'tcp://127.0.0.1:%d'}}\n"  # noqa: UP031  YAML's braces
        "transport: {node_wait: 20}\ntree: {children: [{id: t, actor: tally}]}\n" % free_ports(1)[0],
        encoding="utf-8",
    )
    assert load_topology(path).transport.node_wait == 20.0


ONE_FOR_ALL = """
strategy: one_for_all
children:
  - {id: first, actor: flaky, args: {crash_rate: 1.0}}
  - id: remote
    node: beta
    supervisor:
      children:
        - {id: tally, actor: tally}
  - {id: last, actor: tally}
"""


def test_one_for_all_restarts_its_children_without_the_one_waiting_and_starts_it_alone_later(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = make_cluster(tmp_path, ONE_FOR_ALL)
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    alpha.wait_for_event("supervisor.waiting_for_node", timeout=10, child="alpha/root/remote")
    system = cluster.join()
    cluster.wait_up("alpha")

    def children() -> dict[str, ChildInfo]:
        return {c.id: c for c in system.ask("alpha/root", WhichChildren())}

    before = children()
    assert before["remote"].waiting_for == "beta" and before["last"].status == "running"
    system.ref("alpha/root/first").tell(Work(1))  # crashes it: one_for_all restarts every child
    wait_until(lambda: children()["last"].incarnation == 2, timeout=10, what="last to be restarted")
    after = children()
    assert after["first"].status == "running" and after["last"].status == "running"
    assert after["remote"].status == "restarting" and after["remote"].waiting_for == "beta"

    cluster.start_node("beta")
    alpha.wait_for_event("supervisor.child_started", timeout=20, child="alpha/root/remote")
    joined = children()
    assert joined["remote"].status == "running" and joined["remote"].restarts == 0  # a first start: uncounted
    assert joined["first"].incarnation == 2 and joined["last"].incarnation == 2  # its siblings untouched
