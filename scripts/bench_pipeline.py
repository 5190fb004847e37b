"""Part 3 of the benchmarks: the ingestion pipeline end to end, against Scrapy and a bare
aiohttp + selectolax loop fetching and extracting the same pages from the same local site,
in the same run.

Flotilla: two node processes (intake, journal and router on one; fetchers and extractors on
the other), jobs submitted through the intake, timed from the first submission until every
job is stored; job latency is `stored - submitted` from the journal. Flotilla, the bare loop
and Scrapy run in interleaved rounds (Flotilla, bare, Scrapy, Flotilla, bare, Scrapy, ...),
so a machine that slows down or speeds up during the run hits all three alike; each figure
is the median of its rounds, each ratio the ratio of the medians, stated with its spread (the
lowest and highest ratio within one round). Scrapy fetches fewer pages per round (it is an
order of magnitude slower); pages/s is compared, timed inside the spider from its first
request to its close, as Flotilla's clock starts once its nodes are up. Then, once each, the
same pipeline with the journal on a PostgreSQL server started for it, and the failover rows
(bench_failover.py).

Then the realistic-site rows (bench_realistic.py): a site with a few percent of each fault
kind plus a host that is down, against its clean twin, through Flotilla and Scrapy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import bench_failover
import psycopg
from selectolax.lexbor import LexborHTMLParser

from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec

from harness import PostgresServer, free_ports, node_command, percentile

ROOT = Path(__file__).resolve().parent.parent

TREE = """
cluster: bench
nodes:
  alpha: {{address: "tcp://127.0.0.1:{a}"}}
  beta: {{address: "tcp://127.0.0.1:{b}"}}
intake: {{node: alpha, address: "tcp://127.0.0.1:{i}", router: alpha/root/router}}
egress: {{allow: [127.0.0.1]}}
rules:
  product:
    fields:
      title: {{css: h1.title, required: true}}
      price: {{css: .price, required: true}}
tree:
  children:
    - id: router
      actor: router
      args: {{fetchers: alpha/root/fetching/fetchers, max_in_flight: 512, visibility: 60}}
    - id: fetching
      node: beta
      supervisor:
        children:
          - id: extractors
            pool: {{actor: extractor, size: 2}}
          - id: fetchers
            pool: {{actor: fetcher, size: 2, args: {{extractor: alpha/root/fetching/extractors, max_in_flight: 256}}}}
"""

SPIDER = """
import json
import time

import scrapy

class Products(scrapy.Spider):
    name = "products"
    custom_settings = {{"CONCURRENT_REQUESTS": 256, "CONCURRENT_REQUESTS_PER_DOMAIN": 256,
                       "LOG_LEVEL": "INFO", "TELNETCONSOLE_ENABLED": False, "ROBOTSTXT_OBEY": False,
                       "COOKIES_ENABLED": False, "RETRY_ENABLED": False}}

    async def start(self):
        self.began = time.time()
        for n in range({n}):
            yield scrapy.Request("{site}/product/%d" % n, dont_filter=True)

    def parse(self, response):
        yield {{"title": response.css("h1.title::text").get(), "price": response.css(".price::text").get()}}

    def closed(self, reason):
        with open("{timing}", "w") as out:
            json.dump({{"seconds": time.time() - self.began}}, out)
"""


@contextlib.contextmanager
def node_processes(topology: Path, names: Iterable[str]) -> Iterator[None]:
    """`flotilla node start` for each of `names` (quiet), terminated and waited for on exit."""
    nodes = [
        subprocess.Popen(
            node_command(topology, name, "--log-level", "warning"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in names
    ]
    try:
        yield
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(60)


def flotilla(site: str, n: int, journal: str | None = None) -> dict[str, Any]:
    """The pipeline through two nodes; its journal in alpha's data directory (SQLite), or
    the PostgreSQL database `journal`."""
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp:
        a, b, i = free_ports(3)
        path = Path(tmp) / "bench.yaml"
        text = TREE.format(a=a, b=b, i=i) + (f'journal: "{journal}"\n' if journal else "")
        path.write_text(text, encoding="utf-8")
        with node_processes(path, ("beta", "alpha")):
            with IntakeClient.for_topology(load_topology(path), wait_for_keys=60, timeout=2, retries=30) as client:
                client.counts()
                time.sleep(1.0)  # let alpha start the fetching subtree on beta
                began = time.time()
                for _ in client.submit_all((JobSpec(f"{site}/product/{k}", "product") for k in range(n)), batch=1000):
                    pass
                while client.counts().states["stored"] < n:
                    time.sleep(0.05)
                elapsed = time.time() - began
            query = "SELECT j.created_at, r.stored_at FROM jobs j JOIN results r USING (key)"
            if journal:
                with psycopg.connect(journal) as conn:
                    latencies = [stored - created for created, stored in conn.execute(query)]
            else:
                db = sqlite3.connect(Path(tmp) / "data" / "alpha" / "journal.sqlite")
                latencies = [stored - created for created, stored in db.execute(query)]
                db.close()
    return {
        "pages": n,
        "seconds": elapsed,
        "per_s": n / elapsed,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
    }


def scrapy_run(site: str, n: int) -> dict[str, Any]:
    """Scrapy fetching and extracting `n` pages; timed by the spider, from its first request
    to its close (the interpreter's and Scrapy's start-up are not counted)."""
    with tempfile.TemporaryDirectory(prefix="scrapy-bench-") as tmp:
        spider = Path(tmp) / "spider.py"
        timing = Path(tmp) / "timing.json"
        spider.write_text(textwrap.dedent(SPIDER.format(site=site, n=n, timing=timing)), encoding="utf-8")
        out = Path(tmp) / "items.jsonl"
        subprocess.run(
            [sys.executable, "-m", "scrapy", "runspider", str(spider), "-o", str(out)],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        elapsed = float(json.loads(timing.read_text(encoding="utf-8"))["seconds"])
        items = sum(1 for _ in out.open())
    return {"pages": items, "seconds": elapsed, "per_s": items / elapsed}


async def _bare(site: str, n: int) -> float:
    connector = aiohttp.TCPConnector(limit=256)
    semaphore = asyncio.Semaphore(256)
    done = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(k: int) -> None:
            nonlocal done
            async with semaphore, session.get(f"{site}/product/{k}") as response:
                tree = LexborHTMLParser(await response.read())
                if tree.css_first("h1.title") is not None and tree.css_first(".price") is not None:
                    done += 1

        began = time.time()
        await asyncio.gather(*(one(k) for k in range(n)))
        return time.time() - began


def bare_loop(site: str, n: int) -> dict[str, Any]:
    elapsed = asyncio.run(_bare(site, n))
    return {"pages": n, "seconds": elapsed, "per_s": n / elapsed}


def on_postgresql(site: str, n: int) -> dict[str, Any]:
    """`flotilla()` with its journal on a PostgreSQL server started for it."""
    server = PostgresServer()
    try:
        return flotilla(site, n, server.url(server.create_database("bench")))
    finally:
        server.stop()


ROUNDS = 3
"""Interleaved rounds of Flotilla, the bare loop and Scrapy."""


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose pages/s is the median of `runs` (an odd number of them)."""
    return sorted(runs, key=lambda run: run["per_s"])[len(runs) // 2]


def _compared(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> dict[str, Any]:
    """Ours against a baseline over interleaved rounds: the ratio of the medians, and the
    spread of the ratios within one round."""
    per_round = [a["per_s"] / b["per_s"] for a, b in zip(ours, theirs, strict=True)]
    return {
        "ratio_of_medians": statistics.median(r["per_s"] for r in ours) / statistics.median(r["per_s"] for r in theirs),
        "per_round": per_round,
        "spread": [min(per_round), max(per_round)],
    }


def interleaved(site: str, n: int, scrapy_n: int, rounds: int) -> dict[str, Any]:
    """`rounds` rounds of Flotilla, the bare loop and Scrapy, one after the other."""
    ours: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    scrapy: list[dict[str, Any]] = []
    for _ in range(rounds):
        ours.append(flotilla(site, n))
        bare.append(bare_loop(site, n))
        scrapy.append(scrapy_run(site, scrapy_n))
    return {
        "rounds": rounds,
        "order": "flotilla, bare, scrapy; repeated",
        "flotilla_runs": ours,
        "bare_runs": bare,
        "scrapy_runs": scrapy,
        "flotilla_per_s": [r["per_s"] for r in ours],
        "bare_per_s": [r["per_s"] for r in bare],
        "scrapy_per_s": [r["per_s"] for r in scrapy],
        "flotilla_median_per_s": statistics.median(r["per_s"] for r in ours),
        "bare_median_per_s": statistics.median(r["per_s"] for r in bare),
        "scrapy_median_per_s": statistics.median(r["per_s"] for r in scrapy),
        "vs_bare": _compared(ours, bare),
        "vs_scrapy": _compared(ours, scrapy),
    }


def run(quick: bool) -> dict[str, Any]:
    n, scrapy_n = (2_000, 500) if quick else (20_000, 5_000)
    port = free_ports(1)[0]
    site_process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo_site.py"), "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert site_process.stdout is not None
        site = site_process.stdout.readline().strip().removeprefix("ready ")
        rounds = interleaved(site, n, scrapy_n, ROUNDS)
        ours = _median_run(rounds["flotilla_runs"])
        postgres = on_postgresql(site, n)
        failover = bench_failover.run(site, quick)
    finally:
        site_process.terminate()
        site_process.wait(10)
    import bench_realistic

    return {
        "interleaved": rounds,
        "flotilla": ours,
        "flotilla_postgresql": postgres,
        "ratio_postgresql_vs_sqlite": postgres["per_s"] / rounds["flotilla_median_per_s"],
        "failover": failover,
        "scrapy": _median_run(rounds["scrapy_runs"]),
        "bare_aiohttp_selectolax": _median_run(rounds["bare_runs"]),
        "ratio_vs_scrapy": rounds["vs_scrapy"]["ratio_of_medians"],
        "ratio_vs_bare": rounds["vs_bare"]["ratio_of_medians"],
        "realistic": bench_realistic.run(quick),
    }


def _rates(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def report(results: dict[str, Any]) -> None:
    ours, rounds = results["flotilla"], results["interleaved"]
    print(
        f"end to end ({ours['pages']:,} pages, fetch + extract + store through two nodes), "
        f"{rounds['rounds']} interleaved rounds (Flotilla, bare loop, Scrapy; repeated):"
    )
    print(
        f"  Flotilla {_rates(rounds['flotilla_per_s'])} pages/s -> median {rounds['flotilla_median_per_s']:,.0f}; "
        f"job latency of the median run p50 {ours['p50_s']:.2f} s, p95 {ours['p95_s']:.2f} s, "
        f"p99 {ours['p99_s']:.2f} s"
    )
    vs_bare, vs_scrapy = rounds["vs_bare"], rounds["vs_scrapy"]
    print(
        f"  bare aiohttp + selectolax loop {_rates(rounds['bare_per_s'])} pages/s -> median "
        f"{rounds['bare_median_per_s']:,.0f}; Flotilla {vs_bare['ratio_of_medians']:.0%} of it "
        f"(per round {vs_bare['spread'][0]:.0%}–{vs_bare['spread'][1]:.0%}; goal >= 75 %)"
    )
    scrapy_pages = rounds["scrapy_runs"][0]["pages"]
    print(
        f"  Scrapy ({scrapy_pages:,} pages a round) {_rates(rounds['scrapy_per_s'])} pages/s -> median "
        f"{rounds['scrapy_median_per_s']:,.0f}; Flotilla {vs_scrapy['ratio_of_medians']:.1f}x "
        f"(per round {vs_scrapy['spread'][0]:.1f}x–{vs_scrapy['spread'][1]:.1f}x; goal >= 10x)"
    )
    postgres = results["flotilla_postgresql"]
    print(
        f"  the same with the journal on PostgreSQL (one run): {postgres['per_s']:,.0f} pages/s "
        f"({results['ratio_postgresql_vs_sqlite']:.0%} of SQLite's median); job latency p50 {postgres['p50_s']:.2f} s, "
        f"p99 {postgres['p99_s']:.2f} s"
    )
    bench_failover.report(results["failover"])
    import bench_realistic

    bench_realistic.report(results["realistic"])


if __name__ == "__main__":
    outcome = run("--quick" in sys.argv)
    report(outcome)
    print(json.dumps(outcome, indent=2))
