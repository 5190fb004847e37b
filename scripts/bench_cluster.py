"""Part 2 of the benchmarks: two node processes over ZeroMQ, against raw pyzmq baselines.

The bench process joins the cluster as node `bench`; node `beta` is a real
`flotilla node start` process hosting the tree (a `tally` actor). Each baseline runs the
same traffic shape with raw pyzmq and msgpack between the bench process and a helper
process (this file run as a program: `raw-pull`, `raw-echo`).
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


def raw_round_trips(n: int) -> list[float]:
    """DEALER → ROUTER echo with msgpack, one request at a time."""
    port = free_ports(1)[0]
    echo = _helper("raw-echo", f"tcp://127.0.0.1:{port}")
    assert echo.stdout is not None
    assert echo.stdout.readline().strip() == "ready"
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    latencies = []
    for i in range(n + 1):
        began = time.perf_counter()
        dealer.send(msgpack.packb({"ref": i, "body": "totals"}))
        msgpack.unpackb(dealer.recv())
        if i:
            latencies.append(time.perf_counter() - began)
    dealer.send(b"stop")
    echo.wait()
    dealer.close(0)
    context.term()
    return latencies


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
        latencies = remote_ask_latencies(nodes, asks)
        pipelined = pipelined_asks(nodes, asks * 10, 100)
    finally:
        nodes.close()
    raw_tell = statistics.median(raw_push_pull_throughput(n) for _ in range(3))
    raw_latencies = raw_round_trips(asks)
    detection = node_down_detection(trials)
    return {
        "remote_tell": {
            "messages": n,
            "flotilla_per_s": tell,
            "raw_push_pull_per_s": raw_tell,
            "ratio": tell / raw_tell,
        },
        "remote_ask": {
            "asks": asks,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "raw_p50_ms": percentile(raw_latencies, 50) * 1000,
            "ratio_p50": percentile(latencies, 50) / percentile(raw_latencies, 50),
        },
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
    print(
        f"remote ask round trip ({a['asks']:,}): p50 {a['p50_ms']:.3f} ms, p99 {a['p99_ms']:.3f} ms vs raw "
        f"DEALER/ROUTER p50 {a['raw_p50_ms']:.3f} ms -> {a['ratio_p50']:.2f}x (goal <= 2x)"
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
