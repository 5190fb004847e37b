"""Flotilla benchmarks. Each figure comes with a baseline measured in the same run.

Part 1 (supervision core, one process):
  * tell throughput through a supervised path vs a raw Pykka actor (goal >= 0.9x);
  * restart latency, crash to the replacement answering its next message (goal p99 <= 5 ms);
  * a crash storm: threads and memory before and after 10,000 crashes.

Part 2 (two node processes over ZeroMQ; see bench_cluster.py):
  * remote tell throughput vs raw pyzmq PUSH/PULL with msgpack (goal >= 25 %);
  * remote ask round trip p50 vs a raw DEALER/ROUTER round trip, median of 3 interleaved runs
    (goal <= 1.5x);
  * pipelined asks per second;
  * time from SIGKILL of a node to NodeDown at its peer (goal p99 <= 2 s).

Part 3 (the ingestion pipeline; see bench_pipeline.py):
  * pages per second fetched, extracted and stored through two nodes, vs Scrapy (goal >= 10x)
    and vs a bare aiohttp + selectolax loop (goal >= 75 %), with job latency percentiles: the
    median of 3 interleaved rounds (Flotilla, bare loop, Scrapy, ...) with the per-round spread;
  * a realistic site (a few percent of each fault kind, plus a host that is down) through the
    default topology and Scrapy: time until every job is terminal (goal <= 2x the wait
    budget), the healthy host's pages/s against its clean crawl (goal >= 90 %), healthy pages
    lost (goal: none), and the default breakers against none (goal: within 20 %).

Part 4 (the resilience actors; see bench_resilience.py):
  * rate accuracy, 3 nodes and 60 fetchers against one target limited to 50/s for 20 s
    (goal: mean within 5 %, no 1-second window above 110 %);
  * slot overhead p99 when tokens are there (goal < 1 ms), vs an asyncio.Semaphore;
  * time from a target going bad to its breaker opening; time into and out of Hold.

Part 5 (the journal at scale; see bench_scale.py):
  * 1,000,000 jobs submitted through the intake, then leased and stored: rates of the first
    and last 100,000 (goal: last >= 0.8x first), counts() and a metrics scrape at 1M pending
    (goal < 5 ms), the node's RSS at 100k and 1M pending (goal: within 10 %), the journal's
    size on disk, pruning throughput.

Part 6 (the everyday features; see bench_extract.py):
  * extraction with field processors (a price type; urljoin, the default for href/src, on a
    page of 1,000 links) against the same rules without them;
  * page capture (gzip under the body's hash) against extracting the same 10 KB page;
  * a client command's answer when no cluster runs (goal < 1 s), against `flotilla --version`.

The soak (see bench_soak.py; not part of `all`, not in CI): 200,000 jobs (or as many as
--soak-seconds allows, default 300) through two node processes while a fetcher crashes every
second; throughput, RSS and the journal sampled every 5 s; checks that throughput stays
steady, RSS flat and no job is lost or stored twice.

    scripts/bench [--part 1|2|3|4|5|6|all] [--quick] [--json FILE]
    scripts/bench --soak [--soak-seconds N] [--soak-crash-every S] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import queue
import statistics
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pykka

from flotilla.actors import Actor, ActorCrashed, ActorSystem, ChildSpec, PoolSpec, SupervisorFlags, SupervisorSpec

from harness import percentile

TOLERANT = SupervisorFlags(intensity=10**9, period=1.0)
PYKKA_VERSION = importlib.metadata.version("pykka")


class _Count:
    """Counts messages; sets `done` at the n-th."""

    def setup(self, n: int, done: threading.Event) -> None:
        self.n = n
        self.seen = 0
        self.done = done

    def on_receive(self, message: Any) -> Any:
        self.seen += 1
        if self.seen == self.n:
            self.done.set()
        return message


class RawPykkaCounter(_Count, pykka.ThreadingActor):
    def __init__(self, n: int, done: threading.Event) -> None:
        pykka.ThreadingActor.__init__(self)
        self.setup(n, done)


class RawPykkaSimpleQueueCounter(RawPykkaCounter):
    """Stock Pykka with the same inbox type the supervised runtime uses."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()


class SupervisedCounter(_Count, Actor):
    def __init__(self, n: int, done: threading.Event) -> None:
        Actor.__init__(self)
        self.setup(n, done)


class Crasher(Actor):
    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash on purpose")
        return message


def tell_raw(cls: type, n: int) -> float:
    done = threading.Event()
    ref = cls.start(n, done)
    began = time.perf_counter()
    for i in range(n):
        ref.tell(i)
    done.wait()
    elapsed = time.perf_counter() - began
    ref.stop()
    return n / elapsed


def tell_supervised(n: int) -> float:
    done = threading.Event()
    system = ActorSystem("bench")
    system.start(SupervisorSpec("root", children=(ChildSpec("c", SupervisedCounter, {"n": n, "done": done}),)))
    ref = system.ref("bench/root/c")
    began = time.perf_counter()
    for i in range(n):
        ref.tell(i)
    done.wait()
    elapsed = time.perf_counter() - began
    system.stop()
    return n / elapsed


def bench_tell(n: int, rounds: int) -> dict[str, Any]:
    raw, raw_sq, supervised = [], [], []
    for _ in range(rounds):  # interleaved, so drift hits all three alike
        raw.append(tell_raw(RawPykkaCounter, n))
        raw_sq.append(tell_raw(RawPykkaSimpleQueueCounter, n))
        supervised.append(tell_supervised(n))
    r, rs, s = (statistics.median(x) for x in (raw, raw_sq, supervised))
    return {
        "messages": n,
        "rounds": rounds,
        "raw_pykka_per_s": r,
        "raw_pykka_simplequeue_per_s": rs,
        "supervised_per_s": s,
        "ratio_vs_raw_pykka": s / r,
        "ratio_vs_raw_pykka_simplequeue": s / rs,
    }


def bench_restart(crashes: int) -> dict[str, Any]:
    system = ActorSystem("bench")
    system.start(SupervisorSpec("root", children=(ChildSpec("c", Crasher),), flags=TOLERANT))
    path = "bench/root/c"
    ref = system.ref(path)
    latencies = []
    incarnation = 1
    for _ in range(crashes):
        began = time.perf_counter()
        ref.tell("crash")
        incarnation = system.wait_started(path, other_than=incarnation)
        ref.ask("ping")
        latencies.append(time.perf_counter() - began)
    system.stop()
    # Baseline: what the same replacement costs with raw Pykka (start a new actor, ask it).
    raw = []
    for _ in range(min(crashes, 500)):
        began = time.perf_counter()
        fresh = RawPykkaCounter.start(1, threading.Event())
        fresh.ask("ping")
        raw.append(time.perf_counter() - began)
        fresh.stop()
    ms = [x * 1000 for x in latencies]
    return {
        "crashes": crashes,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "raw_pykka_start_and_ask_p50_ms": percentile([x * 1000 for x in raw], 50),
    }


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bench_storm(crashes: int) -> dict[str, Any]:
    system = ActorSystem("bench")
    pool = PoolSpec("pool", ChildSpec("w", Crasher), size=4, flags=TOLERANT)
    system.start(SupervisorSpec("root", children=(pool,), flags=TOLERANT))
    paths = [f"bench/root/pool/{i}" for i in range(4)]

    def crash(path: str) -> None:
        try:
            system.ask(path, "crash")
        except ActorCrashed:
            pass
        system.supervisor("bench/root/pool").count_children()  # the restart is done

    for i in range(1_000):  # warm-up: the allocator's arenas grow to their working size
        crash(paths[i % 4])
    gc.collect()
    threads_before, rss_before = threading.active_count(), rss_kib()
    began = time.perf_counter()
    for i in range(crashes):
        crash(paths[i % 4])
    elapsed = time.perf_counter() - began
    gc.collect()
    threads_after, rss_after = threading.active_count(), rss_kib()
    # A second storm under tracemalloc (which inflates RSS itself) counts Python objects.
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    for i in range(crashes):
        crash(paths[i % 4])
    gc.collect()
    traced_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    result = {
        "crashes": crashes,
        "seconds": elapsed,
        "threads_before": threads_before,
        "threads_after": threads_after,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "python_heap_growth_bytes": traced_after - traced_before,
        "dead_letters": system.registry.dead_letters.count,
    }
    system.stop()
    return result


def run_part1(quick: bool) -> dict[str, Any]:
    n, rounds, restarts, storm = (20_000, 3, 200, 1_000) if quick else (200_000, 5, 2_000, 10_000)
    results: dict[str, Any] = {}
    tell = results["tell"] = bench_tell(n, rounds)
    print(
        f"tell throughput ({n:,} msgs, median of {rounds}): raw Pykka {tell['raw_pykka_per_s']:,.0f}/s, "
        f"raw Pykka+SimpleQueue {tell['raw_pykka_simplequeue_per_s']:,.0f}/s, supervised "
        f"{tell['supervised_per_s']:,.0f}/s -> ratio {tell['ratio_vs_raw_pykka']:.2f} "
        f"(vs same inbox {tell['ratio_vs_raw_pykka_simplequeue']:.2f}); goal >= 0.9"
    )
    restart = results["restart"] = bench_restart(restarts)
    print(
        f"restart latency ({restarts:,} crashes): p50 {restart['p50_ms']:.3f} ms, p99 {restart['p99_ms']:.3f} ms, "
        f"max {restart['max_ms']:.3f} ms; raw Pykka start+ask p50 {restart['raw_pykka_start_and_ask_p50_ms']:.3f} ms; "
        "goal p99 <= 5 ms"
    )
    s = results["storm"] = bench_storm(storm)
    print(
        f"crash storm ({storm:,} crashes in {s['seconds']:.1f} s): threads {s['threads_before']} -> "
        f"{s['threads_after']}, RSS {s['rss_kib_before']:,} -> {s['rss_kib_after']:,} KiB, "
        f"Python heap growth {s['python_heap_growth_bytes']:,} B"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--part", choices=["1", "2", "3", "4", "5", "6", "all"], default="all", help="which part to run"
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run, not for the docs)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--soak", action="store_true", help="run the soak instead of the parts (see bench_soak.py)")
    parser.add_argument(
        "--soak-seconds", type=float, default=300.0, help="the soak's load phase in seconds (then it drains)"
    )
    parser.add_argument(
        "--soak-crash-every",
        type=float,
        default=1.0,
        help="seconds between the soak's fetcher crashes (0: none, for a baseline)",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "pykka": PYKKA_VERSION,
            "pyzmq": importlib.metadata.version("pyzmq"),
            "platform": platform.platform(),
        },
    }
    print(
        f"Python {platform.python_version()}, Pykka {PYKKA_VERSION}, pyzmq "
        f"{results['machine']['pyzmq']}, {os.cpu_count()} CPUs"
    )
    part = "none" if args.soak else args.part
    if args.soak:
        import bench_soak

        results["soak"] = bench_soak.run(args.soak_seconds, crash_every=args.soak_crash_every)
        bench_soak.report(results["soak"])
    if part in ("1", "all"):
        results["part1"] = run_part1(args.quick)
    if part in ("2", "all"):
        import bench_cluster

        results["part2"] = bench_cluster.run(args.quick)
        bench_cluster.report(results["part2"])
    if part in ("3", "all"):
        import bench_pipeline

        results["part3"] = bench_pipeline.run(args.quick)
        bench_pipeline.report(results["part3"])
    if part in ("4", "all"):
        import bench_resilience

        results["part4"] = bench_resilience.run(args.quick)
        bench_resilience.report(results["part4"])
    if part in ("5", "all"):
        import bench_scale

        results["part5"] = bench_scale.run(100_000 if args.quick else 1_000_000)
        bench_scale.report(results["part5"])
    if part in ("6", "all"):
        import bench_extract

        results["part6"] = bench_extract.run(args.quick)
        bench_extract.report(results["part6"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
