"""Part 3's failover rows: how long the fleet stores nothing when the owner of the tree dies.

Three node processes on one PostgreSQL journal: alpha and gamma are candidates for the tree
(each with an intake), the router is one of the tree's singletons, fetchers and extractors run
on beta. Jobs flow from the local demo site; once some are stored, the owner (whichever
candidate holds the lease, with its intake and the router) is killed with SIGKILL. The figure
is the time from the kill to the first job stored after it (by the router the new owner
starts), read from the journal's own timestamps. Each trial is a fresh cluster and database.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from flotilla.actors.pipeline.leases import LeaseTable
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from flotilla.nodes.runtime.ownership import TREE_LEASE

from harness import PostgresServer, free_ports, node_command, percentile

LEASE = 2.0

TOPOLOGY = """
cluster: failover
nodes:
  alpha: {{address: "tcp://127.0.0.1:{a}"}}
  gamma: {{address: "tcp://127.0.0.1:{g}"}}
  beta: {{address: "tcp://127.0.0.1:{b}"}}
journal: "{journal}"
failover: {{candidates: [alpha, gamma], lease: {lease}}}
intake:
  - {{node: alpha, address: "tcp://127.0.0.1:{ia}", router: alpha/root/router}}
  - {{node: gamma, address: "tcp://127.0.0.1:{ig}", router: alpha/root/router}}
egress: {{allow: [127.0.0.1]}}
rules:
  product:
    fields:
      title: {{css: h1.title, required: true}}
tree:
  children:
    - id: router
      actor: router
      args: {{fetchers: alpha/root/fetching/fetchers, max_in_flight: 512, visibility: 30}}
    - id: fetching
      node: beta
      supervisor:
        children:
          - id: extractors
            pool: {{actor: extractor, size: 2}}
          - id: fetchers
            pool: {{actor: fetcher, size: 2, args: {{extractor: alpha/root/fetching/extractors}}}}
"""


def _node(topology: Path, name: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(node_command(topology, name), stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _stored_since(journal: str, since: float) -> float | None:
    with psycopg.connect(journal) as conn:
        row = conn.execute("SELECT MIN(stored_at) FROM results WHERE stored_at > %s", (since,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _owner(journal: str) -> str:
    """The node that holds the tree's lease now."""
    leases = LeaseTable(journal)
    try:
        held = leases.holder(TREE_LEASE)
    finally:
        leases.close()
    if held is None or held.remaining <= 0:
        raise RuntimeError("nobody owns the tree")
    return held.holder.split("/", 1)[0]


def _stored(journal: str) -> int:
    with psycopg.connect(journal) as conn:
        row = conn.execute("SELECT COUNT(*) FROM results").fetchone()
    return int(row[0]) if row else 0


def trial(server: PostgresServer, site: str, jobs: int) -> float:
    """One cluster: jobs flowing, the owner killed; seconds from the kill to the next result."""
    database = server.create_database("failover")
    journal = server.url(database)
    with tempfile.TemporaryDirectory(prefix="flotilla-failover-") as tmp:
        a, g, b, ia, ig = free_ports(5)
        path = Path(tmp) / "failover.yaml"
        path.write_text(TOPOLOGY.format(a=a, g=g, b=b, ia=ia, ig=ig, journal=journal, lease=LEASE), encoding="utf-8")
        nodes = {name: _node(path, name, Path(tmp) / f"{name}.log") for name in ("alpha", "gamma", "beta")}
        try:
            with IntakeClient.for_topology(load_topology(path), wait_for_keys=60, timeout=2, retries=30) as client:
                for _ in client.submit_all(
                    (JobSpec(f"{site}/product/{k}", "product") for k in range(jobs)), batch=1000
                ):
                    pass
                deadline = time.monotonic() + 60
                while _stored(journal) < jobs // 10:
                    if time.monotonic() > deadline:
                        raise RuntimeError("no jobs stored within 60 s")
                    time.sleep(0.05)
                owner = _owner(journal)
                nodes[owner].send_signal(signal.SIGKILL)
                killed_at = time.time()
                deadline = time.monotonic() + 60
                while (first := _stored_since(journal, killed_at)) is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError("nothing stored within 60 s of the kill")
                    time.sleep(0.02)
            return first - killed_at
        finally:
            for process in nodes.values():
                if process.poll() is None:
                    process.terminate()
            for process in nodes.values():
                process.wait(60)
            server.drop_database(database)


def run(site: str, quick: bool) -> dict[str, Any]:
    trials = 3 if quick else 7
    server = PostgresServer()
    try:
        times = [trial(server, site, 5_000 if quick else 20_000) for _ in range(trials)]
    finally:
        server.stop()
    return {
        "trials": trials,
        "lease_s": LEASE,
        "seconds": times,
        "p50_s": percentile(times, 50),
        "max_s": max(times),
    }


def report(results: dict[str, Any]) -> None:
    print(
        f"failover (SIGKILL of the owner → first job stored under the new owner, {results['trials']} trials, "
        f"lease {results['lease_s']:g} s): p50 {results['p50_s']:.2f} s, max {results['max_s']:.2f} s (goal p50 <= 3 s)"
    )
