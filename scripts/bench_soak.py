"""The soak (`scripts/bench --soak`, not in CI): jobs through two node processes for a bounded
time while a fetcher crashes every second.

Node `alpha` runs the intake, the journal (SQLite, in its data directory) and the router;
node `beta` runs the fetchers and extractors, which fetch product pages from the local demo
site. This process submits jobs through the intake, keeping a backlog of pending work, until
it has submitted the target number or the load phase is over; then it waits until every
submitted job is stored (the drain). Every second, through the whole run, it crashes one
fetcher (the two in turn): it joins the cluster as node `soak` (which hosts nothing) and
tells the fetcher a message it does not handle, which raises in the fetcher, so its
supervisor restarts it; the jobs it had in flight are handed back uncounted (`Returned`) and
due again at once. The router keeps its default poison limit and attempts: these crashes are
not the jobs' doing, and none of them may cost a job an attempt.

Every few seconds it samples the jobs stored so far (through the intake's counts), the
journal's counts by state and the RSS of both node processes. At the end it checks:

* throughput steady: the mean stored/s of the last third of the load phase's windows is at
  least 0.8x that of the first third (the windows of the warm-up left out);
* RSS flat: each node's RSS at the last sample of the load phase within 10 % of its first
  sample after the warm-up;
* none lost: every submitted key has a result, each was stored by exactly one attempt, and
  the journal's `stored` count equals the number submitted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flotilla.actors import ActorSystem
from flotilla.nodes.cluster.membership import Cluster
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec

from harness import DemoSiteProcess, free_ports, node_command

TOPOLOGY = """
cluster: soak
nodes:
  alpha: {{address: "tcp://127.0.0.1:{a}"}}
  beta: {{address: "tcp://127.0.0.1:{b}"}}
  soak: {{address: "tcp://127.0.0.1:{s}"}}
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
      args:
        fetchers: alpha/root/fetching/fetchers
        max_in_flight: 512
        visibility: {visibility}
    - id: fetching
      node: beta
      supervisor:
        intensity: 1000000
        period: 1
        children:
          - id: extractors
            pool: {{actor: extractor, size: 2}}
          - id: fetchers
            pool:
              actor: fetcher
              size: 2
              intensity: 1000000
              period: 1
              args: {{extractor: alpha/root/fetching/extractors, max_in_flight: 256}}
"""

FETCHERS = "alpha/root/fetching/fetchers"
CRASH = "soak: a message no fetcher handles"
"""What the soak tells a fetcher to crash it (its `on_receive` raises on a message it does not know)."""

JOBS = 200_000
SECONDS = 300.0
SAMPLE_EVERY = 5.0
WARMUP = 10.0
"""Seconds at the start of the load phase whose windows and RSS the checks leave out."""
BACKLOG = 5_000
"""Jobs submitted but not stored that the submitter keeps at most."""
SUBMIT_BATCH = 1_000
VISIBILITY = 10.0
"""The router's lease on a job: a job lost with a crashed fetcher is sent again after it."""
DRAIN_TIMEOUT = 120.0
STEADY = 0.8
RSS_TOLERANCE = 0.10


def rss_kib(pid: int) -> int:
    """The resident set size of process `pid`, in KiB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


@dataclass
class Sample:
    since: float
    """Seconds since the load phase began, at the previous sample (the window's start)."""
    at: float
    """Seconds since the load phase began."""
    submitted: int
    stored: int
    stored_per_s: float
    """Jobs stored per second since the previous sample."""
    crashes: int
    rss_kib: dict[str, int]
    states: dict[str, int]
    phase: str
    """`load` while jobs are being submitted, `drain` after."""


@dataclass
class Submitter:
    """Submits jobs in batches, keeping at most `BACKLOG` of them unstored, until `target` are
    submitted or `stop` is set; remembers every accepted key."""

    client: IntakeClient
    site: str
    target: int
    stop: threading.Event
    stored: list[int]
    """The latest stored count (set by the sampler)."""
    keys: list[str] = field(default_factory=list)
    refused: int = 0
    error: BaseException | None = None

    def run(self) -> None:
        numbers = itertools.count()
        try:
            while len(self.keys) < self.target and not self.stop.is_set():
                if len(self.keys) - self.stored[0] >= BACKLOG:
                    self.stop.wait(0.05)  # the backlog is full: wait for the sampler's next count
                    continue
                size = min(SUBMIT_BATCH, self.target - len(self.keys))
                batch = [JobSpec(f"{self.site}/product/{next(numbers)}", "product") for _ in range(size)]
                for ack in self.client.submit(batch):
                    if ack.status == "accepted":
                        self.keys.append(ack.key)
                    else:
                        self.refused += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the soak
            self.error = exc


class Crasher:
    """Crashes a fetcher every `interval` seconds, the fetchers in turn, from node `soak`."""

    def __init__(self, system: ActorSystem, fetchers: int = 2, interval: float = 1.0) -> None:
        self.system = system
        self.paths = [f"{FETCHERS}/{n}" for n in range(fetchers)]
        self.interval = interval
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="soak-crasher", daemon=True)

    def run(self) -> None:
        for path in itertools.cycle(self.paths):
            if self.stop.wait(self.interval):
                return
            self.system.ref(path).tell(CRASH)
            self.sent += 1


def _journal_check(journal: Path, keys: list[str]) -> dict[str, Any]:
    """What the journal holds of the submitted `keys`: results, stored attempts, duplicates."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        results = {row[0] for row in db.execute("SELECT key FROM results")}
        stored_attempts = db.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'stored'").fetchone()[0]
        # Attempts name their job by its key, or (schema 3 on) by its integer id.
        job = "job" if "job" in {row[1] for row in db.execute("PRAGMA table_info(attempts)")} else "key"
        stored_twice = db.execute(
            f"SELECT COUNT(*) FROM (SELECT {job} FROM attempts WHERE outcome = 'stored' GROUP BY {job}"  # noqa: S608
            " HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        jobs_stored = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'stored'").fetchone()[0]
        attempts = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        outcomes = {
            str(outcome): n
            for outcome, n in db.execute("SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome").fetchall()
        }
        dead = dict(db.execute("SELECT reason, COUNT(*) FROM jobs WHERE state = 'dead' GROUP BY reason").fetchall())
    finally:
        db.close()
    submitted = set(keys)
    return {
        "submitted": len(keys),
        "distinct_submitted": len(submitted),
        "results": len(results),
        "missing": len(submitted - results),
        "unexpected_results": len(results - submitted),
        "stored_attempts": stored_attempts,
        "keys_stored_twice": stored_twice,
        "jobs_stored": jobs_stored,
        "attempts": attempts,
        "attempt_outcomes": outcomes,
        "dead": dead,
    }


def _logged(log: Path, size: int) -> dict[str, Any]:
    """What a node logged in its first `size` bytes (JSON lines, warnings and worse): the
    fetchers' crashes, the other exits of supervised children, and the events by name."""
    events: Counter[str] = Counter()
    crashes = 0
    other_exits: Counter[str] = Counter()
    with log.open("rb") as lines:
        text = lines.read(size).decode("utf-8", errors="replace")
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        name = str(event.get("event", ""))
        events[name] += 1
        if name == "supervisor.child_exited":
            reason = str(event.get("reason", ""))
            if str(event.get("supervisor", "")) == FETCHERS and reason.startswith("Crash(TypeError"):
                crashes += 1
            else:
                other_exits[f"{event.get('supervisor')}/{event.get('child')}: {reason}"] += 1
    return {"fetcher_crashes": crashes, "other_exits": dict(other_exits), "events": dict(events)}


def _checks(samples: list[Sample], journal: dict[str, Any], nodes: tuple[str, ...]) -> dict[str, Any]:
    load = [s for s in samples if s.phase == "load" and s.since >= WARMUP]
    windows = [s.stored_per_s for s in load]
    third = max(1, len(windows) // 3)
    first, last = statistics.mean(windows[:third]), statistics.mean(windows[-third:])
    rss = {name: (load[0].rss_kib[name], load[-1].rss_kib[name]) for name in nodes}
    growth = {name: after / before - 1 for name, (before, after) in rss.items()}
    lost = journal["missing"]
    return {
        "throughput": {
            "windows": len(windows),
            "first_third_per_s": first,
            "last_third_per_s": last,
            "ratio": last / first,
            "steady": last >= STEADY * first,
        },
        "rss": {
            "kib_first_last": {name: list(pair) for name, pair in rss.items()},
            "growth": growth,
            "flat": all(abs(g) <= RSS_TOLERANCE for g in growth.values()),
        },
        "lost": {
            "lost": lost,
            "stored_twice": journal["keys_stored_twice"],
            "none_lost": lost == 0
            and journal["results"] == journal["submitted"]
            and journal["stored_attempts"] == journal["submitted"]
            and journal["jobs_stored"] == journal["submitted"]
            and journal["keys_stored_twice"] == 0,
        },
    }


def run(seconds: float = SECONDS, jobs: int = JOBS, crash_every: float = 1.0) -> dict[str, Any]:
    """The soak: a load phase of `seconds` (or until `jobs` are submitted), then the drain;
    a fetcher crashed every `crash_every` seconds all along (0: none, a baseline)."""
    site = DemoSiteProcess()
    tmp = tempfile.TemporaryDirectory(prefix="flotilla-soak-")
    a, b, s, i = free_ports(4)
    path = Path(tmp.name) / "soak.yaml"
    path.write_text(TOPOLOGY.format(a=a, b=b, s=s, i=i, visibility=VISIBILITY), encoding="utf-8")
    topology = load_topology(path)
    logs = {name: (Path(tmp.name) / f"{name}.log").open("wb") for name in ("alpha", "beta")}
    nodes = {
        name: subprocess.Popen(
            node_command(path, name, "--log-level", "warning"), stdout=logs[name], stderr=subprocess.STDOUT
        )
        for name in ("beta", "alpha")
    }
    system = ActorSystem("soak")
    cluster = Cluster(topology, "soak", system)
    cluster.start()
    stop = threading.Event()
    crasher = Crasher(system, interval=crash_every)
    samples: list[Sample] = []
    load_seconds = 0.0
    try:
        with (
            IntakeClient.for_topology(topology, wait_for_keys=60, timeout=5, retries=30) as sampler,
            IntakeClient.for_topology(topology, wait_for_keys=60, timeout=10, retries=30) as client,
        ):
            assert cluster.wait_up("beta", 60) and cluster.wait_up("alpha", 60), "the nodes did not come up"
            _wait_for_fetchers(system)
            stored = [0]
            submitter = Submitter(client, site.url, jobs, stop, stored)
            feeding = threading.Thread(target=submitter.run, name="soak-submitter", daemon=True)
            began = time.monotonic()
            feeding.start()
            if crash_every > 0:
                crasher.thread.start()
            previous_at, previous_stored = 0.0, 0
            phase = "load"
            drain_deadline = float("inf")
            tick = threading.Event()  # never set: waits out the time to the next sample
            while True:
                tick.wait(max(0.0, previous_at + SAMPLE_EVERY - (time.monotonic() - began)))
                counts = sampler.counts().states
                now = time.monotonic() - began
                stored[0] = counts.get("stored", 0)
                samples.append(
                    Sample(
                        since=previous_at,
                        at=now,
                        submitted=len(submitter.keys),
                        stored=stored[0],
                        stored_per_s=(stored[0] - previous_stored) / (now - previous_at),
                        crashes=crasher.sent,
                        rss_kib={name: rss_kib(node.pid) for name, node in nodes.items()},
                        states=dict(counts),
                        phase=phase,
                    )
                )
                _print_sample(samples[-1])
                previous_at, previous_stored = now, stored[0]
                if submitter.error is not None:
                    raise RuntimeError(f"submitting failed: {submitter.error!r}") from submitter.error
                if any(node.poll() is not None for node in nodes.values()):
                    raise RuntimeError(f"a node exited: { {n: p.poll() for n, p in nodes.items()} }")
                if phase == "load" and (now >= seconds or not feeding.is_alive()):
                    phase = "drain"
                    stop.set()
                    feeding.join(30)
                    drain_deadline = now + DRAIN_TIMEOUT
                    load_seconds = now
                unfinished = sum(n for state, n in counts.items() if state not in ("stored", "dead"))
                if phase == "drain" and unfinished == 0:
                    break
                if now > drain_deadline:
                    break
            crasher.stop.set()
            if crasher.thread.is_alive():
                crasher.thread.join(5)
            total = time.monotonic() - began
            logged_bytes = {name: os.fstat(log.fileno()).st_size for name, log in logs.items()}  # before they stop
    finally:
        stop.set()
        crasher.stop.set()
        for node in nodes.values():
            if node.poll() is None:
                node.terminate()
        for node in nodes.values():
            node.wait(60)
        for log in logs.values():
            log.close()
        cluster.close()
        system.stop()
        site.stop()
    journal = _journal_check(Path(tmp.name) / "data" / "alpha" / "journal.sqlite", submitter.keys)
    events = {name: _logged(Path(tmp.name) / f"{name}.log", logged_bytes[name]) for name in ("alpha", "beta")}
    tmp.cleanup()
    return {
        "target_jobs": jobs,
        "load_seconds_asked": seconds,
        "load_seconds": load_seconds,
        "seconds": total,
        "submitted": len(submitter.keys),
        "refused": submitter.refused,
        "crash_every_s": crash_every,
        "crashes_sent": crasher.sent,
        "fetcher_crashes_logged": events["beta"]["fetcher_crashes"],
        "logged": events,
        "visibility_s": VISIBILITY,
        "backlog": BACKLOG,
        "warmup_s": WARMUP,
        "samples": [asdict(sample) for sample in samples],
        "journal": journal,
        "checks": _checks(samples, journal, ("alpha", "beta")),
    }


def _wait_for_fetchers(system: ActorSystem, timeout: float = 60.0) -> None:
    """Until both fetchers run (alpha starts the fetching subtree on beta once both are up)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):  # the subtree is still starting
            children = system.supervisor(FETCHERS).which_children()
            if len(children) == 2 and all(child.status == "running" for child in children):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the fetchers did not start within {timeout:g} s")
        time.sleep(0.1)  # polling for the subtree, with a deadline


def _print_sample(sample: Sample) -> None:
    rss = ", ".join(f"{name} {kib / 1024:,.0f} MiB" for name, kib in sample.rss_kib.items())
    states = " ".join(f"{state} {count:,}" for state, count in sorted(sample.states.items()) if count)
    print(
        f"  {sample.at:6.1f} s {sample.phase:5}  submitted {sample.submitted:,}  stored {sample.stored:,} "
        f"({sample.stored_per_s:,.0f}/s)  crashes {sample.crashes}  RSS {rss}  [{states}]",
        flush=True,
    )


def report(results: dict[str, Any]) -> None:
    checks, journal = results["checks"], results["journal"]
    steady, rss, lost = checks["throughput"], checks["rss"], checks["lost"]
    print(
        f"soak: {results['submitted']:,} jobs (target {results['target_jobs']:,}) through two nodes in "
        f"{results['load_seconds']:.0f} s of load + {results['seconds'] - results['load_seconds']:.0f} s of drain, "
        f"{results['crashes_sent']} fetcher crashes sent (one every {results['crash_every_s']:g} s; 0: none), "
        f"{results['fetcher_crashes_logged']} logged by beta"
    )
    for name, logged in results["logged"].items():
        others = logged["other_exits"]
        node_down = logged["events"].get("cluster.node_down", 0)
        if others or node_down:
            print(f"  {name} also logged: {node_down} node_down; other exits {others}")
    print(
        f"  throughput ({steady['windows']} windows of {SAMPLE_EVERY:g} s after the warm-up"
        f"{'; too few to judge' if steady['windows'] < 3 else ''}): first third {steady['first_third_per_s']:,.0f} "
        "stored/s, last third "
        f"{steady['last_third_per_s']:,.0f} stored/s -> {steady['ratio']:.2f}x "
        f"({'steady' if steady['steady'] else 'NOT steady'}; goal >= {STEADY}x)"
    )
    growth = ", ".join(
        f"{name} {first / 1024:,.0f} -> {last / 1024:,.0f} MiB ({rss['growth'][name]:+.1%})"
        for name, (first, last) in rss["kib_first_last"].items()
    )
    print(f"  RSS after warm-up -> end of load: {growth} ({'flat' if rss['flat'] else 'NOT flat'}; goal within 10 %)")
    print(
        f"  journal: {journal['results']:,} results for {journal['submitted']:,} submitted keys, "
        f"{journal['stored_attempts']:,} stored attempts, {journal['keys_stored_twice']} keys stored twice, "
        f"{journal['missing']} missing (dead: {journal['dead'] or 0}), {journal['attempts']:,} attempts in all "
        f"({'none lost' if lost['none_lost'] else 'LOST OR DUPLICATED'})"
    )


if __name__ == "__main__":
    report(run(float(sys.argv[1]) if len(sys.argv) > 1 else SECONDS))
