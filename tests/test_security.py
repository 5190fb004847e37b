"""CURVE with a ZAP allowlist, and hostile peers: nothing from an unknown key gets in, and
garbage never takes a node down."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq

from nodes.security import CurveKeys, generate_keys, load_public
from tests.cluster_harness import LiveCluster, make_cluster
from tests.processes import run_flotilla

TREE = """
children:
  - {id: echo, actor: "tests.helpers:Probe"}
"""


def test_keys_generate_writes_a_secret_only_its_owner_can_read(tmp_path: Path) -> None:
    result = run_flotilla("keys", "generate", str(tmp_path / "keys"), "--name", "alpha", "--name", "beta")
    assert result.returncode == 0, result.stderr
    keys = tmp_path / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("alpha", "beta"):
        assert stat.S_IMODE((keys / f"{name}.key_secret").stat().st_mode) == 0o600
        assert load_public(keys, name)
    again = run_flotilla("keys", "generate", str(keys), "--name", "alpha")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_a_node_refuses_a_secret_key_readable_by_others(tmp_path: Path) -> None:
    _, secret = generate_keys(tmp_path, "alpha")
    os.chmod(secret, 0o644)
    with pytest.raises(Exception, match="readable by others"):
        CurveKeys.load(tmp_path, "alpha", ["alpha"])


def _curve_cluster(tmp_path: Path, clusters: list[LiveCluster]) -> LiveCluster:
    for name in ("alpha", "tester"):
        generate_keys(tmp_path / "keys", name)
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "tester"), extra="security: {keys: keys}")
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    cluster.join(keys=CurveKeys.load(tmp_path / "keys", "tester", ["alpha", "tester"]))
    cluster.wait_up("alpha")
    alpha.wait_for_event("transport.secured")
    return cluster


def test_nodes_with_keys_talk_over_curve(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = _curve_cluster(tmp_path, clusters)
    assert cluster.system.ask("alpha/root/echo", "whoami") == ["alpha/root/echo", 1]


def test_a_peer_with_an_unknown_key_gets_nothing_in_and_is_logged(tmp_path: Path,
                                                                  clusters: list[LiveCluster]) -> None:
    cluster = _curve_cluster(tmp_path, clusters)
    alpha = cluster.processes["alpha"]
    public, secret = zmq.curve_keypair()
    context = zmq.Context()
    intruder = context.socket(zmq.DEALER)
    try:
        intruder.linger = 0
        intruder.routing_id = b"tester"  # claims to be a member
        intruder.curve_publickey, intruder.curve_secretkey = public, secret
        intruder.curve_serverkey = load_public(tmp_path / "keys", "alpha")
        intruder.connect(cluster.topology.nodes["alpha"].address)
        intruder.send_multipart([b"\x92\x05\xc0"], zmq.NOBLOCK)  # queued locally, never delivered
        rejected = alpha.wait_for_event("transport.key_rejected")
        assert rejected["key"] == public.decode()
        assert rejected["address"] == "127.0.0.1"
    finally:
        intruder.close()
        context.term()
    assert cluster.system.ask("alpha/root/echo", "whoami") == ["alpha/root/echo", 1]
    assert not [e for e in alpha.events() if e["event"] == "cluster.frame_rejected"]


def test_hostile_frames_are_dropped_counted_and_logged_and_the_node_keeps_serving(
        tmp_path: Path, clusters: list[LiveCluster]) -> None:
    # Without keys a member's name is all it takes: the rogue claims to be beta (a member that
    # is not running, so that its connection takes over nobody's).
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "beta", "tester"))
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    cluster.join()
    cluster.wait_up("alpha")
    context = zmq.Context()
    rogue = context.socket(zmq.DEALER)
    stranger = context.socket(zmq.DEALER)
    try:
        for sock, name in ((rogue, b"beta"), (stranger, b"mallory")):
            sock.linger = 0
            sock.routing_id = name
            sock.connect(cluster.topology.nodes["alpha"].address)
        hostile = [b"", b"\xc1", b"\xdd\xff\xff\xff\xff", b"\x91" * 100_000, b"\x94\x01\xa3a/b\xc4\x01\xc1\xc2",
                   b"\x95\x02\xa9alpha/x/y\xc4\x03\xc7\x01*\xc3\x01\xcb\x40\x14\x00\x00\x00\x00\x00\x00",
                   os.urandom(4096)]
        rogue.send_multipart(hostile)
        stranger.send_multipart([b"\x92\x05\xc0"])
        alpha.wait_for_event("transport.peer_rejected", peer="mallory")
        alpha.wait_for_event("cluster.frame_rejected", peer="beta")
    finally:
        rogue.close()
        stranger.close()
        context.term()
    assert cluster.system.ask("alpha/root/echo", "whoami") == ["alpha/root/echo", 1]
    assert alpha.proc.poll() is None
