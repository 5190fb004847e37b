"""The demo: a local site with fault modes, the cluster of supervisor_tree.yaml, a few
thousand jobs, and what happened to them. Stops everything it started and exits 0.

    python scripts/demo.py [--jobs 3000] [--seconds 120] [--forever]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes.client import IntakeClient, IntakeUnavailable  # noqa: E402
from nodes.intake_protocol import JobSpec  # noqa: E402
from nodes.topology import load_topology  # noqa: E402

SITE_PORT = 8800
TROUBLED_PORTS = {"flaky": 8801, "limited": 8802, "blocked": 8803, "captcha": 8803, "drift": 8804}
"""Fault modes served as targets of their own (a breaker per target): the shop on 8800 stays
healthy while these trip their breakers, slow down or drift."""
# (path, share of jobs): mostly healthy pages, and every fault mode of the demo site.
MIX = [("product", 0.72), ("moved", 0.03), ("flaky", 0.06), ("limited", 0.05), ("slow", 0.02),
       ("gone", 0.02), ("removed", 0.01), ("private", 0.01), ("blocked", 0.02), ("captcha", 0.02),
       ("drift", 0.02), ("huge", 0.01), ("loop", 0.01)]


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def job_urls(count: int, site: str) -> list[str]:
    rng = random.Random(7)
    kinds = [kind for kind, _ in MIX]
    weights = [share for _, share in MIX]
    urls = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        base = site.replace(f":{SITE_PORT}", f":{TROUBLED_PORTS[kind]}") if kind in TROUBLED_PORTS else site
        urls.append(f"{base}/{kind}/{n}" + ("?ms=1500" if kind == "slow" else ""))
    return urls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=120.0, help="give up waiting after this long")
    parser.add_argument("--forever", action="store_true", help="keep the cluster running until Ctrl-C")
    args = parser.parse_args()
    topology = load_topology(ROOT / "supervisor_tree.yaml")
    assert topology.intake is not None
    log_path = topology.data_dir / "demo-cluster.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    extra = [arg for port in sorted(set(TROUBLED_PORTS.values())) for arg in ("--extra-port", str(port))]
    site = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo_site.py"), "--port", str(SITE_PORT), *extra],
                            stdout=subprocess.PIPE, text=True)
    cluster = None
    try:
        assert site.stdout is not None
        site_url = site.stdout.readline().strip().removeprefix("ready ")
        say(f"demo site at {site_url}")
        with open(log_path, "w", encoding="utf-8") as log:
            cluster = subprocess.Popen([sys.executable, "-m", "nodes.cli", "up", "--topology",
                                        str(ROOT / "supervisor_tree.yaml"), "--log-format", "json"],
                                       stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        say(f"cluster starting: alpha (intake, router) and beta (fetchers); logs in {log_path}")
        with IntakeClient.for_topology(topology, wait_for_keys=60, timeout=2, retries=15) as client:
            client.counts()
            urls = job_urls(args.jobs, site_url)
            began = time.monotonic()
            acks: Counter[str] = Counter()
            for batch in client.submit_all((JobSpec(url, "product") for url in urls), batch=500):
                acks.update(a.status for a in batch)
            say(f"submitted {len(urls)} jobs: {dict(acks)}")
            deadline = began + args.seconds
            last = ""
            while time.monotonic() < deadline:
                states = client.counts().states
                line = "  ".join(f"{s} {n}" for s, n in states.items() if n)
                if line != last:
                    say(f"{time.monotonic() - began:5.1f} s  {line}")
                    last = line
                if settled(client, states):
                    break
                time.sleep(1.0)
            elapsed = time.monotonic() - began
            summary(client, elapsed)
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


def settled(client: IntakeClient, states: dict[str, int]) -> bool:
    """Nothing in flight, and every job still waiting waits behind an open breaker."""
    if states["fetching"] + states["extracting"] + states["retrying"]:
        return False
    return all((job.reason or "").startswith("waiting: breaker") for job in client.all_jobs("pending"))


def summary(client: IntakeClient, elapsed: float) -> None:
    counts = client.counts()
    say(f"after {elapsed:.1f} s: " + ", ".join(f"{n} {s}" for s, n in counts.states.items() if n)
        + f"; {counts.results} results stored")
    reasons: Counter[str] = Counter()
    for state in ("dead", "parked", "pending"):
        for job in client.all_jobs(state):
            parts = (job.reason or "").split(": ")
            kind, detail = parts[0], parts[1].split("(")[0].strip() if len(parts) > 1 else ""
            reasons[f"{state:<7} {kind:<9} {detail}"] += 1
    for reason, n in reasons.most_common():
        say(f"  {n:5d}  {reason}")
    sample, _ = client.results(limit=1)
    if sample:
        say(f"a stored result: {sample[0].url} -> {sample[0].fields}")


if __name__ == "__main__":
    sys.exit(main())
