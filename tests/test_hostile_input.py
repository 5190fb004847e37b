"""Regression tests for hostile input into real node processes: frames that once stopped or
bloated a node (a 13-byte frame, a 16 MiB amplifier, a flood of monitors), pages that pinned
the extractors, a redirect to file://, and shell requests that got no answer."""

from __future__ import annotations

import struct
from pathlib import Path

import msgspec
import zmq

from flotilla.nodes.cluster.codec import Monitor
from flotilla.nodes.cluster.membership import MAX_MONITORS_PER_PEER
from flotilla.nodes.intake.auth import client_key
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import MAX_REQUEST_BYTES, JobSpec
from scripts.harness import DemoSiteProcess, wait_until
from tests.cluster_harness import LiveCluster
from tests.hostile_cluster import memory_kb, refused, shell_call, start_pipeline, stored

THIRTEEN_BYTES = b"\x81\xa2id\xcb" + struct.pack(">d", 1e30)
"""{"id": 1e30}: the error answer once failed to encode and ended the intake thread."""


def _raw(cluster: LiveCluster) -> tuple[zmq.Context, zmq.Socket]:
    """A raw DEALER to the intake with the cluster owner's key (the intake lets no one else in:
    hostile frames come from an authenticated client)."""
    assert cluster.topology.intakes
    key = client_key(cluster.topology)
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.curve_publickey, socket.curve_secretkey, socket.curve_serverkey = key.public, key.secret, key.server
    socket.connect(cluster.topology.intakes[0].address)
    return context, socket


def _answer(socket: zmq.Socket) -> dict:
    assert socket.poll(10_000), "no answer"
    return msgspec.msgpack.decode(socket.recv())


def test_the_13_byte_frame_is_answered_and_the_intake_keeps_accepting(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = start_pipeline(tmp_path, clusters)
    assert len(THIRTEEN_BYTES) == 13
    context, socket = _raw(cluster)
    try:
        for _ in range(3):
            socket.send(THIRTEEN_BYTES)
            answer = _answer(socket)
            assert answer["_type"] == "Error" and answer["id"] == 0 and answer["reason"].startswith("bad request")
    finally:
        socket.close()
        context.term()
    with IntakeClient.for_topology(cluster.topology) as client:  # type: ignore[union-attr]
        assert client.submit([JobSpec("http://127.0.0.1:1/after", "product")])[0].status == "accepted"
    assert refused(cluster, "intake", "malformed") == 3


def test_an_amplifier_frame_is_refused_without_bloating_the_node(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = start_pipeline(tmp_path, clusters)
    before = memory_kb(cluster)
    items = MAX_REQUEST_BYTES - 64
    within_limit = b"\x83\xa5_type\xa6Submit\xa2id\x07\xa1x\xdd" + struct.pack(">I", items) + b"\x90" * items
    top_level = b"\xdd" + struct.pack(">I", items) + b"\x90" * items
    sixteen_mib = b"\xdd" + struct.pack(">I", 16_700_000) + b"\x90" * 16_700_000  # the finding's frame
    context, socket = _raw(cluster)
    try:
        for frame, expected_id in ((within_limit, 7), (top_level, 0)) * 5:
            socket.send(frame)
            answer = _answer(socket)
            assert answer["_type"] == "Error" and answer["id"] == expected_id
        for _ in range(5):
            socket.send(sixteen_mib)  # over MAX_REQUEST_BYTES: ZeroMQ drops it with the connection
    finally:
        socket.close()
        context.term()
    with IntakeClient.for_topology(cluster.topology) as client:  # type: ignore[union-attr]
        assert client.counts().results == 0
    grown_mb = (memory_kb(cluster) - before) / 1024
    assert grown_mb < 64, f"the node's peak memory grew by {grown_mb:.0f} MB"  # was 1.2 GB per 16 MiB frame


def test_a_flood_of_monitors_from_a_peer_is_bounded(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = start_pipeline(tmp_path, clusters)
    assert cluster.cluster is not None
    before = memory_kb(cluster, "VmRSS")
    flood = MAX_MONITORS_PER_PEER * 3
    for ref in range(1, flood + 1):
        cluster.cluster._send("alpha", Monitor("alpha/root/router", ref))  # noqa: SLF001  forging what a peer would send
    wait_until(
        lambda: refused(cluster, "transport", "over_limit") == flood - MAX_MONITORS_PER_PEER,
        timeout=60,
        what="every monitor beyond the limit to be refused",
    )
    grown_mb = (memory_kb(cluster, "VmRSS") - before) / 1024
    assert grown_mb < 20, f"alpha grew by {grown_mb:.0f} MB"
    cluster.cluster._send("alpha", Monitor("alpha/root/router", 1))  # a ref in use: ignored, not doubled  # noqa: SLF001  forging what a peer would send
    wait_until(lambda: refused(cluster, "transport", "duplicate") == 1, timeout=20, what="the duplicate refused")


def test_shell_edge_cases_get_usage_errors(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = start_pipeline(tmp_path, clusters)
    expected = {  # each command and the start of the error it gets
        "logs 5 " + "9" * 25: "usage: logs",
        "logs " + "9" * 25: "usage: logs",
        "logs ٣": "usage: logs",
        "jobs lost": "unknown state 'lost'; usage: jobs",
        "scale alpha/root/extractors ²": "size '²' must be a whole number",
    }
    answers = {command: shell_call(cluster, *command.split()) for command in expected}
    for command, answer in answers.items():
        assert not answer.ok and answer.error.startswith(expected[command]), (command, answer)  # type: ignore[attr-defined]
    assert "unknown state 'lost'" in answers["jobs lost"].error  # type: ignore[attr-defined]
    assert shell_call(cluster, "logs", "3").ok  # type: ignore[attr-defined]
    assert not any("Traceback" in line for line in cluster.processes["alpha"].lines)


def test_pathological_pages_end_hard_while_a_healthy_job_is_stored(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    site = DemoSiteProcess()
    try:
        cluster = start_pipeline(tmp_path, clusters)
        hostile = [f"{site.url}/nested/1", f"{site.url}/attributes/2", f"{site.url}/nested/3", f"{site.url}/to-file/4"]
        with IntakeClient.for_topology(cluster.topology) as client:  # type: ignore[union-attr]
            keys = [ack.key for ack in client.submit([JobSpec(url, "product") for url in hostile])]
            stored(cluster, f"{site.url}/product/5", timeout=30)  # both extractors were given a hostile page first
            wait_until(
                lambda: all(job.state == "dead" for job in client.status(keys)),
                timeout=60,
                what="the hostile jobs to end",
            )
            reasons = {job.url.rsplit("/", 2)[1]: job.reason for job in client.status(keys)}
        assert reasons["nested"].startswith("HARD: unparseable page: parsing took longer than 2 s"), reasons
        assert reasons["attributes"].startswith("HARD: unparseable page"), reasons
        assert reasons["to-file"].startswith("HARD") and "file:///etc/passwd" in reasons["to-file"], (
            reasons
        )  # the egress check or aiohttp
        inspected = shell_call(cluster, "inspect", "alpha/root/extractors/0").data  # type: ignore[attr-defined]
        assert "parser_killed" in inspected["state"]
    finally:
        site.stop()
