"""The demo: a realistic local site, the cluster of supervisor_tree.yaml, a crawl, and what
happened to every job. Stops everything it started and exits 0.

    python scripts/demo.py [--jobs 500] [--seconds 120] [--forever] [--mix realistic|faults]

The realistic mix (the default): `--jobs` pages of an ordinary shop on 127.0.0.1:8800 where a
few percent of pages have each fault kind (404, 503 always, 503 once, no headline, 429 with
Retry-After, articles whose prose mentions "CAPTCHA"; see scripts/demo_site.py, /site/N), a
second healthy host on 127.0.0.1:8805 with a fifth as many pages, and 20 URLs on a host that is
down. The demo then says whether every job ended, every healthy page was stored, the fleet
stayed out of Hold and the healthy hosts' breakers stayed closed.

The fault-modes mix (`--mix faults`): `--jobs` jobs (default 3,000) over every fault mode of
the demo site, the troubled ones on targets of their own (ports 8801-8804).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fleet_watch import FleetWatch

from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient, IntakeUnavailable

from demo_site import HEALTHY_KINDS, fault_of, port_with_nothing_listening

ROOT = Path(__file__).resolve().parent.parent

TOPOLOGY = ROOT / "supervisor_tree.yaml"
SITE_PORT = 8800
SECOND_HOST_PORT = 8805
"""The realistic mix's second healthy host (every page a good product page)."""
DEAD_HOST_URLS = 20
"""URLs the realistic mix sends to a host that is down (a port nothing listens on)."""
WAIT_BUDGET_S = 20.0
"""The wait budget the demo judges "every job ended" against when supervisor_tree.yaml sets no
`wait_budget` of its own (the demo reads it from there when it does)."""

TROUBLED_PORTS = {"flaky": 8801, "limited": 8802, "blocked": 8803, "captcha": 8803, "drift": 8804}
"""Fault modes served as targets of their own (a breaker per target): the shop on 8800 stays
healthy while these trip their breakers, slow down or drift."""
# (path, share of jobs): mostly healthy pages, and every fault mode of the demo site.
MIX = [
    ("product", 0.72),
    ("moved", 0.03),
    ("flaky", 0.06),
    ("limited", 0.05),
    ("slow", 0.02),
    ("gone", 0.02),
    ("removed", 0.01),
    ("private", 0.01),
    ("blocked", 0.02),
    ("captcha", 0.02),
    ("drift", 0.02),
    ("huge", 0.01),
    ("loop", 0.01),
]
IN_FLIGHT = ("pending", "fetching", "extracting", "retrying")


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


@dataclass(frozen=True)
class Crawl:
    """The URLs the demo submits, which of them must end stored, and on which hosts."""

    urls: list[str]
    healthy: frozenset[str]
    healthy_hosts: tuple[str, ...]
    site_ports: tuple[int, ...]


def realistic_crawl(pages: int) -> Crawl:
    """`pages` pages of the realistic site, a fifth as many on a second healthy host, and
    DEAD_HOST_URLS on a host that is down."""
    main = [(f"http://127.0.0.1:{SITE_PORT}/site/{n}", fault_of(n)) for n in range(pages)]
    second = [f"http://127.0.0.1:{SECOND_HOST_PORT}/product/{n}" for n in range(max(1, pages // 5))]
    dead_port = port_with_nothing_listening()
    dead = [f"http://127.0.0.1:{dead_port}/site/{n}" for n in range(DEAD_HOST_URLS)]
    healthy = frozenset([url for url, kind in main if kind in HEALTHY_KINDS] + second)
    return Crawl(
        [url for url, _ in main] + second + dead,
        healthy,
        (f"127.0.0.1:{SITE_PORT}", f"127.0.0.1:{SECOND_HOST_PORT}"),
        (SITE_PORT, SECOND_HOST_PORT),
    )


def faults_crawl(count: int) -> Crawl:
    """`count` jobs over every fault mode of the demo site (MIX), troubled modes on ports of their own."""
    rng = random.Random(7)
    kinds = [kind for kind, _ in MIX]
    weights = [share for _, share in MIX]
    urls = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        port = TROUBLED_PORTS.get(kind, SITE_PORT)
        urls.append(f"http://127.0.0.1:{port}/{kind}/{n}" + ("?ms=1500" if kind == "slow" else ""))
    healthy = frozenset(url for url in urls if url.split("/")[3] in ("product", "moved", "slow"))
    return Crawl(urls, healthy, (f"127.0.0.1:{SITE_PORT}",), (SITE_PORT, *sorted(set(TROUBLED_PORTS.values()))))


def wait_budget_of(tree: Any) -> float | None:
    """The first `wait_budget` set anywhere in a topology's YAML, if any."""
    if isinstance(tree, dict):
        if isinstance(tree.get("wait_budget"), (int, float)):
            return float(tree["wait_budget"])
        children = list(tree.values())
    elif isinstance(tree, list):
        children = tree
    else:
        return None
    return next((found for child in children if (found := wait_budget_of(child)) is not None), None)


def fresh_demo_topology() -> Path:
    """supervisor_tree.yaml with the demo's own data directory (`<data_dir>/demo`), emptied
    first: every demo starts from an empty journal, and leaves `flotilla up`'s data alone.
    Returns the path of that copy."""
    tree = yaml.safe_load(TOPOLOGY.read_text(encoding="utf-8"))
    demo_dir = load_topology(TOPOLOGY).data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True, mode=0o700)  # owner-only, like every node's own directory
    tree["data_dir"] = str(demo_dir)
    path = demo_dir / "supervisor_tree.yaml"
    path.write_text(
        f"# {TOPOLOGY.name} with the demo's own data directory, made afresh by every demo\n"
        + yaml.safe_dump(tree, sort_keys=False),
        encoding="utf-8",
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mix", choices=["realistic", "faults"], default="realistic")
    parser.add_argument("--jobs", type=int, help="pages of the main site (realistic: 500) or jobs (faults: 3000)")
    parser.add_argument("--seconds", type=float, default=120.0, help="give up waiting after this long")
    parser.add_argument("--forever", action="store_true", help="keep the cluster running until Ctrl-C")
    args = parser.parse_args()
    topology_path = fresh_demo_topology()
    topology = load_topology(topology_path)
    assert topology.intakes
    budget = wait_budget_of(yaml.safe_load(topology_path.read_text(encoding="utf-8"))) or WAIT_BUDGET_S
    crawl = realistic_crawl(args.jobs or 500) if args.mix == "realistic" else faults_crawl(args.jobs or 3000)
    log_path = topology.data_dir / "cluster.log"
    extra = [arg for port in crawl.site_ports[1:] for arg in ("--extra-port", str(port))]
    site = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo_site.py"), "--port", str(crawl.site_ports[0]), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    cluster = None
    try:
        assert site.stdout is not None
        site_url = site.stdout.readline().strip().removeprefix("ready ")
        say(f"demo site at {site_url} (and ports {', '.join(map(str, crawl.site_ports[1:]))})")
        with open(log_path, "w", encoding="utf-8", opener=lambda p, f: os.open(p, f, 0o600)) as log:
            cluster = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flotilla.nodes.cli",
                    "up",
                    "--topology",
                    str(topology_path),
                    "--log-format",
                    "json",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        say(f"cluster starting: alpha (intake, router) and beta (fetchers); journal and logs in {topology.data_dir}")
        watched = topology.nodes["beta"].metrics
        assert watched is not None, "the demo watches Hold and breakers through beta's metrics"
        with (
            IntakeClient.for_topology(topology, wait_for_keys=60, timeout=2, retries=15) as client,
            FleetWatch(watched) as watch,
        ):
            client.counts()
            say(f"crawling {len(crawl.urls)} URLs; every job should end within 2 x the wait budget of {budget:g} s")
            elapsed = submit_and_wait(topology_path, crawl.urls, args.seconds)
            verdicts(client, watch, crawl, elapsed, budget)
            if args.forever:
                say("running until Ctrl-C")
                stop_signals = {signal.SIGINT, signal.SIGTERM}
                signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # sigwait takes only blocked signals
                signal.sigwait(stop_signals)
    except IntakeUnavailable as exc:
        say(f"the intake did not answer: {exc}; see {log_path}")
        return 1
    finally:
        if cluster is not None:
            cluster.send_signal(signal.SIGTERM)
            cluster.wait(60)
            say("cluster stopped")
        site.terminate()
        site.wait(10)
        say("demo site stopped")
    return 0


def submit_and_wait(topology_path: Path, urls: list[str], seconds: float) -> float:
    """Submit `urls` with `flotilla submit --wait`, which shows the batch's progress and then
    its closing summary (stored, dead and parked by reason, duration, pages/s, retries), giving
    up after `seconds`; return the seconds it took."""
    urls_file = topology_path.parent / "urls.txt"
    urls_file.write_text("\n".join(urls) + "\n", encoding="utf-8")
    began = time.monotonic()
    submit = subprocess.run(
        [
            sys.executable,
            "-m",
            "flotilla.nodes.cli",
            "submit",
            "--topology",
            str(topology_path),
            "--wait",
            "--wait-timeout",
            f"{seconds:g}",
            "--jsonl",
            str(urls_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        check=False,
    )
    elapsed = time.monotonic() - began
    for line in submit.stdout.splitlines():
        if not line.startswith("{"):  # one JSON object per job, then the summary's lines
            print(line, flush=True)
    return elapsed


def kind_of(url: str) -> str:
    """What a demo URL is: the fault kind of a realistic-site page, else its path family."""
    family, _, number = url.split("/", 3)[3].partition("/")
    return fault_of(int(number)) if family == "site" else family


def verdicts(client: IntakeClient, watch: FleetWatch, crawl: Crawl, elapsed: float, budget: float) -> None:
    """What the demo promises, each with yes or NO: every job ended in time, every healthy page
    stored, the fleet never in Hold, the healthy hosts' breakers never opened."""
    in_flight = sum(n for s, n in client.counts().states.items() if s in IN_FLIGHT)
    stored = {result.url for result in client.all_results()}
    lost = Counter(kind_of(url) for url in crawl.healthy - stored)
    opened = sorted(set(crawl.healthy_hosts) & watch.breakers_opened)
    checks = [
        (
            in_flight == 0 and elapsed <= 2 * budget,
            f"every job ended within 2 x the wait budget ({2 * budget:g} s)",
            f"{in_flight} not ended after {elapsed:.0f} s" if in_flight else f"took {elapsed:.0f} s",
        ),
        (
            not lost,
            f"every healthy page stored ({len(crawl.healthy)})",
            f"{lost.total()} not stored (" + ", ".join(f"{n} {kind}" for kind, n in lost.most_common()) + ")",
        ),
        (not watch.hold_seen, "the fleet never entered Hold", "it did"),
        (not opened, "the healthy hosts' breakers never opened", f"opened: {', '.join(opened)}"),
    ]
    if not watch.polls:
        checks = checks[:2]
        say(f"the metrics at {watch.address} never answered: Hold and breakers unknown")
    for ok, promise, otherwise in checks:
        say(f"{'yes' if ok else 'NO '}  {promise}" + ("" if ok else f": {otherwise}"))
    if watch.breakers_opened - set(crawl.healthy_hosts):
        say(
            "     breakers that opened elsewhere: "
            f"{', '.join(sorted(watch.breakers_opened - set(crawl.healthy_hosts)))}"
        )


if __name__ == "__main__":
    sys.exit(main())
