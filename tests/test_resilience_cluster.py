"""The resilience actors across three real node processes, driven through the CLI: every
node's gate reports to control actors on another node, a rate limit holds for fetchers on
two nodes together (counted by the site), drift seen on the fetching nodes together opens the breaker for
all, and an operator forces Hold on (results are served, marked stale) and off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import DemoSiteProcess, wait_until
from tests.cluster_harness import LiveCluster, start_with_intake
from tests.processes import run_flotilla

TREE = """
children:
  - id: alerts
    actor: alerts
  - id: breakers
    pool: {actor: breakers, size: 2, args: {alerts: alpha/root/alerts, open_base: 60, drift_minimum: 10}}
  - id: limiter
    actor: limiter
    args: {default_rate: 25}
  - id: hold
    actor: hold
    args: {alerts: alpha/root/alerts}
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers, max_in_flight: 200, transient_base: 0.05, visibility: 20}
  - id: extractors
    nodes: [beta, gamma]
    pool: {actor: extractor, size: 2}
  - id: fetchers
    nodes: [beta, gamma]
    pool: {actor: fetcher, size: 4, args: {extractor: alpha/root/extractors}}
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
resilience: {breakers: alpha/root/breakers, limiter: alpha/root/limiter, hold: alpha/root/hold}
"""


@pytest.fixture
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess()
    yield process
    process.stop()


def start(tmp_path: Path, clusters: list[LiveCluster]) -> LiveCluster:
    return start_with_intake(tmp_path, clusters, TREE, EXTRA, ("alpha", "beta", "gamma"))


def test_limits_breakers_and_hold_across_nodes(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    cluster = start(tmp_path, clusters)
    topology = str(cluster.topology_path)
    assert cluster.topology.intakes
    with IntakeClient.for_topology(cluster.topology) as client:
        client.submit([JobSpec(f"{site.url}/product/{n}", "product") for n in range(75)])
        wait_until(lambda: client.counts().results == 75, timeout=40, what="every job to be stored")
        family = site.stats()["families"]["/product"]
        assert family["busiest_second"] <= 28  # 25/s for fetchers on beta and gamma together
        assert family["last"] - family["first"] >= 2.5  # 75 requests at 25/s take ~3 s

        client.submit([JobSpec(f"{site.url}/drift/{n}", "product") for n in range(20)])  # the layout changed
        alpha = cluster.processes["alpha"]
        alpha.wait_for_event("alert", timeout=20)  # raised by the shard once every node was told
        wait_until(lambda: client.counts().states["parked"] >= 10, timeout=20, what="the drifted jobs parked")
        fetched = site.stats()["families"]["/product"]["count"]
        more = client.submit([JobSpec(f"{site.url}/product/{n}", "product") for n in range(100, 110)])
        wait_until(
            lambda: all("breaker open" in (j.reason or "") for j in client.status([a.key for a in more])),
            timeout=20,
            what="jobs for the drifted target to wait behind its breaker",
        )
        assert site.stats()["families"]["/product"]["count"] == fetched  # none reached the drifted target
        shown = run_flotilla("shell", "beta", "--topology", topology, "--exec", "breakers", "--json")
        rows = json.loads(shown.stdout)["data"]
        assert [(r["target"], r["state"]) for r in rows] == [(site.url.removeprefix("http://"), "open")]
        assert "layout drift" in rows[0]["reason"]
        limits = json.loads(run_flotilla("shell", "--topology", topology, "--exec", "limits", "--json").stdout)["data"]
        assert limits[0] == {"target": "(default)", "rate": 25.0} and limits[1]["granted"] >= 75

        held = run_flotilla("hold", "on", "--topology", topology)
        assert held.returncode == 0 and "hold on since" in held.stdout and "mode on" in held.stdout
        wait_until(
            lambda: "stale: the fleet is in Hold" in run_flotilla("results", "--topology", topology).stderr,
            timeout=10,
            what="results marked stale",
        )
        results = run_flotilla("results", "--topology", topology)
        assert results.returncode == 0 and len(results.stdout.splitlines()) == 75  # still served
        released = run_flotilla("hold", "off", "--topology", topology)
        assert released.returncode == 0 and "hold off (mode off" in released.stdout
        wait_until(
            lambda: not run_flotilla("results", "--topology", topology).stderr,
            timeout=10,
            what="results no longer stale",
        )
