"""The pieces of tree ownership that need no cluster: a released root, and fencing tokens in
the directory (tests/test_failover.py runs them between real nodes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.actors import ActorSystem, ChildSpec, SupervisorSpec, Unavailable
from flotilla.nodes.config.directory import Directory
from flotilla.nodes.config.topology import TopologyError, load_topology, parse_topology
from tests.helpers import Probe

TREE = SupervisorSpec(
    "root", children=(ChildSpec("a", Probe), SupervisorSpec("sub", children=(ChildSpec("x", Probe),)))
)


def test_a_released_root_stops_its_tree_quietly_and_can_start_again(system: ActorSystem) -> None:
    heard: list[object] = []
    system.add_root_exit_listener(heard.append)
    system.start(TREE)
    first = system.wait_started("t/root/sub/x")
    assert system.registry.lookup_local("t/root/a") is not None

    system.release_root(timeout=5)

    assert heard == []  # a node listening for its root's end does not stop
    assert system.registry.lookup_local("t/root/a") is None  # forgotten: refs re-resolve
    assert not system.ref("t/root/a").is_alive()
    assert system.wait(timeout=0) is None
    system.start(TREE)
    assert system.wait_started("t/root/sub/x") == first  # a new tree: numbering starts over
    assert system.ref("t/root/a").is_alive()


def test_releasing_nothing_is_harmless(system: ActorSystem) -> None:
    assert system.release_root(timeout=1) is None
    system.start(TREE)
    system.wait_started("t/root/a")
    system.release_root(timeout=5)
    with pytest.raises(Unavailable):
        system.ask("t/root/a", "ping", timeout=0.5)


TOPOLOGY = """
nodes:
  alpha: {address: "tcp://127.0.0.1:7401"}
  beta: {address: "tcp://127.0.0.1:7402"}
  gamma: {address: "tcp://127.0.0.1:7403"}
journal: postgresql://flotilla@127.0.0.1:5432/flotilla
failover: {candidates: [alpha, gamma]}
tree:
  children:
    - {id: a, actor: tally}
    - {id: far, node: beta, supervisor: {children: [{id: x, actor: tally}]}}
"""


def test_unplaced_paths_follow_the_owner_with_the_newest_token(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY, encoding="utf-8")
    directory = Directory(load_topology(path))
    assert directory.whereis("alpha/root/a") == "alpha"  # the first candidate until a lease is heard
    assert directory.owned("alpha/root/a") and not directory.owned("alpha/root/far/x")

    assert directory.set_owner("gamma", 3)
    assert directory.whereis("alpha/root") == directory.whereis("alpha/root/a") == "gamma"
    assert directory.whereis("alpha/root/far/x") == "beta"  # placed: it stays where it is

    assert not directory.set_owner("alpha", 2)  # a stale owner's claim changes nothing
    assert directory.whereis("alpha/root/a") == "gamma"
    assert directory.set_owner("gamma", 3)  # the owner's own renewals are accepted
    assert directory.set_owner("alpha", 4)
    assert directory.whereis("alpha/root/a") == "alpha"


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            "failover: {candidates: [alpha, gamma]}",
            "t.yaml:6: failover.candidates: failover between nodes needs a PostgreSQL journal",
        ),
        (
            "journal: postgresql://f@127.0.0.1/f\nfailover: {candidates: [alpha, alpha]}",
            "t.yaml:7: failover.candidates: names a node twice",
        ),
        (
            "journal: postgresql://f@127.0.0.1/f\nfailover: {candidates: [alpha, gamma], failback: retun}",
            "t.yaml:7: failover.failback: 'retun' is not one of stay, return (did you mean 'return'?)",
        ),
        (
            "journal: postgresql://f@127.0.0.1/f\nfailover: {candidates: [alpha, nowhere]}",
            "t.yaml:7: failover.candidates: 'nowhere' not a node of this topology",
        ),
    ],
)
def test_failover_problems_are_located(tmp_path: Path, section: str, problem: str) -> None:
    text = TOPOLOGY.replace("journal: postgresql://flotilla@127.0.0.1:5432/flotilla\n", "").replace(
        "failover: {candidates: [alpha, gamma]}", section
    )
    with pytest.raises(TopologyError) as raised:
        parse_topology(text, "t.yaml", tmp_path)
    assert problem in str(raised.value), str(raised.value)
