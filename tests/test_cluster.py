"""Nodes over ZeroMQ: real node processes on loopback, the test process joined as a node."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from flotilla.actors import ActorCrashed, Unavailable
from flotilla.actors.core.errors import NodeUnreachable, NoSuchActor
from flotilla.actors.core.messages import Down, NodeDown, NodeUp, WhichChildren
from scripts.harness import wait_until
from tests.cluster_harness import LiveCluster, make_cluster

TREE = """
children:
  - id: echo
    actor: tests.helpers:Probe
  - id: remote
    node: beta
    supervisor:
      intensity: 20
      children:
        - {id: echo, actor: "tests.helpers:Probe"}
  - id: spread
    pool: {actor: "tests.helpers:Probe", size: 2, intensity: 20}
    nodes: [beta]
"""


@pytest.fixture
def running(tmp_path: Path, clusters: list[LiveCluster]) -> LiveCluster:
    cluster = make_cluster(tmp_path, TREE)
    clusters.append(cluster)
    cluster.start_node("beta")
    alpha = cluster.start_node("alpha")
    cluster.join()
    cluster.wait_up("alpha", "beta")
    alpha.wait_for_event("node.started")
    wait_until(
        lambda: _status(cluster, "alpha/root/spread") == ["running", "running"],
        timeout=20,
        what="the spread pool to run on beta",
    )
    return cluster


def _status(cluster: LiveCluster, supervisor: str) -> list[str]:
    try:
        return [c.status for c in cluster.system.ask(supervisor, WhichChildren())]
    except Exception:  # noqa: BLE001 - not up yet
        return []


def test_tell_and_ask_by_path_across_nodes(running: LiveCluster) -> None:
    system = running.system
    assert system.ask("alpha/root/echo", "whoami") == ["alpha/root/echo", 1]
    assert system.ask("alpha/root/remote/echo", "whoami") == ["alpha/root/remote/echo", 1]
    assert system.whereis("alpha/root/remote/echo") == "beta"
    assert system.whereis("alpha/root/spread/1") == "beta"
    assert system.whereis("alpha/root/spread") == "alpha"
    replies = {system.ask("alpha/root/spread", "whoami")[0] for _ in range(4)}
    assert replies == {"alpha/root/spread/0", "alpha/root/spread/1"}


def test_crash_on_another_node_reaches_the_asker_typed(running: LiveCluster) -> None:
    with pytest.raises(ActorCrashed) as raised:
        running.system.ask("alpha/root/remote/echo", "crash")
    assert raised.value.reason.type == "ValueError"
    assert "crash requested" in raised.value.reason.message


def test_asks_to_missing_paths_get_typed_errors(running: LiveCluster) -> None:
    with pytest.raises(NoSuchActor):
        running.system.ask("alpha/root/remote/nobody", "hi")
    with pytest.raises(TypeError, match="cannot send object"):
        running.system.ask("alpha/root/echo", object())


def test_a_supervisor_sees_the_crash_of_its_child_on_another_node(running: LiveCluster) -> None:
    system = running.system
    with pytest.raises(ActorCrashed):
        system.ask("alpha/root/spread/0", "crash")
    wait_until(
        lambda: [c.incarnation for c in system.ask("alpha/root/spread", WhichChildren())] == [2, 1],
        what="the pool on alpha to restart its replica on beta",
    )
    assert system.ask("alpha/root/spread/0", "whoami") == ["alpha/root/spread/0", 2]


def test_monitor_on_a_remote_path_delivers_down(running: LiveCluster) -> None:
    downs: list[Down] = []
    running.system.monitor("alpha/root/remote/echo", downs.append)
    assert running.system.ask("alpha/root/remote/echo", "exit") == "exiting"
    wait_until(lambda: len(downs) == 1, what="Down from beta")
    assert downs[0].path == "alpha/root/remote/echo"
    assert downs[0].reason.__class__.__name__ == "Normal"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_killed_or_frozen_node_is_detected_and_its_children_come_back(running: LiveCluster, how: str) -> None:
    events: list[object] = []
    running.cluster.watch_membership(events.append)
    downs: list[Down] = []
    running.system.monitor("alpha/root/remote/echo", downs.append)
    beta = running.processes["beta"]
    stopped_at = time.monotonic()
    beta.signal(getattr(signal, how))
    try:
        wait_until(lambda: NodeDown("beta") in events, timeout=5, what="NodeDown(beta)")
        detected = time.monotonic() - stopped_at
        assert detected < 2.0
        wait_until(lambda: len(downs) == 1, what="Down for the remote path")
        assert downs[0].reason == NodeDown("beta")
        with pytest.raises(NodeUnreachable):
            running.system.ask("alpha/root/remote/echo", "whoami")
        wait_until(
            lambda: _status(running, "alpha/root/spread") == ["restarting", "restarting"],
            what="alpha's pool to wait for beta",
        )
    finally:
        if how == "SIGSTOP":
            beta.signal(signal.SIGCONT)
    if how == "SIGKILL":
        beta.wait(5)
        running.start_node("beta")
    wait_until(
        lambda: NodeUp("beta") in events[events.index(NodeDown("beta")) :], timeout=20, what="NodeUp(beta) again"
    )
    wait_until(
        lambda: _status(running, "alpha/root/spread") == ["running", "running"],
        timeout=20,
        what="the pool's replicas to be restarted on beta",
    )
    wait_until(
        lambda: _answers(running, "alpha/root/remote/echo"),
        timeout=20,
        what="the remote subtree to be restarted on beta",
    )


def _answers(cluster: LiveCluster, path: str) -> bool:
    try:
        return cluster.system.ask(path, "whoami")[0] == path
    except (NodeUnreachable, Unavailable):
        return False
