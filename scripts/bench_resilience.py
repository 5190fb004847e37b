"""Part 4 of the benchmarks: the resilience actors.

* rate accuracy — three node processes, 60 fetchers (20 per node) with 512 jobs in flight, all
  against one target limited to 50 requests/s for 20 s; the site counts every request (mean
  rate, and the most requests in any 1-second window);
* slot overhead — what a fetch pays on its node before each request when a rate-limit slot is
  there (admission plus slot), against an `asyncio.Semaphore` acquire/release in the same run;
* breaker opening — a target switches from 200 to 503 under load: time until the node's view
  shows its breaker open (and, after it recovers, closed again);
* Hold — the fleet's three targets (the site's three ports) fail at once: time until the
  fleet is in Hold; they recover: time until Hold ends (probes every 2 s, three in a row must
  succeed: the defaults; one failing target never holds the fleet).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from flotilla.actors import ActorSystem
from flotilla.actors.pipeline.egress import EgressPolicy
from flotilla.actors.pipeline.journal import NewJob
from flotilla.actors.pipeline.router import Wake
from flotilla.actors.resilience.messages import HoldStatus
from flotilla.actors.resilience.view import ResilienceView, target_of
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec

from bench_pipeline import node_processes
from harness import DemoSiteProcess, free_ports, percentile, start_fleet, wait_until

TREE = """
cluster: bench
nodes:
  alpha: {{address: "tcp://127.0.0.1:{a}"}}
  beta: {{address: "tcp://127.0.0.1:{b}"}}
  gamma: {{address: "tcp://127.0.0.1:{c}"}}
intake: {{node: alpha, address: "tcp://127.0.0.1:{i}", router: alpha/root/router}}
egress: {{allow: [127.0.0.1]}}
resilience: {{limiter: alpha/root/limiter}}
rules:
  product:
    fields:
      title: {{css: h1.title, required: true}}
tree:
  children:
    - id: limiter
      actor: limiter
      args: {{default_rate: 50}}
    - id: router
      actor: router
      args: {{fetchers: alpha/root/fetchers, max_in_flight: 512, visibility: 120}}
    - id: extractors
      nodes: [alpha, beta, gamma]
      pool: {{actor: extractor, size: 3}}
    - id: fetchers
      nodes: [alpha, beta, gamma]
      pool:
        actor: fetcher
        size: 60
        args: {{extractor: alpha/root/extractors, max_in_flight: 16, slot_wait: 30}}
"""

RATE = 50.0
SECONDS = 20.0


def rate_accuracy(quick: bool) -> dict[str, Any]:
    seconds = 5.0 if quick else SECONDS
    jobs = int(RATE * seconds) + 1
    site = DemoSiteProcess()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            a, b, c, i = free_ports(4)
            topology = Path(tmp) / "bench.yaml"
            topology.write_text(textwrap.dedent(TREE.format(a=a, b=b, c=c, i=i)), encoding="utf-8")
            with (
                node_processes(topology, ("alpha", "beta", "gamma")),
                IntakeClient.for_topology(load_topology(topology), wait_for_keys=60, timeout=2, retries=30) as client,
            ):
                client.counts()
                for _ in client.submit_all(JobSpec(f"{site.url}/product/{n}", "product") for n in range(jobs)):
                    pass
                wait_until(
                    lambda: client.counts().results == jobs, timeout=seconds * 3 + 60, what="every job to be stored"
                )
        family = site.stats()["families"]["/product"]
    finally:
        site.stop()
    mean = (family["count"] - 1) / (family["last"] - family["first"])
    return {
        "limit": RATE,
        "requests": family["count"],
        "seconds": round(family["last"] - family["first"], 2),
        "mean_rate": round(mean, 2),
        "mean_vs_limit": round(mean / RATE, 4),
        "busiest_second": family["busiest_second"],
        "busiest_vs_limit": round(family["busiest_second"] / RATE, 3),
    }


def slot_overhead(quick: bool) -> dict[str, Any]:
    rounds = 20_000 if quick else 200_000
    view = ResilienceView()
    view.breakers_on = view.limiter_on = view.hold_on = True
    view.apply_hold(HoldStatus(on=False))
    view.grant("example.com", rounds + 10, ttl=3600.0)

    async def flotilla() -> list[float]:
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            view.admit("example.com")
            await view.acquire("example.com", 1.0)
            times.append(time.perf_counter() - began)
        return times

    async def semaphore() -> list[float]:
        slots = asyncio.Semaphore(10)
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            async with slots:
                pass
            times.append(time.perf_counter() - began)
        return times

    ours, base = asyncio.run(flotilla()), asyncio.run(semaphore())

    return {
        "calls": rounds,
        "p50_us": round(percentile(ours, 50) * 1e6, 2),
        "p99_us": round(percentile(ours, 99) * 1e6, 2),
        "semaphore_p50_us": round(percentile(base, 50) * 1e6, 2),
        "semaphore_p99_us": round(percentile(base, 99) * 1e6, 2),
        "p99_vs_semaphore": round(percentile(ours, 99) / percentile(base, 99), 2),
    }


def breaker_and_hold(quick: bool) -> dict[str, Any]:
    trials = 2 if quick else 5
    extra = free_ports(2)
    site = DemoSiteProcess(*(arg for port in extra for arg in ("--extra-port", str(port))))
    hosts = [site.url, *(f"http://127.0.0.1:{port}" for port in extra)]
    results: dict[str, list[float]] = {"to_open": [], "to_close": [], "into_hold": [], "out_of_hold": []}
    try:
        target = target_of(site.url)
        for part in ("breakers", "hold"):
            for trial in range(trials):
                system = ActorSystem("t")
                system.extensions.put(EgressPolicy.from_config(["127.0.0.1"]))  # the bench's site is on loopback
                with tempfile.TemporaryDirectory() as tmp:
                    try:
                        kwargs = {"breakers": {}} if part == "breakers" else {"hold": {}}
                        journal = start_fleet(
                            system,
                            Path(tmp),
                            policy={"max_attempts": 1000, "transient_base": 0.05, "transient_cap": 0.2},
                            **kwargs,
                        )
                        site.switch(200)
                        spread = hosts if part == "hold" else hosts[:1]  # Hold needs failures spread over targets
                        urls = [f"{spread[n % len(spread)]}/switch/{trial * 10_000 + n}" for n in range(3000)]
                        journal.submit([NewJob(f"{url}#{trial}", url, "product") for url in urls])
                        system.ref("t/root/router").tell(Wake())
                        wait_until(lambda: journal.result_count() > 50, timeout=30, what="traffic to flow")  # noqa: B023  called before the loop moves on
                        went_bad = time.monotonic()
                        site.switch(503)
                        if part == "breakers":
                            wait_until(lambda: ResilienceView.of(system).open_for(target) > 0, timeout=30, what="open")  # noqa: B023  called before the loop moves on
                            results["to_open"].append(time.monotonic() - went_bad)
                            site.switch(200)
                            recovered = time.monotonic()
                            wait_until(
                                lambda: target not in ResilienceView.of(system).snapshot()["breakers"],  # noqa: B023  called before the loop moves on
                                timeout=60,
                                what="closed",
                            )
                            results["to_close"].append(time.monotonic() - recovered)
                        else:
                            wait_until(lambda: ResilienceView.of(system).holding().on, timeout=30, what="Hold")  # noqa: B023  called before the loop moves on
                            results["into_hold"].append(time.monotonic() - went_bad)
                            site.switch(200)
                            recovered = time.monotonic()
                            wait_until(
                                lambda: not ResilienceView.of(system).holding().on,  # noqa: B023  called before the loop moves on
                                timeout=60,
                                what="out of Hold",
                            )
                            results["out_of_hold"].append(time.monotonic() - recovered)
                    finally:
                        system.stop(10)
    finally:
        site.stop()
    return {
        name: {"trials": len(values), "median_s": round(statistics.median(values), 3), "max_s": round(max(values), 3)}
        for name, values in results.items()
    }


def run(quick: bool) -> dict[str, Any]:
    return {
        "rate_accuracy": rate_accuracy(quick),
        "slot_overhead": slot_overhead(quick),
        "breaker_and_hold": breaker_and_hold(quick),
    }


def report(results: dict[str, Any]) -> None:
    rate, slot, timing = results["rate_accuracy"], results["slot_overhead"], results["breaker_and_hold"]
    print(
        f"rate limit {rate['limit']:g}/s, 3 nodes, 60 fetchers: {rate['requests']} requests in {rate['seconds']} s, "
        f"mean {rate['mean_rate']}/s ({rate['mean_vs_limit']:.1%} of the limit; goal within 5 %), "
        f"busiest second {rate['busiest_second']} ({rate['busiest_vs_limit']:.0%}; goal <= 110 %)"
    )
    print(
        f"slot when tokens are there: p50 {slot['p50_us']} us, p99 {slot['p99_us']} us (goal < 1000 us); "
        f"asyncio.Semaphore p99 {slot['semaphore_p99_us']} us -> {slot['p99_vs_semaphore']}x"
    )
    for name, what in (
        ("to_open", "target bad -> breaker open"),
        ("to_close", "target good -> breaker closed"),
        ("into_hold", "fleet failing -> Hold"),
        ("out_of_hold", "fleet recovered -> Hold ends"),
    ):
        t = timing[name]
        print(f"{what}: median {t['median_s']} s, max {t['max_s']} s over {t['trials']} trials")
