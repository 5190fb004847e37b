"""The shell reads the control actors through the typed snapshots they define: against a real
node process, `proxies`, `limits` and `breakers` show exactly the rows made from the state
`inspect PATH` shows, and that state decodes into the snapshot struct each actor declares
(so a renamed field fails here and in mypy, not as a KeyError in an operator's shell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from flotilla.actors.resilience.breakers import ShardSnapshot
from flotilla.actors.resilience.hold import HoldSnapshot
from flotilla.actors.resilience.limiter import LimiterSnapshot
from flotilla.actors.resilience.proxies import ProxySnapshot
from flotilla.nodes.config.topology import load_topology
from tests.cluster_harness import LiveCluster, write_topology
from tests.processes import run_flotilla

TREE = """
children:
  - id: breakers
    pool: {actor: breakers, size: 2}
  - id: limiter
    actor: limiter
    args: {default_rate: 4, rates: {"a.example:80": 2}}
  - id: hold
    actor: hold
  - id: proxies
    actor: proxies
    args: {proxies: ["http://127.0.0.1:9", "http://127.0.0.1:10"]}
"""

EXTRA = """
resilience: {breakers: alpha/root/breakers, limiter: alpha/root/limiter, hold: alpha/root/hold,
             proxies: alpha/root/proxies}
"""


def shell(cluster: LiveCluster, command: str) -> Any:
    done = run_flotilla("shell", "alpha", "--topology", str(cluster.topology_path), "--exec", command, "--json")
    answer = json.loads(done.stdout)
    assert done.returncode == 0 and answer["ok"], done.stdout + done.stderr
    return answer["data"]


def test_control_commands_show_the_typed_state_of_their_actors(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    path = write_topology(tmp_path, TREE, nodes=("alpha",), extra=EXTRA)
    cluster = LiveCluster(path, load_topology(path))
    clusters.append(cluster)
    cluster.start_node("alpha").wait_for_event("shell.listening", timeout=30)

    proxies = shell(cluster, "inspect alpha/root/proxies")["state"]
    assert msgspec.convert(proxies, dict[str, ProxySnapshot]) == {
        p: ProxySnapshot("closed", 1.0, 0.0, 0, 0) for p in ("http://127.0.0.1:9", "http://127.0.0.1:10")
    }
    assert shell(cluster, "proxies") == [{"proxy": p, **state} for p, state in proxies.items()]
    assert list(shell(cluster, "proxies")[0]) == ["proxy", "state", "health", "open_for", "calls", "failed"]

    limiter = shell(cluster, "inspect alpha/root/limiter")["state"]
    typed = msgspec.convert(limiter, LimiterSnapshot)
    assert typed.default_rate == 4.0 and typed.rates == {"a.example:80": 2.0}
    assert shell(cluster, "limits") == [
        {"target": "(default)", "rate": 4.0},
        *({"target": t, **info} for t, info in limiter["targets"].items()),
    ]

    for shard in (0, 1):
        state = shell(cluster, f"inspect alpha/root/breakers/{shard}")["state"]
        assert msgspec.convert(state, ShardSnapshot) == ShardSnapshot(shard, 0, 0, {})
    assert shell(cluster, "breakers") == []

    hold = msgspec.convert(shell(cluster, "inspect alpha/root/hold")["state"], HoldSnapshot)
    assert (hold.on, hold.mode, hold.entered) == (False, "auto", 0)
