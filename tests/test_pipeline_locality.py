"""Pages are extracted on the node that fetched them: with fetchers and extractors on two
worker nodes and both pools supervised on the intake node, the intake node's transport
carries the jobs and their outcomes but no page bodies (its traffic per job does not grow
with the page); with no extractor on the fetching node, pages go to a remote one and every
job is stored all the same. Underneath: a node that runs replicas of a pool supervised
elsewhere sends the pool's work to them, and to the pool's node once none runs here. Real
node processes, the real demo site, the intake node's /metrics endpoint."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flotilla.actors.core.messages import WhichChildren
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, make_cluster, write_topology

PAGE_BYTES = 10_000
"""The size of every page fetched here (the demo site's /huge/N)."""
PAGES = 400

LOCAL_TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers, max_in_flight: 200, visibility: 30}
  - id: extractors
    nodes: [beta, gamma]
    pool: {actor: extractor, size: 2}
  - id: fetchers
    nodes: [beta, gamma]
    pool: {actor: fetcher, size: 2, args: {extractor: alpha/root/extractors}}
"""

REMOTE_TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers, max_in_flight: 200, visibility: 30}
  - id: extractors
    nodes: [gamma]
    pool: {actor: extractor, size: 1}
  - id: fetchers
    nodes: [beta]
    pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/extractors}}
"""

EXTRA = """
rules:
  page:
    fields:
      title: {css: title}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
"""


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--huge-bytes", str(PAGE_BYTES))
    yield process
    process.stop()


def start(tmp_path: Path, clusters: list[LiveCluster], tree: str) -> tuple[LiveCluster, int]:
    """alpha (intake, router, both pools' supervisors, metrics), beta and gamma."""
    intake_port, metrics_port = free_ports(2)
    nodes = ("alpha", "beta", "gamma")
    path = write_topology(tmp_path, tree, nodes=nodes, extra=EXTRA % intake_port)
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("  alpha: {address: ", f"  alpha: {{metrics: '127.0.0.1:{metrics_port}', address: "),
        encoding="utf-8",
    )
    cluster = LiveCluster(path, load_topology(path))
    clusters.append(cluster)
    for node in nodes[1:]:
        cluster.start_node(node)
    cluster.start_node("alpha").wait_for_event("intake.listening", timeout=30)
    return cluster, metrics_port


def alpha_traffic(port: int) -> int:
    """Bytes alpha's transport has sent to and received from its peers, all told."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("flotilla_transport_sent_bytes_total", "flotilla_transport_received_bytes_total"):
                total += sample.value
    return int(total)


def metrics_served(port: int) -> bool:
    try:
        return alpha_traffic(port) > 0
    except OSError:  # not listening yet
        return False


def run_pages(cluster: LiveCluster, port: int, site: DemoSiteProcess) -> float:
    """Submit `PAGES` pages and wait until all are stored; alpha's bytes per page meanwhile."""
    with IntakeClient.for_topology(cluster.topology) as client:
        before = alpha_traffic(port)
        client.submit([JobSpec(f"{site.url}/huge/{n}", "page") for n in range(PAGES)])
        wait_until(lambda: client.counts().states["stored"] == PAGES, timeout=90, what="every page stored")
        return (alpha_traffic(port) - before) / PAGES


def test_pages_are_extracted_on_the_node_that_fetched_them(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    cluster, port = start(tmp_path, clusters, LOCAL_TREE)
    wait_until(lambda: metrics_served(port), timeout=20, what="alpha's metrics")
    per_page = run_pages(cluster, port, site)
    # a FetchJob out and a JobOutcome back (and heartbeats): well under one page of 10 KB
    print(f"alpha: {per_page:.0f} bytes per {PAGE_BYTES}-byte page, extracted where fetched")
    assert per_page < 1024, f"alpha moved {per_page:.0f} bytes per {PAGE_BYTES}-byte page"


def test_with_no_extractor_on_the_fetching_node_pages_go_to_a_remote_one(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    cluster, port = start(tmp_path, clusters, REMOTE_TREE)
    wait_until(lambda: metrics_served(port), timeout=20, what="alpha's metrics")
    per_page = run_pages(cluster, port, site)
    # beta's pages reach gamma's extractor through the pool's node: in once, out once
    print(f"alpha: {per_page:.0f} bytes per {PAGE_BYTES}-byte page, extracted on another node")
    assert per_page > 2 * PAGE_BYTES, f"alpha moved {per_page:.0f} bytes per {PAGE_BYTES}-byte page"


SPREAD_TREE = """
children:
  - id: spread
    pool: {actor: "tests.helpers:Probe", size: 4}
    nodes: [beta, tester]
"""


def test_a_pool_supervised_elsewhere_prefers_its_replicas_on_the_sending_node(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = make_cluster(tmp_path, SPREAD_TREE)  # alpha supervises; replicas 1 and 3 run in this process
    clusters.append(cluster)
    cluster.start_node("beta")
    cluster.start_node("alpha")
    system = cluster.join()
    cluster.wait_up("alpha", "beta")
    pool = "alpha/root/spread"

    def running() -> int:
        try:
            return sum(c.status == "running" for c in system.ask(pool, WhichChildren(), timeout=2))
        except Exception:  # noqa: BLE001 - not up yet
            return 0

    wait_until(lambda: running() == 4, timeout=20, what="the pool's four replicas")
    assert {system.ask(pool, "whoami")[0] for _ in range(8)} == {f"{pool}/1", f"{pool}/3"}
    system.supervisor(pool).scale(1)  # only replica 0 is left, on beta
    assert {system.ask(pool, "whoami")[0] for _ in range(4)} == {f"{pool}/0"}
