"""A real pipeline node for the hostile-input tests: node "alpha" runs the router, the intake,
extractors and fetchers against the demo site; the test process joins as node "tester" so it
can write envelopes to alpha's transport like any peer."""

from __future__ import annotations

import random
import re
import socket
import textwrap
from pathlib import Path

from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from flotilla.nodes.shell.client import ShellClient
from flotilla.nodes.shell.protocol import shell_address
from scripts.harness import wait_until
from tests.cluster_harness import LiveCluster

TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers, max_in_flight: 50, max_attempts: 2,
           transient_base: 0.05, transient_cap: 0.2, blocked_delay: 0.1, visibility: 30}
  - id: extractors
    pool: {actor: extractor, size: 2, args: {parse_timeout: 2}}
  - id: fetchers
    pool: {actor: fetcher, size: 2, args: {extractor: alpha/root/extractors, timeout: 5.0,
           max_body_bytes: 3000000, max_redirects: 3}}
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
egress: {allow: [127.0.0.1]}
"""


def listenable_ports(count: int) -> list[int]:
    """Free loopback ports below the kernel's ephemeral range: a node connecting again and
    again to a peer that is not listening yet can otherwise connect to itself from that very
    port (a TCP self-connect) and take it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def start_pipeline(directory: Path, clusters: list[LiveCluster]) -> LiveCluster:
    """Node alpha running, the tester joined and alpha seen up."""
    alpha, tester, intake = listenable_ports(3)
    path = directory / "cluster.yaml"
    path.write_text(
        f"""cluster: test
nodes:
  alpha: {{address: 'tcp://127.0.0.1:{alpha}'}}
  tester: {{address: 'tcp://127.0.0.1:{tester}'}}
transport: {{heartbeat_interval: 0.2, heartbeat_timeout: 3.0, node_wait: 20}}  # patient: the fuzz loads the machine
{textwrap.dedent(EXTRA % intake)}
tree:
{textwrap.indent(textwrap.dedent(TREE).strip(), "  ")}
""",
        encoding="utf-8",
    )
    cluster = LiveCluster(path, load_topology(path))
    clusters.append(cluster)
    cluster.join("tester")
    cluster.start_node("alpha").wait_for_event("intake.listening", timeout=30)
    cluster.wait_up("alpha")
    return cluster


def memory_kb(cluster: LiveCluster, field: str = "VmHWM") -> int:
    """alpha's resident memory (VmRSS) or its peak so far (VmHWM), in kB."""
    status = Path(f"/proc/{cluster.processes['alpha'].proc.pid}/status").read_text(encoding="utf-8")
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


def shell_call(cluster: LiveCluster, command: str, *args: str) -> object:
    client = ShellClient(shell_address(cluster.topology.node_data_dir("alpha")), timeout=20)
    try:
        return client.call(command, list(args))
    finally:
        client.close()


def refused(cluster: LiveCluster, socket: str, reason: str) -> float:
    """`flotilla_refused_frames_total{socket, reason}` as alpha reports it."""
    text = shell_call(cluster, "metrics").data  # type: ignore[attr-defined]
    found = re.search(rf'^flotilla_refused_frames_total{{reason="{reason}",socket="{socket}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def stored(cluster: LiveCluster, url: str, timeout: float = 30.0) -> None:
    """Submit `url` as a product job and wait until its result is stored."""
    with IntakeClient.for_topology(cluster.topology) as client:  # type: ignore[union-attr]
        ack = client.submit([JobSpec(url, "product")])[0]
        assert ack.status in ("accepted", "duplicate"), ack
        wait_until(lambda: client.status([ack.key])[0].state == "stored", timeout=timeout, what=f"{url} to be stored")
