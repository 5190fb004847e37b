"""Crawls that finish, on real node processes against a real site with bad pages and a dead
host: sick work stays with its own jobs and targets, every job ends within its wait budget,
work that nothing could take comes back uncounted, and a lost node's leases come back at once."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.actors.pipeline.journal import Journal, NewJob, natural_key
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, make_cluster, start_with_intake
from tests.processes import run_flotilla

RESILIENT_TREE = """
children:
  - id: alerts
    actor: alerts
  - id: breakers
    pool: {actor: breakers, size: 2, args: {alerts: alpha/root/alerts, open_base: 1.0, open_cap: 2.0}}
  - id: hold
    actor: hold
    args: {alerts: alpha/root/alerts, window: 10}
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, alerts: alpha/root/alerts, max_in_flight: 64,
           max_attempts: 3, transient_base: 0.1, transient_cap: 0.5, blocked_delay: 0.2, visibility: 30,
           wait_budget: 4}
  - id: fetching
    node: beta
    supervisor:
      children:
        - id: extractors
          pool: {actor: extractor, size: 2}
        - id: fetchers
          pool: {actor: fetcher, size: 2, args: {extractor: alpha/root/fetching/extractors, timeout: 2.0}}
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
resilience: {breakers: alpha/root/breakers, hold: alpha/root/hold}
"""

ACTIVE = ("pending", "fetching", "extracting", "retrying")


@pytest.fixture
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--flaky-failures", "1")
    yield process
    process.stop()


def settled(client: IntakeClient) -> bool:
    states = client.counts().states
    return sum(states[s] for s in ACTIVE) == 0


def test_a_crawl_with_a_dead_host_and_scattered_bad_pages_ends_with_every_healthy_page_stored(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    cluster = start_with_intake(tmp_path, clusters, RESILIENT_TREE, EXTRA, ("alpha", "beta"))
    dead_host = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    healthy = [f"{site.url}/product/{n}" for n in range(150)] + [f"{site.url}/flaky/{n}" for n in range(4)]
    bad = (
        [f"{site.url}/gone/{n}" for n in range(4)]
        + [f"{site.url}/drift/{n}" for n in range(2)]
        + [f"{site.url}/switch/{n}" for n in range(3)]
    )  # /switch answers 503, always
    dead = [f"{dead_host}/product/{n}" for n in range(20)]
    site.switch(503)
    urls = healthy[:75] + bad + dead + healthy[75:]
    assert cluster.topology.intakes
    began = time.monotonic()
    with IntakeClient.for_topology(cluster.topology) as client:
        client.submit([JobSpec(url, "product") for url in urls])
        wait_until(lambda: settled(client), timeout=60, what="every job to end")
        elapsed = time.monotonic() - began
        counts = client.counts()
        dead_jobs = {job.url: job.reason or "" for job in client.all_jobs("dead")}
    assert counts.results == len(healthy)  # no healthy page lost
    assert counts.states["parked"] == 2 and counts.states["dead"] == len(bad) - 2 + len(dead)
    target = dead_host.removeprefix("http://")
    assert all(
        target in reason or "Cannot connect" in reason for url, reason in dead_jobs.items() if url.startswith(dead_host)
    ), dead_jobs
    assert elapsed < 30  # the wait budget is 4 s: nothing waits for ever
    topology = str(cluster.topology_path)
    hold = json.loads(
        run_flotilla("shell", "--topology", topology, "--exec", "inspect alpha/root/hold", "--json").stdout
    )["data"]
    assert hold["state"]["entered"] == 0  # one dead host and a few bad pages never pause the fleet
    alerts = [e for e in cluster.processes["alpha"].events() if e.get("event") == "alert"]
    healthy_target = site.url.removeprefix("http://")
    assert not [a for a in alerts if healthy_target in a.get("title", "")], alerts  # its breaker never opened
    assert any(target in a.get("title", "") for a in alerts)  # the dead host's did, with one alert


SLOW_START_TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_in_flight: 50, visibility: 60}
  - id: fetching
    node: beta
    supervisor:
      children:
        - id: extractors
          pool: {actor: extractor, size: 1}
        - id: slow_to_start
          actor: tests.helpers:Probe
          args: {start_delay: 2.0}
        - id: fetchers
          pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/fetching/extractors}}
"""


def test_jobs_sent_before_the_fetchers_exist_come_back_without_spending_attempts(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    extra = EXTRA.replace("resilience: {breakers: alpha/root/breakers, hold: alpha/root/hold}\n", "")
    cluster = make_cluster(tmp_path, SLOW_START_TREE, nodes=("alpha", "beta"), extra=extra % free_ports(1)[0])
    clusters.append(cluster)
    urls = [f"{site.url}/product/{n}" for n in range(30)]
    journal = Journal(cluster.topology.node_data_dir("alpha") / "journal.sqlite")
    journal.submit([NewJob(natural_key(url, "product"), url, "product") for url in urls])  # waiting from before
    journal.close()
    cluster.start_node("beta")
    alpha = cluster.start_node("alpha")
    alpha.wait_for_event("intake.listening", timeout=30)
    assert cluster.topology.intakes
    with IntakeClient.for_topology(cluster.topology) as client:
        wait_until(lambda: client.counts().results == 30, timeout=30, what="every job to be stored")
        jobs = list(client.all_jobs("stored"))
    assert [job.attempts for job in jobs] == [1] * 30  # nothing burnt while the fetchers were starting
    journal = Journal(cluster.topology.node_data_dir("alpha") / "journal.sqlite")
    try:
        returned = [e for job in jobs for e in journal.history(job.key) if e.event == "returned"]
    finally:
        journal.close()
    assert returned  # they were sent before the fetchers existed, and came back at once


NODE_DOWN_TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_in_flight: 50, visibility: 120}
  - id: fetching
    node: beta
    supervisor:
      children:
        - id: extractors
          pool: {actor: extractor, size: 1}
        - id: fetchers
          pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/fetching/extractors, timeout: 30}}
"""


def test_the_leases_of_a_node_that_goes_down_come_back_at_once(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    extra = EXTRA.replace("resilience: {breakers: alpha/root/breakers, hold: alpha/root/hold}\n", "")
    cluster = start_with_intake(tmp_path, clusters, NODE_DOWN_TREE, extra, ("alpha", "beta"))
    assert cluster.topology.intakes
    with IntakeClient.for_topology(cluster.topology) as client:
        client.submit([JobSpec(f"{site.url}/slow/{n}?ms=20000", "product") for n in range(8)])
        wait_until(lambda: client.counts().states["fetching"] == 8, timeout=15, what="the slow pages in flight")
        cluster.processes["beta"].signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: client.counts().states["fetching"] == 0,
            timeout=10,
            what="the leases to come back at NodeDown, not after the 120 s visibility timeout",
        )
        assert time.monotonic() - killed < 10
        pending = list(client.all_jobs("pending"))
    assert len(pending) == 8 and all(job.attempts == 0 for job in pending)  # not counted against the jobs
