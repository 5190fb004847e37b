"""Real clusters for tests: node subprocesses on loopback, plus the test process itself
joined as a node ("tester") so that it can tell, ask and watch across real sockets."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.actors import ActorSystem
from flotilla.actors.core.messages import WhichChildren
from flotilla.nodes.cluster.membership import Cluster
from flotilla.nodes.config.topology import Topology, load_topology
from flotilla.nodes.security.keys import CurveKeys
from scripts.harness import free_ports, wait_until
from tests.processes import FlotillaProcess


def write_topology(
    directory: Path, tree: str, *, nodes: tuple[str, ...] = ("alpha", "beta", "tester"), extra: str = ""
) -> Path:
    """A topology file with `nodes` on free loopback ports and the given `tree:` body."""
    ports = free_ports(len(nodes))
    lines = ["cluster: test", "nodes:"]
    lines += [f"  {name}: {{address: 'tcp://127.0.0.1:{port}'}}" for name, port in zip(nodes, ports, strict=True)]
    lines.append("transport: {heartbeat_interval: 0.1, heartbeat_timeout: 0.6, node_wait: 20}")
    if "egress:" not in extra:
        lines.append("egress: {allow: [127.0.0.1]}  # the tests' sites")
    lines.append(textwrap.dedent(extra))
    lines.append("tree:")
    lines.append(textwrap.indent(textwrap.dedent(tree).strip(), "  "))
    path = directory / "cluster.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class LiveCluster:
    """Node processes plus the in-process "tester" node."""

    topology_path: Path
    topology: Topology
    processes: dict[str, FlotillaProcess] = field(default_factory=dict)
    system: ActorSystem | None = None
    cluster: Cluster | None = None

    def start_node(self, name: str) -> FlotillaProcess:
        process = FlotillaProcess(
            "node", "start", "--topology", str(self.topology_path), "--node", name, "--log-format", "json"
        )
        self.processes[name] = process
        return process

    def join(self, name: str = "tester", keys: CurveKeys | None = None) -> ActorSystem:
        self.system = ActorSystem(name)
        self.cluster = Cluster(self.topology, name, self.system, keys)
        self.cluster.start()
        return self.system

    def wait_up(self, *nodes: str, timeout: float = 20.0) -> None:
        assert self.cluster is not None
        for node in nodes:
            assert self.cluster.wait_up(node, timeout), f"node {node} did not come up"

    def wait_tree_running(self, timeout: float = 20.0) -> None:
        """Wait until every child of the tree runs, on whatever node (a node's `node.started`
        does not wait for the children placed on peers it has not heard yet)."""
        wait_until(lambda: self._all_running(self.topology.root_path), timeout=timeout, what="the whole tree to run")

    def _all_running(self, supervisor: str) -> bool:
        assert self.system is not None, "join() first"
        try:
            children = self.system.ask(supervisor, WhichChildren(), timeout=2)
        except Exception:  # noqa: BLE001 - not reachable yet
            return False
        return all(
            child.status == "running" and (child.kind == "worker" or self._all_running(child.path))
            for child in children
        )

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
        if self.cluster is not None:
            self.cluster.close()
        if self.system is not None:
            self.system.stop(timeout=5)


def start_with_intake(
    directory: Path, clusters: list[LiveCluster], tree: str, extra: str, nodes: tuple[str, ...]
) -> LiveCluster:
    """A cluster of `nodes` whose `extra` topology text puts an intake (on a free port, its
    ``%d``) on the first node; every node started, and the intake listening."""
    cluster = make_cluster(directory, tree, nodes=nodes, extra=extra % free_ports(1)[0])
    clusters.append(cluster)
    for node in nodes[1:]:
        cluster.start_node(node)
    cluster.start_node(nodes[0]).wait_for_event("intake.listening", timeout=30)
    return cluster


def make_cluster(directory: Path, tree: str, **kwargs: object) -> LiveCluster:
    path = write_topology(directory, tree, **kwargs)  # type: ignore[arg-type]
    return LiveCluster(path, load_topology(path))
