"""Part 3 of the benchmarks, the realistic-site rows: a crawl of an ordinary site with a few
percent of each fault kind (`/site/N` of scripts/demo_site.py) plus URLs on a host that is
down, against the same crawl without any bad page or host, in the same run.

Flotilla runs the default topology (supervisor_tree.yaml) as two real node processes, moved to
free ports and a temporary data directory, with the healthy host given the rate limit the
default topology gives its demo shop. It runs the clean crawl, the realistic one (with the
dead host), the site alone (no dead host) with the default resilience and with the
`resilience:` breakers left out, and the clean one again (the faster clean crawl is the
reference, so a slow moment of the machine does not flatter the ratio).
Scrapy runs the clean and the
realistic URL sets with its default retry settings. Every Flotilla crawl has a deadline: a
crawl that does not end is reported as "not terminal after N s" with the journal's counts.

    python scripts/bench_realistic.py [--quick]     (also run by `scripts/bench --part 3`)
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from demo import WAIT_BUDGET_S, wait_budget_of
from fleet_watch import FleetWatch, wait_for_fetchers

from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec

from bench_pipeline import node_processes
from demo_site import HEALTHY_KINDS, fault_of, port_with_nothing_listening
from harness import free_ports

ROOT = Path(__file__).resolve().parent.parent

PAGES, QUICK_PAGES = 5_000, 1_000
"""Pages crawled on the healthy host. Large enough that a healthy crawl takes seconds, so the
delay a retried page (503 once, 429 for a second) needs is a small part of the time."""

DEAD_HOST_URLS = 20
"""URLs on the host that is down (a port nothing listens on)."""

CRAWL_TIMEOUT_S, QUICK_CRAWL_TIMEOUT_S = 120.0, 60.0
"""How long the bench waits for a Flotilla crawl to end before it reports it not terminal."""

READY_TIMEOUT_S = 30.0
"""How long the cluster may take to start its fetchers."""

TERMINAL = ("stored", "dead", "parked")
IN_FLIGHT = ("pending", "fetching", "extracting", "retrying")

SPIDER = """
import time
import scrapy

class Site(scrapy.Spider):
    name = "site"
    custom_settings = {{"CONCURRENT_REQUESTS": 256, "CONCURRENT_REQUESTS_PER_DOMAIN": 256,
                       "LOG_LEVEL": "INFO", "TELNETCONSOLE_ENABLED": False, "ROBOTSTXT_OBEY": False,
                       "COOKIES_ENABLED": False}}

    async def start(self):
        for url in open({urls!r}).read().split():
            yield scrapy.Request(url, dont_filter=True)

    def parse(self, response):
        yield {{"url": response.url, "title": response.css("h1.title::text").get(),
               "price": response.css(".price::text").get(), "t": time.time()}}
"""


AT_ONCE_KINDS = frozenset({"ok", "prose"})
"""Fault kinds whose pages answer with the page at the first request. The healthy host's
pages/s is measured on these: a page that answers 503 or 429 first must be asked again later
by any crawler (after its Retry-After, or a backoff), so its delay says nothing about whether
healthy work pays for sick work. Those pages count in "healthy pages stored"."""


@dataclass(frozen=True)
class UrlSet:
    """The URLs of one crawl: which of them are healthy pages of the healthy host (every one
    must end stored), and which of those answer at the first request."""

    urls: list[str]
    healthy: frozenset[str]
    at_once: frozenset[str]
    healthy_host: str
    kinds: dict[str, str]
    """The fault kind of each URL of the healthy host."""


def realistic_urls(site: str, pages: int, dead_port: int) -> UrlSet:
    """`pages` pages of the realistic site on `site`, then DEAD_HOST_URLS on the dead host."""
    urls = [f"{site}/site/{n}" for n in range(pages)]
    healthy = frozenset(url for n, url in enumerate(urls) if fault_of(n) in HEALTHY_KINDS)
    at_once = frozenset(url for n, url in enumerate(urls) if fault_of(n) in AT_ONCE_KINDS)
    dead = [f"http://127.0.0.1:{dead_port}/site/{n}" for n in range(DEAD_HOST_URLS)]
    kinds = {url: fault_of(n) for n, url in enumerate(urls)}
    return UrlSet(urls + dead, healthy, at_once, site.removeprefix("http://"), kinds)


def site_only(url_set: UrlSet) -> UrlSet:
    """The same crawl without the host that is down: the site with its few percent of bad pages."""
    urls = [url for url in url_set.urls if url in url_set.kinds]
    return UrlSet(urls, url_set.healthy, url_set.at_once, url_set.healthy_host, url_set.kinds)


def clean_urls(site: str, pages: int) -> UrlSet:
    """The same crawl without any bad page or host: the same page numbers, every one a product page."""
    urls = [f"{site}/product/{n}" for n in range(pages)]
    return UrlSet(urls, frozenset(urls), frozenset(urls), site.removeprefix("http://"), dict.fromkeys(urls, "ok"))


def _child(children: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in children if c.get("id") == name)


def bench_topology(data_dir: Path, healthy_host: str, breakers: bool) -> tuple[dict[str, Any], int, int]:
    """The default topology on free ports with its data in `data_dir`, the healthy host rated
    as the default topology rates its demo shop; without the `resilience:` breakers if not
    `breakers`. Returns it, the intake's port and beta's metrics port."""
    topology = yaml.safe_load((ROOT / "supervisor_tree.yaml").read_text(encoding="utf-8"))
    a, b, i, ma, mb = free_ports(5)
    topology["nodes"]["alpha"].update(address=f"tcp://127.0.0.1:{a}", metrics=f"127.0.0.1:{ma}")
    topology["nodes"]["beta"].update(address=f"tcp://127.0.0.1:{b}", metrics=f"127.0.0.1:{mb}")
    topology["intake"]["address"] = f"tcp://127.0.0.1:{i}"
    topology["data_dir"] = str(data_dir)
    limiter = _child(_child(topology["tree"]["children"], "resilience")["supervisor"]["children"], "limiter")
    rates = limiter["args"].setdefault("rates", {})
    rates[healthy_host] = rates.pop("127.0.0.1:8800")
    if not breakers:
        del topology["resilience"]["breakers"]
    return topology, i, mb


def flotilla_crawl(url_set: UrlSet, breakers: bool, timeout: float) -> dict[str, Any]:
    """Crawl `url_set` through the default topology; wait until every job is terminal or
    `timeout` has passed, watching the fetcher node's view of Hold and breakers."""
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-realistic-") as tmp:
        data = Path(tmp) / "data"
        topology, _intake_port, metrics_port = bench_topology(data, url_set.healthy_host, breakers)
        wait_budget = wait_budget_of(topology)
        path = Path(tmp) / "topology.yaml"
        path.write_text(yaml.safe_dump(topology, sort_keys=False), encoding="utf-8")
        metrics = f"127.0.0.1:{metrics_port}"
        with node_processes(path, ("beta", "alpha")):
            with IntakeClient.for_topology(load_topology(path), wait_for_keys=60, timeout=2, retries=30) as client:
                client.counts()
                wait_for_fetchers(metrics, READY_TIMEOUT_S)
                with FleetWatch(metrics) as watch:
                    began = time.time()
                    for _ in client.submit_all((JobSpec(url, "product") for url in url_set.urls), batch=1000):
                        pass
                    terminal_s = _wait_terminal(client, began, timeout)
                    elapsed = time.time() - began
        db = sqlite3.connect(data / "alpha" / "journal.sqlite")
        stored_at = dict(db.execute("SELECT url, stored_at FROM results"))
        jobs = list(db.execute("SELECT state, reason FROM jobs"))
        db.close()
    states = Counter(state for state, _ in jobs)
    reasons = Counter(f"{state}: {_gist(reason)}" for state, reason in jobs if state != "stored")
    return {
        "jobs": len(url_set.urls),
        "terminal_s": terminal_s,
        "waited_s": elapsed,
        "states": dict(states),
        "reasons": dict(reasons.most_common(8)),
        "wait_budget_s": wait_budget if wait_budget is not None else WAIT_BUDGET_S,
        "wait_budget_from_topology": wait_budget is not None,
        "hold_seen": watch.hold_seen,
        "healthy_breaker_opened": url_set.healthy_host in watch.breakers_opened,
        "breakers_opened": sorted(watch.breakers_opened),
        **_healthy_throughput(
            url_set, {u: t - began for u, t in stored_at.items()}, elapsed, ended=terminal_s is not None
        ),
    }


def _wait_terminal(client: IntakeClient, began: float, timeout: float) -> float | None:
    """Seconds from `began` until no job is pending, fetching, extracting or retrying; None if
    some still are after `timeout` seconds."""
    while True:
        states = client.counts().states
        elapsed = time.time() - began
        if not any(states[s] for s in IN_FLIGHT):
            return elapsed
        if elapsed > timeout:
            return None
        time.sleep(0.2)


def _gist(reason: str | None) -> str:
    """A reason without its per-job details (numbers, URLs), to count alike reasons together."""
    return (reason or "").split("(")[0].split(" http")[0].strip()[:60]


def _healthy_throughput(url_set: UrlSet, stored_after: dict[str, float], waited: float, ended: bool) -> dict[str, Any]:
    """Healthy pages stored (and lost), and the healthy host's pages/s: its pages that answer at
    once, stored, over the time until the last of them was stored. If the crawl did not end
    and some of them are not stored yet, over the whole wait instead."""
    healthy = [stored_after[url] for url in url_set.healthy if url in stored_after]
    at_once = [stored_after[url] for url in url_set.at_once if url in stored_after]
    span = max(at_once) if at_once and (ended or len(at_once) == len(url_set.at_once)) else waited
    lost = Counter(url_set.kinds[url] for url in url_set.healthy if url not in stored_after)
    return {
        "ended": ended,
        "healthy_pages": len(url_set.healthy),
        "healthy_stored": len(healthy),
        "healthy_lost": lost.total(),
        "healthy_lost_by_kind": dict(lost),
        "healthy_all_stored_s": max(healthy) if healthy and not lost else None,
        "at_once_pages": len(url_set.at_once),
        "at_once_stored": len(at_once),
        "healthy_seconds": span,
        "healthy_per_s": len(at_once) / span if span else 0.0,
    }


def scrapy_crawl(url_set: UrlSet) -> dict[str, Any]:
    """Crawl `url_set` with Scrapy, default retry settings; timed until the crawl finished."""
    with tempfile.TemporaryDirectory(prefix="scrapy-bench-realistic-") as tmp:
        urls = Path(tmp) / "urls.txt"
        urls.write_text("\n".join(url_set.urls) + "\n", encoding="utf-8")
        spider = Path(tmp) / "spider.py"
        spider.write_text(textwrap.dedent(SPIDER.format(urls=str(urls))), encoding="utf-8")
        out = Path(tmp) / "items.jsonl"
        began = time.time()
        subprocess.run(
            [sys.executable, "-m", "scrapy", "runspider", str(spider), "-o", str(out)],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        finished_s = time.time() - began
        items = [json.loads(line) for line in out.open()]
    stored_after = {i["url"]: i["t"] - began for i in items if i["title"] and i["price"]}
    return {
        "jobs": len(url_set.urls),
        "finished_s": finished_s,
        "items": len(items),
        **_healthy_throughput(url_set, stored_after, finished_s, ended=True),
    }


def run(quick: bool) -> dict[str, Any]:
    pages = QUICK_PAGES if quick else PAGES
    timeout = QUICK_CRAWL_TIMEOUT_S if quick else CRAWL_TIMEOUT_S
    port = free_ports(1)[0]
    site_process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo_site.py"), "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert site_process.stdout is not None
        site = site_process.stdout.readline().strip().removeprefix("ready ")
        clean, realistic = clean_urls(site, pages), realistic_urls(site, pages, port_with_nothing_listening())
        results: dict[str, Any] = {"pages": pages, "dead_host_urls": DEAD_HOST_URLS, "timeout_s": timeout}
        clean_before = flotilla_crawl(clean, breakers=True, timeout=timeout)
        _reset(site)  # the site's first-request faults start afresh for every crawl
        results["flotilla"] = flotilla_crawl(realistic, breakers=True, timeout=timeout)
        _reset(site)
        results["flotilla_site"] = flotilla_crawl(site_only(realistic), breakers=True, timeout=timeout)
        _reset(site)
        results["flotilla_no_breakers"] = flotilla_crawl(site_only(realistic), breakers=False, timeout=timeout)
        clean_after = flotilla_crawl(clean, breakers=True, timeout=timeout)
        results["flotilla_clean_runs_per_s"] = [clean_before["healthy_per_s"], clean_after["healthy_per_s"]]
        results["flotilla_clean"] = max(clean_before, clean_after, key=lambda run: run["healthy_per_s"])
        _reset(site)
        results["scrapy_clean"] = scrapy_crawl(clean)
        _reset(site)
        results["scrapy"] = scrapy_crawl(realistic)
    finally:
        site_process.terminate()
        site_process.wait(10)
    for name, clean_name in (
        ("flotilla", "flotilla_clean"),
        ("flotilla_site", "flotilla_clean"),
        ("flotilla_no_breakers", "flotilla_clean"),
        ("scrapy", "scrapy_clean"),
    ):
        results[name]["healthy_ratio_vs_clean"] = results[name]["healthy_per_s"] / results[clean_name]["healthy_per_s"]
    return results


def _reset(site: str) -> None:
    request = urllib.request.Request(f"{site}/__reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def _ended(row: dict[str, Any]) -> str:
    if row["terminal_s"] is not None:
        return f"every job terminal in {row['terminal_s']:.1f} s"
    pending = ", ".join(f"{n} {s}" for s, n in row["states"].items() if s in IN_FLIGHT)
    return f"NOT terminal after {row['waited_s']:.0f} s ({pending})"


def _stored(row: dict[str, Any]) -> str:
    stored = f"healthy pages stored {row['healthy_stored']:,} of {row['healthy_pages']:,}"
    if row["healthy_lost"]:
        stored += (
            (" (lost: " if row["ended"] else " (not stored when the wait ended: ")
            + ", ".join(f"{n} {kind}" for kind, n in row["healthy_lost_by_kind"].items())
            + ")"
        )
    if row["healthy_all_stored_s"] is not None:
        stored += f", the last after {row['healthy_all_stored_s']:.1f} s"
    return stored


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: dict[str, Any]) -> None:
    print(
        f"realistic site: {results['pages']:,} pages on the healthy host (a few percent of each fault kind) "
        f"+ {results['dead_host_urls']} URLs on a host that is down; clean twin: the same pages, all good"
    )
    for name, label in (
        ("flotilla", "Flotilla, default topology"),
        ("flotilla_site", "Flotilla, default topology, the site alone (no dead host)"),
        ("flotilla_no_breakers", "Flotilla, breakers left out, the site alone"),
    ):
        row, budget = results[name], results[name]["wait_budget_s"]
        source = "topology" if row["wait_budget_from_topology"] else "bench default; the topology sets none"
        terminal_ok = row["terminal_s"] is not None and row["terminal_s"] <= 2 * budget
        print(
            f"  {label}: {_ended(row)} (goal <= 2x the wait budget of {budget:g} s [{source}]: "
            f"{_met(terminal_ok)}); states {row['states']}"
        )
        print(
            f"    healthy host {row['healthy_per_s']:,.0f} pages/s = {row['healthy_ratio_vs_clean']:.0%} of its clean "
            f"{results['flotilla_clean']['healthy_per_s']:,.0f} pages/s [the faster of two clean crawls, before and "
            f"after: {' and '.join(f'{x:,.0f}' for x in results['flotilla_clean_runs_per_s'])}] (goal >= 90 %: "
            f"{_met(row['healthy_ratio_vs_clean'] >= 0.9)}); {_stored(row)} (goal: none lost: "
            f"{_met(row['healthy_lost'] == 0)})"
        )
        print(
            f"    fleet in Hold: {'yes' if row['hold_seen'] else 'never'}; healthy host's breaker: "
            f"{'opened' if row['healthy_breaker_opened'] else 'never opened'}; not stored, by reason:"
        )
        for reason, n in row["reasons"].items():
            print(f"      {n:5d}  {reason}")
    ours, bare = results["flotilla_site"], results["flotilla_no_breakers"]
    if ours["terminal_s"] is not None and bare["terminal_s"] is not None:
        ratio = ours["terminal_s"] / bare["terminal_s"]
        print(
            f"  the site alone, default resilience vs breakers left out: {ratio:.2f}x the time until every job is "
            f"terminal (goal <= 1.2x: {_met(ratio <= 1.2)})"
        )
    else:
        print(
            "  default resilience vs breakers left out: not comparable, "
            f"{'the default' if ours['terminal_s'] is None else 'the breakerless'} crawl did not end "
            "(goal <= 1.2x: NOT met)"
        )
    scrapy, clean = results["scrapy"], results["scrapy_clean"]
    print(
        f"  Scrapy, default retries: crawl finished in {scrapy['finished_s']:.1f} s (process start included); "
        f"healthy host {scrapy['healthy_per_s']:,.0f} pages/s = {scrapy['healthy_ratio_vs_clean']:.0%} of its clean "
        f"{clean['healthy_per_s']:,.0f} pages/s; {_stored(scrapy)}"
    )
    print(
        "  (healthy host pages/s: its pages that answer at the first request, over the time until the last of "
        "them was stored; pages answering 503 or 429 first count in the pages stored)"
    )


if __name__ == "__main__":
    outcome = run("--quick" in sys.argv)
    report(outcome)
    print(json.dumps(outcome, indent=2))
