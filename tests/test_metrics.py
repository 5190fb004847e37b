"""The pipeline's metrics are fed by what its actors publish: a real node runs a router,
fetchers and a rate limiter against the real demo site, jobs go in through the intake, and
its /metrics endpoint, scraped and parsed with prometheus_client's parser, shows the jobs,
outcomes, failures, latencies and fetcher loads that work produced; a scaled-down pool's
fetcher leaves the metrics, and a restarted router counts from zero again."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flotilla.actors.pipeline.observations import OUTCOMES
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, write_topology
from tests.processes import run_flotilla

TREE = """
children:
  - id: limiter
    actor: limiter
    args: {default_rate: 10}
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers, max_in_flight: 50, max_attempts: 3,
           transient_base: 0.05, transient_cap: 0.2, visibility: 10}
  - id: extractors
    pool: {actor: extractor, size: 1}
  - id: fetchers
    pool: {actor: fetcher, size: 2, args: {extractor: alpha/root/extractors, slot_wait: 0.1}}
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
resilience: {limiter: alpha/root/limiter}
"""

ROUTER = "alpha/root/router"
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--flaky-failures", "1")
    yield process
    process.stop()


def start(tmp_path: Path, clusters: list[LiveCluster]) -> tuple[LiveCluster, int]:
    """One node running the pipeline, its intake, and metrics on a free port."""
    intake_port, metrics_port = free_ports(2)
    path = write_topology(tmp_path, TREE, nodes=("alpha",), extra=EXTRA % intake_port)
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("  alpha: {address: ", f"  alpha: {{metrics: '127.0.0.1:{metrics_port}', address: "),
        encoding="utf-8",
    )
    cluster = LiveCluster(path, load_topology(path))
    clusters.append(cluster)
    cluster.start_node("alpha").wait_for_event("intake.listening", timeout=30)
    return cluster, metrics_port


def scrape(port: int) -> Samples:
    """Every sample on the endpoint, by sample name, then by its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by(samples: Samples, name: str, label: str, **where: str) -> dict[str, float]:
    """The values of sample `name`, by the value of `label`, among samples matching `where`."""
    found = {}
    for labels, value in samples.get(name, {}).items():
        as_dict = dict(labels)
        if all(as_dict.get(k) == v for k, v in where.items()):
            found[as_dict[label]] = value
    return found


def shell(cluster: LiveCluster, command: str) -> None:
    done = run_flotilla("shell", "alpha", "--topology", str(cluster.topology_path), "--exec", command, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["ok"], done.stdout + done.stderr


def test_metrics_show_the_work_the_pipeline_did(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    cluster, port = start(tmp_path, clusters)
    urls = [f"{site.url}/product/{n}" for n in range(20)] + [f"{site.url}/flaky/1", f"{site.url}/gone/2"]
    with IntakeClient.for_topology(cluster.topology) as client:
        client.submit([JobSpec(url, "product") for url in urls])

        def settled() -> bool:
            states = client.counts().states
            return states["pending"] + states["fetching"] + states["extracting"] + states["retrying"] == 0

        wait_until(settled, timeout=60, what="every job to settle")
    samples = scrape(port)

    jobs = by(samples, "flotilla_jobs", "state")
    assert jobs["stored"] == 21 and jobs["dead"] == 1
    outcomes = by(samples, "flotilla_job_outcomes_total", "outcome", router=ROUTER)
    assert set(outcomes) == set(OUTCOMES)  # every outcome, counted from zero
    assert outcomes["stored"] == 21 and outcomes["dead"] == 1 and outcomes["retried"] >= 1
    assert outcomes["dispatched"] >= 23 and outcomes["deferred"] >= 1  # 10 jobs/s and 0.1 s for a slot
    failures = by(samples, "flotilla_failures_total", "kind", router=ROUTER)
    assert failures["HARD"] == 1 and failures["TRANSIENT"] >= 1
    attempts = by(samples, "flotilla_attempt_seconds_count", "router")[ROUTER]
    assert 21 <= attempts <= 21 + sum(failures.values())
    assert by(samples, "flotilla_attempt_seconds_bucket", "le", router=ROUTER)["+Inf"] == attempts
    assert by(samples, "flotilla_attempt_seconds_sum", "router")[ROUTER] > 0
    assert by(samples, "flotilla_job_seconds_count", "router")[ROUTER] == 21
    assert by(samples, "flotilla_job_seconds_sum", "router")[ROUTER] > 0
    in_flight = by(samples, "flotilla_fetches_in_flight", "fetcher")
    assert len(in_flight) == 2 and set(in_flight.values()) == {0.0}
    deferred = by(samples, "flotilla_fetches_deferred_total", "fetcher")
    assert set(deferred) == set(in_flight) and sum(deferred.values()) >= outcomes["deferred"]
    assert sum(by(samples, "flotilla_rate_limit_waits_total", "target").values()) >= 1
    assert ROUTER in by(samples, "flotilla_mailbox_depth", "path")

    shell(cluster, "scale alpha/root/fetchers 1")
    wait_until(
        lambda: len(by(scrape(port), "flotilla_fetches_in_flight", "fetcher")) == 1,
        timeout=10,
        what="the stopped fetcher to leave the metrics",
    )
    shell(cluster, f"restart {ROUTER}")
    wait_until(
        lambda: by(scrape(port), "flotilla_job_outcomes_total", "outcome", router=ROUTER).get("stored") == 0,
        timeout=10,
        what="the restarted router to count from zero",
    )
    samples = scrape(port)
    assert set(by(samples, "flotilla_job_outcomes_total", "outcome", router=ROUTER)) == set(OUTCOMES)
    assert by(samples, "flotilla_jobs", "state")["stored"] == 21  # read from the new incarnation's journal
    assert by(samples, "flotilla_job_seconds_count", "router")[ROUTER] == 0
