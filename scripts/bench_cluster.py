"""Part 2 of the benchmarks: two node processes over ZeroMQ, against raw pyzmq baselines.

The bench process joins the cluster as node `bench`; node `beta` is a real
`flotilla node start` process hosting the tree (a `tally` actor). Each baseline runs the
same traffic shape with raw pyzmq and msgpack between the bench process and a helper
process (this file run as a program: `raw-pull`, `raw-echo`). The ask round trip is measured
in `ASK_RUNS` interleaved pairs (Flotilla, raw, Flotilla, raw, ...) so that both see the same
load on a shared machine; the figure is the ratio of the medians, with the spread of the
per-pair ratios.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from flotilla.actors import ActorSystem
from flotilla.actors.demo.messages import Done
from flotilla.nodes.cluster.membership import Cluster
from flotilla.nodes.config.topology import load_topology

from harness import free_ports, percentile

TALLY = "beta/root/tally"
ASK_RUNS = 3
"""Interleaved pairs of ask round-trip runs (Flotilla, then raw)."""
ASK_WARM_UP = 50
"""Round trips before each run's first measured one (not counted)."""


class TwoNodes:
    """A `beta` node process running a tally, and this process joined as `bench`."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="flotilla-bench-")
        beta_port, bench_port = free_ports(2)
        self.path = Path(self.dir.name) / "bench.yaml"
        self.path.write_text(
            "cluster: bench\n"
            f"nodes:\n  beta: {{address: 'tcp://127.0.0.1:{beta_port}'}}\n"
            f"  bench: {{address: 'tcp://127.0.0.1:{bench_port}'}}\n"
            "tree:\n  node: beta\n  children:\n    - {id: tally, actor: tally}\n",
            encoding="utf-8",
        )
        self.topology = load_topology(self.path)
        self.beta: subprocess.Popen[bytes] | None = None
        self.system = ActorSystem("bench")
        self.cluster = Cluster(self.topology, "bench", self.system)
        self.cluster.start()

    def start_beta(self) -> None:
        self.beta = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flotilla.nodes.cli",
                "node",
                "start",
                "--topology",
                str(self.path),
                "--node",
                "beta",
                "--log-level",
                "warning",
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert self.cluster.wait_up("beta", 30), "beta did not come up"
        deadline = time.monotonic() + 30
        while True:
            try:
                self.system.ask(TALLY, "totals", timeout=1)
                return
            except Exception:  # the tree is still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        if self.beta is not None and self.beta.poll() is None:
            self.beta.kill()
            self.beta.wait()
        self.cluster.close()
        self.system.stop()
        self.dir.cleanup()


def remote_tell_throughput(nodes: TwoNodes, n: int) -> float:
    ref = nodes.system.ref(TALLY)
    before = nodes.system.ask(TALLY, "totals")["done"]
    began = time.perf_counter()
    for i in range(n):
        ref.tell(Done(i, "w"))
    while nodes.system.ask(TALLY, "totals", timeout=30)["done"] < before + n:
        pass
    return n / (time.perf_counter() - began)


def remote_ask_latencies(nodes: TwoNodes, n: int) -> list[float]:
    ref = nodes.system.ref(TALLY)
    for _ in range(ASK_WARM_UP):
        ref.ask("totals")
    latencies = []
    for _ in range(n):
        began = time.perf_counter()
        ref.ask("totals")
        latencies.append(time.perf_counter() - began)
    return latencies


def pipelined_asks(nodes: TwoNodes, n: int, window: int) -> float:
    ref = nodes.system.ref(TALLY)
    began = time.perf_counter()
    done = 0
    while done < n:
        replies = [ref.ask_async("totals") for _ in range(min(window, n - done))]
        for reply in replies:
            reply.get(30)
        done += len(replies)
    return n / (time.perf_counter() - began)


def _helper(mode: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, mode, *args], stdout=subprocess.PIPE, text=True)


def raw_push_pull_throughput(n: int) -> float:
    """PUSH → PULL with msgpack, the receiver decoding every message, in another process."""
    port = free_ports(1)[0]
    receiver = _helper("raw-pull", f"tcp://127.0.0.1:{port}", str(n))
    assert receiver.stdout is not None
    assert receiver.stdout.readline().strip() == "ready"
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    packb = msgpack.packb
    began = time.perf_counter()
    for i in range(n):
        push.send(packb({"_type": "Done", "seq": i, "worker": "w"}))
    receiver.stdout.readline()  # "done" once the last message is decoded
    elapsed = time.perf_counter() - began
    receiver.wait()
    push.close(0)
    context.term()
    return n / elapsed


class RawEcho:
    """A DEALER in this process and a ROUTER echo with msgpack in a helper process."""

    def __init__(self) -> None:
        port = free_ports(1)[0]
        self.echo = _helper("raw-echo", f"tcp://127.0.0.1:{port}")
        assert self.echo.stdout is not None
        assert self.echo.stdout.readline().strip() == "ready"
        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.connect(f"tcp://127.0.0.1:{port}")

    def round_trips(self, n: int) -> list[float]:
        """`n` round trips, one request at a time (after `ASK_WARM_UP` unmeasured ones)."""
        dealer, packb, unpackb = self.dealer, msgpack.packb, msgpack.unpackb
        latencies = []
        for i in range(-ASK_WARM_UP, n):
            began = time.perf_counter()
            dealer.send(packb({"ref": i, "body": "totals"}))
            unpackb(dealer.recv())
            if i >= 0:
                latencies.append(time.perf_counter() - began)
        return latencies

    def close(self) -> None:
        self.dealer.send(b"stop")
        self.echo.wait()
        self.dealer.close(0)
        self.context.term()


def interleaved_asks(nodes: TwoNodes, asks: int, runs: int) -> dict[str, Any]:
    """`runs` pairs of sequential round-trip runs, Flotilla then raw; each run's p50 and
    p99, the ratio of the median p50s and the spread (min, max) of the per-pair ratios."""
    raw = RawEcho()
    pairs = []
    try:
        for _ in range(runs):
            flotilla = remote_ask_latencies(nodes, asks)
            baseline = raw.round_trips(asks)
            pairs.append(
                {
                    "p50_ms": percentile(flotilla, 50) * 1000,
                    "p99_ms": percentile(flotilla, 99) * 1000,
                    "raw_p50_ms": percentile(baseline, 50) * 1000,
                    "raw_p99_ms": percentile(baseline, 99) * 1000,
                    "ratio_p50": percentile(flotilla, 50) / percentile(baseline, 50),
                }
            )
    finally:
        raw.close()
    p50 = statistics.median(run["p50_ms"] for run in pairs)
    raw_p50 = statistics.median(run["raw_p50_ms"] for run in pairs)
    ratios = [run["ratio_p50"] for run in pairs]
    return {
        "asks": asks,
        "runs": pairs,
        "p50_ms": p50,
        "p99_ms": statistics.median(run["p99_ms"] for run in pairs),
        "raw_p50_ms": raw_p50,
        "ratio_p50": p50 / raw_p50,
        "ratio_p50_spread": [min(ratios), max(ratios)],
    }


def node_down_detection(trials: int) -> list[float]:
    """Seconds from SIGKILL of a node process to NodeDown at its peer, with default settings."""
    nodes = TwoNodes()
    times = []
    try:
        events: list[Any] = []
        changed = threading.Condition()

        def record(event: Any) -> None:
            with changed:
                events.append((time.perf_counter(), event))
                changed.notify_all()

        nodes.cluster.watch_membership(record)
        for _ in range(trials):
            nodes.start_beta()
            assert nodes.beta is not None
            with changed:
                events.clear()
            killed = time.perf_counter()
            nodes.beta.send_signal(signal.SIGKILL)
            nodes.beta.wait()
            with changed:
                while not any(type(e).__name__ == "NodeDown" for _, e in events):
                    changed.wait(10)
                at = next(t for t, e in events if type(e).__name__ == "NodeDown")
            times.append(at - killed)
    finally:
        nodes.close()
    return times


def run(quick: bool) -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n = 20_000 if quick else 200_000
    asks = 300 if quick else 3_000
    trials = 5 if quick else 20
    nodes = TwoNodes()
    try:
        nodes.start_beta()
        remote_tell_throughput(nodes, 2_000)  # warm-up
        tell = statistics.median(remote_tell_throughput(nodes, n) for _ in range(3))
        ask = interleaved_asks(nodes, asks, ASK_RUNS)
        pipelined = pipelined_asks(nodes, asks * 10, 100)
    finally:
        nodes.close()
    raw_tell = statistics.median(raw_push_pull_throughput(n) for _ in range(3))
    detection = node_down_detection(trials)
    return {
        "remote_tell": {
            "messages": n,
            "flotilla_per_s": tell,
            "raw_push_pull_per_s": raw_tell,
            "ratio": tell / raw_tell,
        },
        "remote_ask": ask,
        "pipelined_asks": {"asks": asks * 10, "window": 100, "per_s": pipelined},
        "node_down": {
            "trials": trials,
            "p50_s": percentile(detection, 50),
            "p99_s": percentile(detection, 99),
            "max_s": max(detection),
        },
    }


def report(results: dict[str, Any]) -> None:
    t, a, p, d = (results[k] for k in ("remote_tell", "remote_ask", "pipelined_asks", "node_down"))
    print(
        f"remote tell ({t['messages']:,} msgs, median of 3): {t['flotilla_per_s']:,.0f}/s vs raw pyzmq "
        f"PUSH/PULL+msgpack {t['raw_push_pull_per_s']:,.0f}/s -> {t['ratio']:.0%} (goal >= 25%)"
    )
    runs = ", ".join(f"{r['p50_ms']:.3f}/{r['raw_p50_ms']:.3f} ({r['ratio_p50']:.2f}x)" for r in a["runs"])
    low, high = a["ratio_p50_spread"]
    print(
        f"remote ask round trip ({a['asks']:,} per run, {len(a['runs'])} interleaved runs; p50 Flotilla/raw ms: "
        f"{runs}): median p50 {a['p50_ms']:.3f} ms (p99 {a['p99_ms']:.3f} ms) vs raw DEALER/ROUTER median p50 "
        f"{a['raw_p50_ms']:.3f} ms -> {a['ratio_p50']:.2f}x, pairs {low:.2f}-{high:.2f}x (goal <= 1.5x)"
    )
    print(f"pipelined asks (window {p['window']}): {p['per_s']:,.0f}/s")
    print(
        f"SIGKILL -> NodeDown ({d['trials']} trials, defaults 0.2 s / 1.0 s): p50 {d['p50_s']:.2f} s, "
        f"p99 {d['p99_s']:.2f} s (goal p99 <= 2 s)"
    )


def _raw_pull(address: str, n: str) -> None:
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 0)
    pull.bind(address)
    print("ready", flush=True)
    unpackb = msgpack.unpackb
    for _ in range(int(n)):
        unpackb(pull.recv())
    print("done", flush=True)
    pull.close(0)
    context.term()


def _raw_echo(address: str) -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(address)
    print("ready", flush=True)
    while True:
        peer, body = router.recv_multipart()
        if body == b"stop":
            break
        request = msgpack.unpackb(body)
        router.send_multipart([peer, msgpack.packb({"ref": request["ref"], "body": {"done": 0}})])
    router.close(0)
    context.term()


if __name__ == "__main__":
    {"raw-pull": _raw_pull, "raw-echo": _raw_echo}[sys.argv[1]](*sys.argv[2:])
