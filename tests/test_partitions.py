"""Partitions: every node in a network namespace of its own (tests/netns.py), real node
processes talking CURVE over veth pairs and a bridge, and a cable pulled and plugged back.

The first test needs nothing but namespaces: a node cut off is seen down by its peers (its
heartbeats stop arriving), stops the children it hosted for a parent it cannot hear, and gets
them back from that parent once the link is restored."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.harness import wait_until
from tests.netns import Network, namespaces_unavailable
from tests.processes import FlotillaProcess

NODE_PORT = 7100
"""Every node listens on this port of its own host's address (each namespace has its own ports)."""
HEARTBEAT_TIMEOUT = 1.0
DETECTION_BOUND = 4.0
"""A cut node must be seen down within this long (heartbeat timeout plus a tick, with slack
for a loaded machine)."""


@pytest.fixture
def networks() -> Iterator[Callable[..., Network]]:
    """Make `Network`s of named hosts; each one torn down after the test, whatever its outcome."""
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)
    made: list[Network] = []

    def make(*hosts: str) -> Network:
        network = Network(hosts)
        made.append(network)
        return network

    yield make
    for network in made:
        network.close()


def write_topology(directory: Path, network: Network, nodes: tuple[str, ...], tree: str, extra: str = "") -> Path:
    """A topology whose nodes listen on their own host's address in `network`."""
    lines = ["cluster: partition", f"data_dir: '{directory / 'data'}'", "nodes:"]
    lines += [f"  {name}: {{address: 'tcp://{network.address(name)}:{NODE_PORT}'}}" for name in nodes]
    lines.append(f"transport: {{heartbeat_interval: 0.1, heartbeat_timeout: {HEARTBEAT_TIMEOUT}, node_wait: 30}}")
    lines.append(textwrap.dedent(extra).strip())
    lines.append("tree:")
    lines.append(textwrap.indent(textwrap.dedent(tree).strip(), "  "))
    path = directory / "cluster.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_node(network: Network, topology: Path, node: str) -> FlotillaProcess:
    """Node `node` in its own host's namespace, logging JSON."""
    return network.start_flotilla(
        node, "node", "start", "--topology", str(topology), "--node", node, "--log-format", "json"
    )


def shell(network: Network, topology: Path, node: str, command: str) -> Any:
    """One shell command on `node`, run from inside its host; its answer's data."""
    done = network.run_flotilla(node, "shell", node, "--topology", str(topology), "--exec", command, "--json")
    answer = json.loads(done.stdout)
    assert answer["ok"], (command, answer, done.stderr)
    return answer["data"]


def statuses(network: Network, topology: Path, supervisor: str) -> dict[str, str]:
    """Each child of `supervisor` (on alpha) and its status."""
    return {child["id"]: child["status"] for child in shell(network, topology, "alpha", f"which_children {supervisor}")}


def wait_for_statuses(
    network: Network, topology: Path, supervisor: str, want: dict[str, str], timeout: float, what: str
) -> None:
    """Wait until the children of `supervisor` named in `want` have those statuses (each
    look is a shell process started inside alpha's host)."""
    seen: dict[str, str] = {}

    def reached() -> bool:
        seen.update(statuses(network, topology, supervisor))
        return all(seen.get(child) == status for child, status in want.items())

    try:
        wait_until(reached, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen}") from None


SPREAD_TREE = """
children:
  - id: tally
    actor: tally
  - id: counting
    node: beta
    supervisor:
      intensity: 20
      children:
        - id: workers
          pool: {actor: flaky, size: 2, args: {crash_rate: 0, report_to: alpha/root/tally}}
        - id: ticker
          actor: ticker
          args: {target: alpha/root/counting/workers, interval: 0.05}
  - id: steady
    node: gamma
    supervisor:
      children:
        - {id: tally, actor: tally}
"""


def test_a_node_cut_off_is_seen_down_stops_its_orphans_and_gets_its_subtree_back_when_the_link_heals(
    tmp_path: Path, networks: Callable[..., Network]
) -> None:
    network = networks("alpha", "beta", "gamma")
    topology = write_topology(tmp_path, network, ("alpha", "beta", "gamma"), SPREAD_TREE)
    beta = start_node(network, topology, "beta")
    gamma = start_node(network, topology, "gamma")
    alpha = start_node(network, topology, "alpha")
    alpha.wait_for_event("node.started", timeout=60)
    running = {"tally": "running", "counting": "running", "steady": "running"}
    wait_for_statuses(network, topology, "alpha/root", running, 30, "the tree to run on all three hosts")

    network.cut("beta")
    cut_at = time.monotonic()
    down = alpha.wait_for_event("cluster.node_down", timeout=DETECTION_BOUND + 5, peer="beta")
    detected = time.monotonic() - cut_at
    assert "silent" in down["why"], down  # its heartbeats stopped arriving: nothing was refused or reset
    assert detected < DETECTION_BOUND, detected
    gamma.wait_for_event("cluster.node_down", timeout=DETECTION_BOUND + 5, peer="beta")
    beta.wait_for_event("cluster.node_down", timeout=DETECTION_BOUND + 5, peer="alpha")
    orphan = beta.wait_for_event("host.orphan_stopped", timeout=20, path="alpha/root/counting")
    assert orphan["parent_node"] == "alpha"
    during = statuses(network, topology, "alpha/root")
    assert during["counting"] != "running" and during["steady"] == "running", during
    assert not [e for e in alpha.events() if e.get("event") == "cluster.node_down" and e.get("peer") == "gamma"]

    network.heal("beta")
    healed_at = time.monotonic()
    alpha.wait_for_event("cluster.node_up", timeout=30, count=2, peer="beta")
    rejoined = time.monotonic() - healed_at
    wait_for_statuses(network, topology, "alpha/root", running, 30, "alpha's supervisor to restart beta's subtree")
    restarted = time.monotonic() - healed_at
    counts = shell(network, topology, "alpha", "count_children alpha/root/counting/workers")
    assert counts["active"] == 2, counts
    print(
        f"\nbeta cut off: seen down in {detected:.2f} s; healed: up in {rejoined:.2f} s, subtree in {restarted:.2f} s"
    )
