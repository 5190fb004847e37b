"""The cluster under partial failure: frozen and restarted parents, foreign requests, buggy
callbacks, junk monitors. Each test is a bug found in review, kept from coming back."""

from __future__ import annotations

import signal
from pathlib import Path

from flotilla.actors import Unavailable
from flotilla.actors.core.errors import NodeUnreachable
from flotilla.actors.core.messages import Down, NoProc, WhichChildren
from flotilla.nodes.cluster.codec import Halt, Monitor
from scripts.harness import wait_until
from tests.cluster_harness import LiveCluster, make_cluster

SPREAD = """
children:
  - id: spread
    pool: {actor: "tests.helpers:Probe", size: 2, intensity: 20}
    nodes: [beta]
"""


def start(tmp_path: Path, clusters: list[LiveCluster], tree: str = SPREAD) -> LiveCluster:
    cluster = make_cluster(tmp_path, tree)
    clusters.append(cluster)
    cluster.start_node("beta")
    cluster.start_node("alpha").wait_for_event("node.started", timeout=30)
    cluster.join()
    cluster.wait_up("alpha", "beta")
    cluster.wait_tree_running()  # beta's children start when alpha hears beta, maybe after node.started
    return cluster


def answers(cluster: LiveCluster, path: str) -> bool:
    try:
        return cluster.system.ask(path, "whoami", timeout=2)[0] == path
    except (NodeUnreachable, Unavailable):
        return False


def all_replicas_answer(cluster: LiveCluster) -> bool:
    return all(answers(cluster, f"alpha/root/spread/{i}") for i in range(2))


def test_a_parent_frozen_past_the_timeout_gets_its_remote_children_back(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = start(tmp_path, clusters)
    alpha = cluster.processes["alpha"]
    alpha.signal(signal.SIGSTOP)
    try:
        cluster.processes["beta"].wait_for_event("host.orphan_stopped")
    finally:
        alpha.signal(signal.SIGCONT)
    wait_until(lambda: all_replicas_answer(cluster), timeout=20, what="replicas restarted on beta")


def test_a_parent_restarted_at_once_keeps_the_children_it_starts(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = start(tmp_path, clusters)
    old = cluster.processes["alpha"]
    old.signal(signal.SIGKILL)
    old.wait(5)
    cluster.start_node("alpha").wait_for_event("node.started", timeout=30)
    # beta may learn of the restart (a new boot id) only after the new process's Spawns:
    cluster.processes["beta"].wait_for_event_line(r'"peer": "alpha", "boot".*"cluster.node_up"', count=2)
    wait_until(lambda: all_replicas_answer(cluster), timeout=10, what="the new replicas to keep running")
    statuses = [c.status for c in cluster.system.ask("alpha/root/spread", WhichChildren())]
    assert statuses == ["running", "running"]


def test_subtrees_alternating_between_nodes_start_and_stop(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = start(
        tmp_path,
        clusters,
        """
children:
  - id: b1
    node: beta
    supervisor:
      children:
        - id: a2
          node: alpha
          supervisor:
            children:
              - id: b3
                node: beta
                supervisor: {children: [{id: echo, actor: "tests.helpers:Probe"}]}
""",
    )
    assert answers(cluster, "alpha/root/b1/a2/b3/echo")
    alpha = cluster.processes["alpha"]
    alpha.signal(signal.SIGTERM)
    assert alpha.wait(30) == 0


def test_a_halt_from_a_node_that_is_not_the_parent_is_ignored(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = start(tmp_path, clusters)
    cluster.cluster._send("beta", Halt("alpha/root/spread/0", "urn:whatever", -1.0))  # noqa: SLF001  forging what a peer would send
    cluster.processes["beta"].wait_for_event("host.halt_refused", peer="tester")
    assert answers(cluster, "alpha/root/spread/0")


def test_a_monitor_callback_that_raises_does_not_silence_the_node(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = start(tmp_path, clusters)
    cluster.system.monitor("alpha/root/spread/0", lambda _down: 1 / 0)
    beta = cluster.processes["beta"]
    beta.signal(signal.SIGKILL)
    beta.wait(5)
    wait_until(lambda: not cluster.cluster.is_up("beta"), what="NodeDown(beta)")
    assert cluster.cluster.transport._thread.is_alive()  # noqa: SLF001  forging what a peer would send
    assert cluster.system.ask("alpha/root/spread", WhichChildren(), timeout=5)  # still talks to alpha


def test_a_frozen_host_stops_children_their_parent_removed_meanwhile(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = start(
        tmp_path,
        clusters,
        """
children:
  - id: temp
    node: beta
    restart: temporary
    supervisor: {children: [{id: w, actor: "tests.helpers:Probe"}]}
""",
    )
    assert answers(cluster, "alpha/root/temp/w")
    beta = cluster.processes["beta"]
    beta.signal(signal.SIGSTOP)
    try:
        cluster.processes["alpha"].wait_for_event("cluster.node_down", peer="beta")
    finally:
        beta.signal(signal.SIGCONT)
    wait_until(lambda: cluster.cluster.is_up("beta"), what="beta back")
    wait_until(lambda: not answers(cluster, "alpha/root/temp/w"), what="the dropped temporary child to be stopped")


def test_monitors_for_paths_a_node_does_not_run_get_noproc_and_leave_nothing_behind(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = start(tmp_path, clusters)
    downs: list[Down] = []
    for i in range(50):
        cluster.system.monitor(f"alpha/root/spread/0/junk{i}", downs.append)
    for i in range(200):
        cluster.cluster._send("beta", Monitor(f"gamma/elsewhere/{i}", 10_000 + i))  # noqa: SLF001  forging what a peer would send
    wait_until(lambda: len(downs) == 50, what="Down(NoProc) for each junk monitor")
    assert {d.reason for d in downs} == {NoProc()}
    assert answers(cluster, "alpha/root/spread/0")
