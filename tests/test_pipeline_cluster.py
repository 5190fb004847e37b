"""The ingestion pipeline across two real node processes, the real demo site and a real
journal, driven through the CLI as a user would."""

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
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_in_flight: 100, max_attempts: 3,
           transient_base: 0.05, transient_cap: 0.2, blocked_delay: 0.1, visibility: 5}
  - id: fetching
    node: beta
    supervisor:
      children:
        - id: extractors
          pool: {actor: extractor, size: 2}
        - id: fetchers
          pool: {actor: fetcher, size: 2, args: {extractor: alpha/root/fetching/extractors,
                 timeout: 1.0, max_body_bytes: 200000, max_redirects: 3}}
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
"""


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--flaky-failures", "1", "--huge-bytes", "300000", "--limited-rate", "1000")
    yield process
    process.stop()


def start(tmp_path: Path, clusters: list[LiveCluster]) -> LiveCluster:
    return start_with_intake(tmp_path, clusters, TREE, EXTRA, ("alpha", "beta"))


def test_jobs_submitted_with_the_cli_end_stored_dead_or_parked(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    cluster = start(tmp_path, clusters)
    urls = tmp_path / "urls.txt"
    good = [f"{site.url}/product/{i}" for i in range(200)]
    faulty = [f"{site.url}/flaky/1", f"{site.url}/gone/2", f"{site.url}/drift/3", f"{site.url}/captcha/4"]
    urls.write_text("\n".join(good + faulty + ["ftp://nowhere/x"]) + "\n", encoding="utf-8")
    topology = str(cluster.topology_path)
    submitted = run_flotilla("submit", str(urls), "--topology", topology)
    assert submitted.returncode == 3, submitted.stderr  # one job rejected
    assert "205 jobs: 204 accepted, 0 duplicates, 1 rejected" in submitted.stdout
    assert "rejected  -  ftp://nowhere/x  unsupported scheme 'ftp'" in submitted.stdout
    assert submitted.stdout.count("\naccepted  ") == 203  # one line per job, with its key
    again = run_flotilla("submit", good[0], "--topology", topology)
    assert "1 jobs: 0 accepted, 1 duplicates, 0 rejected" in again.stdout

    with IntakeClient.for_topology(cluster.topology) as client:

        def settled() -> bool:
            states = client.counts().states
            return states["pending"] + states["fetching"] + states["extracting"] + states["retrying"] == 0

        wait_until(settled, timeout=60, what="every job to settle")
        counts = client.counts()
    assert counts.states["stored"] == 201 and counts.states["dead"] == 2 and counts.states["parked"] == 1
    assert counts.results == 201

    results = run_flotilla("results", "--topology", topology)
    rows = [json.loads(line) for line in results.stdout.splitlines()]
    assert len(rows) == 201 and len({r["key"] for r in rows}) == 201
    assert {"title", "price"} <= set(rows[0]["fields"])
    csv_out = run_flotilla("results", "--format", "csv", "--topology", topology)
    assert len(csv_out.stdout.splitlines()) == 202
    dlq = run_flotilla("dlq", "list", "--topology", topology)
    assert "HARD: HTTP 404" in dlq.stdout and "BLOCKED" in dlq.stdout
    jobs = run_flotilla("jobs", "--state", "parked", "--topology", topology)
    assert "DRIFT: missing required fields: title, price" in jobs.stdout
    replay = run_flotilla("dlq", "replay", "--all", "--topology", topology)  # the dead and the parked
    assert replay.stdout.strip() == "3 jobs back to pending"


def _settled_counts(client: IntakeClient) -> dict[str, int] | None:
    counts = client.counts()
    states = counts.states
    if states["pending"] + states["fetching"] + states["extracting"] + states["retrying"]:
        return None
    return {**states, "results": counts.results}


@pytest.mark.parametrize("victim", ["beta", "alpha"])
def test_sigkill_of_a_node_mid_run_ends_with_every_acknowledged_job_stored_once(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster], victim: str
) -> None:
    """beta runs the fetchers; alpha runs the intake, the journal and the router."""
    import signal

    cluster = start(tmp_path, clusters)
    jobs = [JobSpec(f"{site.url}/slow/{i}?ms=300", "product") for i in range(600)]
    with IntakeClient.for_topology(cluster.topology, timeout=2, retries=20) as client:
        acked = [a for batch in client.submit_all(jobs, batch=200) for a in batch]
        assert {a.status for a in acked} == {"accepted"}
        wait_until(lambda: client.counts().states["stored"] >= 50, timeout=30, what="some jobs stored")
        process = cluster.processes[victim]
        process.signal(signal.SIGKILL)
        process.wait(5)
        restarted = cluster.start_node(victim)
        restarted.wait_for_event("node.started", timeout=30)
        final: dict[str, int] = {}

        def settled() -> bool:
            counts = _settled_counts(client)
            if counts is not None:
                final.update(counts)
            return counts is not None

        wait_until(settled, timeout=90, what="every job to settle after the kill")
        keys = {r.key for r in client.all_results()}
    assert final["stored"] == 600 and final["results"] == 600 and final["dead"] == 0
    assert keys == {a.key for a in acked}
