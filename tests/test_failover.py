"""No node is special: node processes on a real PostgreSQL journal, two candidates for the
tree (alpha first, gamma second), each with an intake and a router, fetchers on beta. The
owner is killed in the middle of a run, stopped, and brought back; jobs keep flowing through
the other node and none is lost or stored twice. (tests/test_partitions.py cuts the owner off
the network instead.)"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from flotilla.actors.pipeline.leases import LeaseTable
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, make_cluster

NODES = ("alpha", "gamma", "beta")

TREE = """
children:
  - id: routers
    nodes: [alpha, gamma]
    pool: {actor: router, size: 2, args: {fetchers: alpha/root/fetching/fetchers, max_in_flight: 256,
           max_attempts: 3, transient_base: 0.05, transient_cap: 0.2, visibility: 8}}
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
journal: "%(journal)s"
failover: {candidates: [alpha, gamma], failback: %(failback)s, lease: 2.0}
intake:
  - {node: alpha, address: "tcp://127.0.0.1:%(a)d", router: alpha/root/routers}
  - {node: gamma, address: "tcp://127.0.0.1:%(g)d", router: alpha/root/routers}
"""


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess()
    yield process
    process.stop()


def start(tmp_path: Path, clusters: list[LiveCluster], journal: str, failback: str = "stay") -> LiveCluster:
    """The three nodes, alpha first (so that it takes the lease), every intake listening and
    the fetchers running on beta."""
    a, g = free_ports(2)
    extra = EXTRA % {"journal": journal, "failback": failback, "a": a, "g": g}
    cluster = make_cluster(tmp_path, TREE, nodes=NODES, extra=extra)
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    alpha.wait_for_event("ownership.tree_started", timeout=30)
    cluster.start_node("gamma").wait_for_event("intake.listening", timeout=30)
    cluster.start_node("beta")
    alpha.wait_for_event("supervisor.child_started", timeout=30, child="alpha/root/fetching")
    return cluster


def stored(journal: str) -> tuple[int, int, int]:
    """(results, attempts that stored a result, jobs stored) in the journal: a job stored twice
    would show as two stored attempts (the results table keeps one row per key whatever)."""
    with psycopg.connect(journal) as conn:
        results = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]  # type: ignore[index]
        attempts = conn.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'stored'").fetchone()[0]  # type: ignore[index]
        jobs = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'stored'").fetchone()[0]  # type: ignore[index]
    return results, attempts, jobs


def test_sigkill_of_the_owner_and_its_intake_mid_run_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster], postgres_url: str
) -> None:
    n = 10_000
    site.reset()
    cluster = start(tmp_path, clusters, postgres_url)
    alpha, gamma = cluster.processes["alpha"], cluster.processes["gamma"]
    jobs = [JobSpec(f"{site.url}/product/{k}", "product") for k in range(n)]
    with IntakeClient.for_topology(cluster.topology, timeout=2.0, retries=5) as client:
        assert client.address == cluster.topology.intakes[0].address  # alpha's intake answers first
        for _ in client.submit_all(jobs[: n // 2], batch=500):
            pass
        wait_until(lambda: stored(postgres_url)[2] >= n // 10, timeout=60, what="a tenth of the jobs stored")

        alpha.signal(signal.SIGKILL)  # the owner of the tree, with its intake and its router
        killed_at = time.time()
        for _ in client.submit_all(jobs[n // 2 :], batch=500):  # the rest through gamma's intake
            pass
        assert client.address == cluster.topology.intakes[1].address
        acquired = gamma.wait_for_event("ownership.acquired", timeout=30)
        wait_until(lambda: stored(postgres_url)[2] == n, timeout=180, what="every job stored")
        assert client.counts().states["stored"] == n

    results, stored_attempts, jobs_stored = stored(postgres_url)
    assert (results, stored_attempts, jobs_stored) == (n, n, n)  # none lost, none stored twice
    by_path = site.stats()["by_path"]
    fetched = [by_path.get(f"/product/{k}", 0) for k in range(n)]
    assert min(fetched) >= 1  # every page reached the site
    takeover = datetime.fromisoformat(acquired["timestamp"].replace("Z", "+00:00")).timestamp() - killed_at
    assert takeover < 2.0 + 3.0  # the lease, plus the time to notice it ran out
    print(
        f"\n{n} jobs: owner killed after {n // 10}+ stored; gamma took over {takeover:.2f} s later; "
        f"{sum(1 for f in fetched if f > 1)} pages fetched more than once (leases lost with alpha), each stored once"
    )


def test_a_stopped_owner_hands_over_at_once_and_a_returning_one_stays_standby(
    tmp_path: Path, clusters: list[LiveCluster], postgres_url: str
) -> None:
    cluster = start(tmp_path, clusters, postgres_url)
    alpha, gamma = cluster.processes["alpha"], cluster.processes["gamma"]
    stopped_at = time.monotonic()
    alpha.signal(signal.SIGTERM)
    assert alpha.wait(30) == 0
    released = [e for e in alpha.events() if e["event"] == "ownership.released"]
    assert released and released[0]["why"] == "the node is stopping"
    gamma.wait_for_event("ownership.tree_started", timeout=10)
    handover = time.monotonic() - stopped_at
    assert handover < 2.0 + 5.0  # released, not run out: well under a lease plus the stop
    print(f"\nSIGTERM of the owner → tree running on gamma after {handover:.2f} s")

    back = cluster.start_node("alpha")
    back.wait_for_event("cluster.owner", timeout=30, owner="gamma")
    wait_until(
        lambda: any(e["event"] == "cluster.node_up" and e["peer"] == "gamma" for e in back.events()),
        timeout=10,
        what="alpha hears gamma",
    )
    # alpha claims every half second: gamma must keep renewing through two leases meanwhile
    leases = LeaseTable(postgres_url)
    window_end = time.time() + 2 * 2.0

    def gamma_renewed_past_the_window() -> bool:
        held = leases.holder("tree")
        assert held is not None and held.holder.startswith("gamma/"), held
        return time.time() + held.remaining >= window_end + 2.0  # a renewal made after the window

    wait_until(gamma_renewed_past_the_window, timeout=30, what="gamma renews through two leases")
    leases.close()
    assert not any(e["event"] == "ownership.acquired" for e in back.events())
    assert not any(e["event"] == "ownership.released" for e in gamma.events())


def test_with_failback_return_the_first_candidate_takes_the_tree_back(
    tmp_path: Path, clusters: list[LiveCluster], postgres_url: str
) -> None:
    cluster = start(tmp_path, clusters, postgres_url, failback="return")
    alpha, gamma = cluster.processes["alpha"], cluster.processes["gamma"]
    alpha.signal(signal.SIGKILL)
    gamma.wait_for_event("ownership.tree_started", timeout=30)
    back = cluster.start_node("alpha")
    back.wait_for_event("ownership.tree_started", timeout=30)
    released = gamma.wait_for_event("ownership.released", timeout=5)
    assert "alpha is back" in released["why"]
    tokens = [e["token"] for e in back.events() if e["event"] == "ownership.acquired"]
    assert tokens and tokens[0] >= 3  # alpha's first, gamma's, then alpha's again
