"""Part 5 of the benchmarks: the journal at scale, through real node processes.

Alpha runs the intake, the journal (SQLite) and the router; the fetchers are placed on beta,
which is never started: the router has nothing to send to and leases nothing (beta's subtree
waits for its node), so the jobs stay pending while they pile up.

1. N jobs submitted through alpha's intake in requests of 1,000: the rate of the first and of
   the last 10 % (goal: last >= 0.8x first), alpha's RSS at 10 % and at 100 % pending (goal:
   within 10 %), `counts()` and alpha's metrics scrape at N pending (goal: < 5 ms, medians).
2. Every job leased and stored with the router's own journal calls (leases of 1,024, each
   result stored in the lease's batch transaction), from this process, beside the node (no
   HTTP: the figures are the journal's): rates of the first and last 10 %.
3. The journal's size on disk; pruning throughput (every stored job deleted with its
   attempts, events and batch membership, by `prune_all`, results kept).

    .venv/bin/python scripts/bench_scale.py [--jobs 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flotilla.actors.pipeline.journal import open_journal
from flotilla.actors.pipeline.pruning import Retention, prune_all
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec

from harness import free_ports, node_command

TOPOLOGY = """
cluster: scale
nodes:
  alpha: {{address: "tcp://127.0.0.1:{a}", metrics: "127.0.0.1:{m}"}}
  beta: {{address: "tcp://127.0.0.1:{b}"}}
intake: {{node: alpha, address: "tcp://127.0.0.1:{i}", router: alpha/root/router}}
rules:
  product:
    fields:
      title: {{css: h1, required: true}}
retention: {{stored: keep}}
tree:
  children:
    - id: router
      actor: router
      args: {{fetchers: alpha/root/fetching/fetchers, max_in_flight: 1024, visibility: 600}}
    - id: fetching
      node: beta
      supervisor:
        children:
          - id: extractors
            pool: {{actor: extractor, size: 1}}
          - id: fetchers
            pool: {{actor: fetcher, size: 1, args: {{extractor: alpha/root/fetching/extractors}}}}
"""
REQUEST = 1000
LEASE = 1024
SITE = "http://127.0.0.1:9/product/"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def node(topology: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        node_command(topology, name, "--log-level", "warning"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(120)


def median_ms(action: Any, times: int) -> float:
    samples = []
    for _ in range(times):
        began = time.perf_counter()
        action()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def run(jobs: int) -> dict[str, Any]:
    tenth = jobs // 10
    out: dict[str, Any] = {"jobs": jobs}
    with tempfile.TemporaryDirectory(prefix="flotilla-scale-") as tmp:
        a, b, i, m = free_ports(4)
        path = Path(tmp) / "scale.yaml"
        path.write_text(TOPOLOGY.format(a=a, b=b, i=i, m=m), encoding="utf-8")
        journal_path = Path(tmp) / "data" / "alpha" / "journal.sqlite"
        with node(path, "alpha") as alpha:
            with IntakeClient.for_topology(load_topology(path), wait_for_keys=60, timeout=30, retries=3) as client:
                client.counts()
                marks = [time.perf_counter()]
                rss: dict[str, float] = {}
                for done in range(REQUEST, jobs + 1, REQUEST):
                    client.submit([JobSpec(f"{SITE}{n}", "product") for n in range(done - REQUEST, done)], "scale")
                    if done % tenth == 0:
                        marks.append(time.perf_counter())
                        if done == tenth:
                            rss["alpha_10pct_pending_mib"] = rss_mib(alpha.pid)
                rss["alpha_all_pending_mib"] = rss_mib(alpha.pid)
                out["submit_first_10pct_per_s"] = tenth / (marks[1] - marks[0])
                out["submit_last_10pct_per_s"] = tenth / (marks[-1] - marks[-2])
                out["submit_per_s"] = jobs / (marks[-1] - marks[0])
                reader = open_journal(journal_path, durable=False)
                out["counts_ms_at_all_pending"] = median_ms(reader.counts, 21)
                url = f"http://127.0.0.1:{m}/metrics"

                def scrape() -> bytes:
                    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310  our own loopback endpoint
                        return answer.read()

                out["scrape_ms_at_all_pending"] = median_ms(scrape, 11)
                out["intake_counts_ms_at_all_pending"] = median_ms(client.counts, 11)

                writer = open_journal(journal_path, durable=False)
                marks = [time.perf_counter()]
                done = 0
                while done < jobs:
                    leases = writer.lease(LEASE, visibility=600)
                    with writer.batch():
                        for lease in leases:
                            writer.store(lease.key, lease.token, {"url": lease.url}, "-")
                    before, done = done, done + len(leases)
                    if done // tenth > before // tenth:
                        marks.append(time.perf_counter())
                writer.close()
                out["store_first_10pct_per_s"] = tenth / (marks[1] - marks[0])
                out["store_last_10pct_per_s"] = tenth / (marks[-1] - marks[-2])
                out["store_per_s"] = jobs / (marks[-1] - marks[0])
                rss["alpha_all_stored_mib"] = rss_mib(alpha.pid)
                out["counts_ms_at_all_stored"] = median_ms(reader.counts, 21)
                out["scrape_ms_at_all_stored"] = median_ms(scrape, 11)
        out.update(rss)
        files = [journal_path, journal_path.with_name("journal.sqlite-wal")]
        out["journal_mib"] = sum(f.stat().st_size for f in files if f.exists()) / 2**20
        began = time.perf_counter()
        pruned = prune_all(reader, Retention(stored=1e-6, batch=5000), time.time() + 1)
        out["prune_jobs_per_s"] = pruned.jobs / (time.perf_counter() - began)
        out["pruned_jobs"] = pruned.jobs
        out["results_kept"] = reader.result_count()
        reader.close()
    out["submit_last_vs_first"] = out["submit_last_10pct_per_s"] / out["submit_first_10pct_per_s"]
    out["store_last_vs_first"] = out["store_last_10pct_per_s"] / out["store_first_10pct_per_s"]
    out["rss_all_vs_10pct_pending"] = out["alpha_all_pending_mib"] / out["alpha_10pct_pending_mib"]
    return out


def report(results: dict[str, Any]) -> None:
    r = results
    print(f"\n== Part 5: the journal at scale, {r['jobs']:,} jobs (SQLite, instant fetchers) ==")
    print(
        f"submit through the intake: first 10% {r['submit_first_10pct_per_s']:,.0f}/s, last 10% "
        f"{r['submit_last_10pct_per_s']:,.0f}/s ({r['submit_last_vs_first']:.2f}x; goal >= 0.8x)"
    )
    print(
        f"lease + store (the router's calls): first 10% {r['store_first_10pct_per_s']:,.0f}/s, last 10% "
        f"{r['store_last_10pct_per_s']:,.0f}/s ({r['store_last_vs_first']:.2f}x; goal >= 0.8x)"
    )
    print(
        f"at {r['jobs']:,} pending: counts() {r['counts_ms_at_all_pending']:.2f} ms, metrics scrape "
        f"{r['scrape_ms_at_all_pending']:.2f} ms, intake counts {r['intake_counts_ms_at_all_pending']:.2f} ms "
        "(goal < 5 ms)"
    )
    print(
        f"alpha RSS: {r['alpha_10pct_pending_mib']:.0f} MiB at 10% pending, {r['alpha_all_pending_mib']:.0f} MiB "
        f"at 100% ({r['rss_all_vs_10pct_pending']:.2f}x; goal within 10%), {r['alpha_all_stored_mib']:.0f} MiB stored"
    )
    print(
        f"journal on disk {r['journal_mib']:.0f} MiB; pruning {r['prune_jobs_per_s']:,.0f} jobs/s "
        f"({r['pruned_jobs']:,} jobs, {r['results_kept']:,} results kept)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    report(run(parser.parse_args().jobs))


if __name__ == "__main__":
    main()
