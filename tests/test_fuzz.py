"""Fuzzing a real node as an attacker would: random, mutated and bomb frames into its intake,
its transport and its shell socket. Afterwards the node is up, a valid job is accepted and
stored, its peak memory stayed under `RSS_GROWTH_MB` and its log under a bound.

CI sends `FRAMES` messages per surface; set ``FLOTILLA_FUZZ_FRAMES=100000`` for a long run.
Seeds are fixed (``FLOTILLA_FUZZ_SEED`` picks others) and printed, so a failure can be replayed.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path

import msgspec
import pytest
import zmq

from flotilla.nodes.cluster.codec import MAX_FRAME_BYTES
from flotilla.nodes.intake.auth import ClientKey, client_key
from flotilla.nodes.intake.protocol import MAX_REQUEST_BYTES
from flotilla.nodes.serving.refusals import REFUSAL_LOG_INTERVAL
from flotilla.nodes.shell.protocol import MAX_REQUEST_BYTES as MAX_SHELL_BYTES
from flotilla.nodes.shell.protocol import request_decoder as shell_decoder
from flotilla.nodes.shell.protocol import shell_address
from scripts.harness import DemoSiteProcess, wait_until
from tests.cluster_harness import LiveCluster
from tests.fuzz_frames import frames
from tests.hostile_cluster import memory_kb, refused, start_pipeline, stored

FRAMES = int(os.environ.get("FLOTILLA_FUZZ_FRAMES", "2000"))
"""Messages per surface (CI default; 100,000 or more for a long local run)."""
SEED = int(os.environ.get("FLOTILLA_FUZZ_SEED", "20261201"))
RSS_GROWTH_MB = 200
"""Most the node's peak resident memory may grow while fuzzed: one connection can make the
intake hold at most 16 requests of 4 MiB (64 MiB) and each is decoded without copies."""
LOG_LINES_PER_KIND = 2
"""Refusal log lines allowed per kind and `REFUSAL_LOG_INTERVAL` (one, plus the interval's
edge), on top of two lines (started, done) per shell command that decoded."""
REFUSAL_KINDS = 24
"""Upper bound on (socket, reason) kinds the fuzz can provoke."""


def _dealer(context: zmq.Context, address: str, key: ClientKey | None = None) -> zmq.Socket:
    """A raw DEALER (with `key`: a CURVE client, as the cluster's owner — the intake lets no
    one else in, so its decoder is fuzzed by an authenticated client)."""
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    if key is not None:
        socket.curve_publickey, socket.curve_secretkey, socket.curve_serverkey = key.public, key.secret, key.server
    socket.connect(address)
    return socket


def _fuzz_socket(
    context: zmq.Context, address: str, surface: str, limit: int, seed: int, key: ClientKey | None = None
) -> int:
    """Send the surface's frames one message at a time; every single-frame message within the
    limit must be answered. Returns how many decoded as valid requests (for shells)."""
    rng = random.Random(seed)
    socket = _dealer(context, address, key)
    valid = 0
    try:
        for index, (kind, parts) in enumerate(frames(surface, rng, FRAMES, limit)):
            if kind == "oversized":
                socket.close()  # ZeroMQ drops the frame with the connection: start a fresh one
                socket = _dealer(context, address, key)
                continue
            socket.send_multipart(parts)
            if len(parts) != 1:
                continue
            if surface == "shell":
                with contextlib.suppress(Exception):
                    shell_decoder.decode(parts[0])
                    valid += 1
            assert socket.poll(20_000), f"{surface}: no answer to message {index} ({kind}), seed {seed}"
            msgspec.msgpack.decode(socket.recv())
    finally:
        socket.close()
    return valid


@pytest.mark.timeout(120 + FRAMES // 50)
def test_fuzzed_intake_transport_and_shell_leave_the_node_up_and_bounded(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    print(f"fuzz: {FRAMES} messages per surface, seeds {SEED} (intake), {SEED + 1} (transport), {SEED + 2} (shell)")
    site = DemoSiteProcess()
    try:
        cluster = start_pipeline(tmp_path, clusters)
        alpha = cluster.processes["alpha"]
        before_kb, lines_before, started = memory_kb(cluster), len(alpha.lines), time.monotonic()
        context = zmq.Context()
        try:
            _fuzz_socket(
                context,
                cluster.topology.intakes[0].address,
                "intake",
                MAX_REQUEST_BYTES,
                SEED,  # type: ignore[union-attr]
                client_key(cluster.topology),
            )
            print(f"fuzz: after the intake, peak RSS +{(memory_kb(cluster) - before_kb) / 1024:.0f} MB")
            assert cluster.cluster is not None
            transport = cluster.cluster.transport
            sent = 0
            for _, parts in frames("transport", random.Random(SEED + 1), FRAMES, MAX_FRAME_BYTES - 64):
                for frame in parts:
                    transport.send("alpha", frame)
                    sent += 1
            wait_until(
                lambda: transport.stats.sent_frames["alpha"] + sum(transport.stats.undeliverable.values()) >= sent,
                timeout=FRAMES / 50,
                what="every transport frame sent (or given up)",
            )
            print(f"fuzz: after the transport, peak RSS +{(memory_kb(cluster) - before_kb) / 1024:.0f} MB")
            shell_commands = _fuzz_socket(
                context, shell_address(cluster.topology.node_data_dir("alpha")), "shell", MAX_SHELL_BYTES, SEED + 2
            )
        finally:
            context.term()
        assert refused(cluster, "intake", "malformed") > FRAMES / 4
        assert refused(cluster, "shell", "malformed") > FRAMES / 4
        assert refused(cluster, "transport", "malformed") > FRAMES / 4
        stored(cluster, f"{site.url}/product/1", timeout=60)
        assert alpha.proc.poll() is None, "the node ended"
        grown_mb = (memory_kb(cluster) - before_kb) / 1024
        elapsed = time.monotonic() - started
        lines = alpha.lines[lines_before:]
        allowed = 2 * shell_commands + REFUSAL_KINDS * LOG_LINES_PER_KIND * (1 + elapsed / REFUSAL_LOG_INTERVAL) + 50
        print(
            f"fuzz: {elapsed:.1f} s, peak RSS +{grown_mb:.0f} MB, {len(lines)} log lines "
            f"(allowed {allowed:.0f}; {shell_commands} shell commands decoded)"
        )
        assert grown_mb < RSS_GROWTH_MB, f"the node's peak memory grew by {grown_mb:.0f} MB"
        if os.environ.get("FLOTILLA_FUZZ_SHOW_LOG"):
            print("\n".join(lines))
        assert len(lines) <= allowed, "\n".join(lines[-40:])
        assert not any("serving.restarted" in line or "serving.gave_up" in line for line in lines)
    finally:
        site.stop()
