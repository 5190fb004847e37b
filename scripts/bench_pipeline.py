"""Part 3 of the benchmarks: the ingestion pipeline end to end, against Scrapy and a bare
aiohttp + selectolax loop fetching and extracting the same pages from the same local site,
in the same run.

Flotilla: two node processes (intake, journal and router on one; fetchers and extractors on
the other), jobs submitted through the intake, timed from the first submission until every
job is stored; job latency is `stored - submitted` from the journal. The same run again with
the journal on a PostgreSQL server started for it, and the failover rows (bench_failover.py).

Then the realistic-site rows (bench_realistic.py): a site with a few percent of each fault
kind plus a host that is down, against its clean twin, through Flotilla and Scrapy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
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
import scrapy

class Products(scrapy.Spider):
    name = "products"
    custom_settings = {{"CONCURRENT_REQUESTS": 256, "CONCURRENT_REQUESTS_PER_DOMAIN": 256,
                       "LOG_LEVEL": "INFO", "TELNETCONSOLE_ENABLED": False, "ROBOTSTXT_OBEY": False,
                       "COOKIES_ENABLED": False, "RETRY_ENABLED": False}}

    async def start(self):
        for n in range({n}):
            yield scrapy.Request("{site}/product/%d" % n, dont_filter=True)

    def parse(self, response):
        yield {{"title": response.css("h1.title::text").get(), "price": response.css(".price::text").get()}}
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
    with tempfile.TemporaryDirectory(prefix="scrapy-bench-") as tmp:
        spider = Path(tmp) / "spider.py"
        spider.write_text(textwrap.dedent(SPIDER.format(site=site, n=n)), encoding="utf-8")
        out = Path(tmp) / "items.jsonl"
        began = time.time()
        subprocess.run(
            [sys.executable, "-m", "scrapy", "runspider", str(spider), "-o", str(out)],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        elapsed = time.time() - began
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


def run(quick: bool) -> dict[str, Any]:
    n = 2_000 if quick else 20_000
    port = free_ports(1)[0]
    site_process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo_site.py"), "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert site_process.stdout is not None
        site = site_process.stdout.readline().strip().removeprefix("ready ")
        bare = bare_loop(site, n)
        scrapy = scrapy_run(site, n)
        ours = flotilla(site, n)
        postgres = on_postgresql(site, n)
        failover = bench_failover.run(site, quick)
    finally:
        site_process.terminate()
        site_process.wait(10)
    import bench_realistic

    return {
        "flotilla": ours,
        "flotilla_postgresql": postgres,
        "ratio_postgresql_vs_sqlite": postgres["per_s"] / ours["per_s"],
        "failover": failover,
        "scrapy": scrapy,
        "bare_aiohttp_selectolax": bare,
        "ratio_vs_scrapy": ours["per_s"] / scrapy["per_s"],
        "ratio_vs_bare": ours["per_s"] / bare["per_s"],
        "realistic": bench_realistic.run(quick),
    }


def report(results: dict[str, Any]) -> None:
    ours, scrapy, bare = results["flotilla"], results["scrapy"], results["bare_aiohttp_selectolax"]
    print(
        f"end to end ({ours['pages']:,} pages, fetch + extract + store through two nodes): "
        f"{ours['per_s']:,.0f} pages/s; job latency p50 {ours['p50_s']:.2f} s, p95 {ours['p95_s']:.2f} s, "
        f"p99 {ours['p99_s']:.2f} s"
    )
    postgres = results["flotilla_postgresql"]
    print(
        f"  the same with the journal on PostgreSQL: {postgres['per_s']:,.0f} pages/s "
        f"({results['ratio_postgresql_vs_sqlite']:.0%} of SQLite's); job latency p50 {postgres['p50_s']:.2f} s, "
        f"p99 {postgres['p99_s']:.2f} s"
    )
    bench_failover.report(results["failover"])
    print(f"  vs Scrapy {scrapy['per_s']:,.0f} pages/s -> {results['ratio_vs_scrapy']:.1f}x (goal >= 5x)")
    print(
        f"  vs bare aiohttp + selectolax loop {bare['per_s']:,.0f} pages/s -> {results['ratio_vs_bare']:.0%} "
        "(goal >= 50 %)"
    )
    import bench_realistic

    bench_realistic.report(results["realistic"])


if __name__ == "__main__":
    outcome = run("--quick" in sys.argv)
    report(outcome)
    print(json.dumps(outcome, indent=2))
