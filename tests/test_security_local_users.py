"""Other local users against a cluster started with no key step at all: they cannot pose as a
node, cannot cut one off, and cannot read a node's files at any moment of its start-up.

The hostile user is a real second account (tests/other_user.py) running tests/intruder.py
with nothing but pyzmq and the project's codec; the cluster is real node processes plus
the test process joined as node "tester" (tests/cluster_harness.py).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import zmq

from flotilla.nodes.cluster.codec import Codec, Tell
from flotilla.nodes.security.keys import generated_keys_dir, load_public, load_secret
from scripts.harness import wait_until
from tests.cluster_harness import LiveCluster, make_cluster
from tests.other_user import OtherUser
from tests.processes import FlotillaProcess

INTRUDER = Path(__file__).with_name("intruder.py")

TREE = """
children:
  - {id: echo, actor: "tests.helpers:Probe"}
  - {id: remote, node: tester, supervisor: {children: [{id: inbox, actor: "tests.helpers:Inbox"}]}}
"""
"""alpha runs the root; the child it places on the tester keeps what it is told, so the test
sees whether an intruder's tell got through."""


def _start(directory: Path, clusters: list[LiveCluster], extra: str = "") -> LiveCluster:
    cluster = make_cluster(directory, TREE, nodes=("alpha", "tester"), extra=extra)
    clusters.append(cluster)
    cluster.start_node("alpha")
    system = cluster.join()
    cluster.wait_up("alpha")
    wait_until(
        lambda: (
            system.registry.lookup_local("alpha/root/remote/inbox") is not None
            and system.registry.lookup_local("alpha/root/remote/inbox").actor is not None
        ),
        timeout=20,
        what="alpha to start the inbox on the tester",
    )
    return cluster


def _inbox(cluster: LiveCluster) -> list[object]:
    assert cluster.system is not None
    return cluster.system.registry.lookup_local("alpha/root/remote/inbox").actor.received  # type: ignore[union-attr]


def _pose_as_alpha(user: OtherUser, cluster: LiveCluster, server_key: str) -> dict[str, int]:
    address = cluster.topology.nodes["tester"].address
    result = user.run(INTRUDER, "pose", address, server_key, "alpha", "alpha/root/remote/inbox", "2.0")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _alpha_stays_up(cluster: LiveCluster) -> None:
    """Alpha was never declared down at the tester, and its frames still arrive."""
    assert cluster.cluster is not None
    stats = cluster.cluster.transport.stats
    before = stats.received_frames["alpha"]
    wait_until(lambda: stats.received_frames["alpha"] > before + 5, timeout=10, what="more frames from alpha")
    assert cluster.cluster.peers["alpha"].downs == 0 and cluster.cluster.is_up("alpha")
    assert cluster.system is not None
    assert cluster.system.ask("alpha/root/echo", "whoami") == ["alpha/root/echo", 1]


def test_another_user_cannot_pose_as_a_node_of_a_cluster_started_without_keys(
    other_user: OtherUser, shared_dir: Path, clusters: list[LiveCluster]
) -> None:
    cluster = _start(shared_dir, clusters)
    # The intruder knows the server's public key (public keys are not secrets) and tries both
    # plaintext and CURVE with a key of its own, claiming alpha's name.
    summary = _pose_as_alpha(other_user, cluster, load_public(generated_keys_dir(cluster.topology), "tester").decode())
    assert summary["attempts"] >= 4
    assert cluster.cluster is not None
    failures = cluster.cluster.transport.auth_failures
    wait_until(lambda: failures.total >= 1, timeout=10, what="the intruder's key to be refused")
    assert "intruder" not in _inbox(cluster)
    _alpha_stays_up(cluster)


def test_in_plaintext_the_same_intruder_gets_through(
    other_user: OtherUser, shared_dir: Path, clusters: list[LiveCluster]
) -> None:
    # The control of the test above: the opt-in plaintext mode trusts a claimed name, so the
    # intruder's tell arrives; that is why plaintext needs `security.plaintext: true`.
    cluster = _start(shared_dir, clusters, extra="security: {plaintext: true}")
    cluster.processes["alpha"].wait_for_event("transport.plaintext")
    _pose_as_alpha(other_user, cluster, "-")
    wait_until(lambda: "intruder" in _inbox(cluster), timeout=10, what="the intruder's tell")


def test_a_stolen_member_key_cannot_displace_the_node_whose_id_it_claims(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "beta", "tester"))
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    system = cluster.join()
    cluster.wait_up("alpha")
    wait_until(
        lambda: system.registry.lookup_local("alpha/root/remote/inbox") is not None, timeout=20, what="the inbox"
    )
    assert cluster.cluster is not None
    alpha_boot = cluster.cluster.peers["alpha"].boot
    keys = generated_keys_dir(cluster.topology)
    public, secret = load_secret(keys, "beta")  # beta's key, stolen; beta is not running
    codec = Codec(1 << 20)
    body, typed = codec.encode_body("forged")
    context = zmq.Context()
    socks = []
    try:
        # Alpha's exact routing id (its name and boot id, learned somehow), then its bare name.
        for routing_id in (f"alpha/{alpha_boot}".encode(), b"alpha"):
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            sock.routing_id = routing_id
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.curve_serverkey = load_public(keys, "tester")
            sock.connect(cluster.topology.nodes["tester"].address)
            socks.append(sock)
        for sock in socks:
            sock.send_multipart([codec.encode(Tell("alpha/root/remote/inbox", body, typed))])
        stats = cluster.cluster.transport.stats
        wait_until(
            lambda: stats.rejected["routing id does not match the peer's key"] >= 1,
            timeout=10,
            what="the claim of alpha's name to be refused",
        )
        _alpha_stays_up(cluster)
    finally:
        for sock in socks:
            sock.close(0)
        context.term()
    assert "forged" not in _inbox(cluster)
    assert alpha.proc.poll() is None


def test_another_user_cannot_read_a_node_s_files_at_any_moment_of_start_up(
    other_user: OtherUser, shared_dir: Path, clusters: list[LiveCluster]
) -> None:
    tree = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers}
  - {id: extractor, actor: extractor}
  - {id: fetchers, pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/extractor}}}
"""
    extra = "intake: {node: alpha, address: 'tcp://127.0.0.1:%d', router: alpha/root/router}"
    from scripts.harness import free_ports

    cluster = make_cluster(shared_dir, tree, nodes=("alpha",), extra=extra % free_ports(1)[0])
    clusters.append(cluster)
    data = cluster.topology.data_dir
    node_dir = data / "alpha"
    watched = [
        data,
        node_dir,
        node_dir / "journal.sqlite",
        node_dir / "journal.sqlite-wal",
        node_dir / "audit.log",
        data / "keys",
        data / "keys" / "alpha.key_secret",
        data / "keys" / "local.key_secret",
    ]
    stop = shared_dir / "stop"
    poller = other_user.popen(INTRUDER, "poll", str(stop), str(shared_dir), *map(str, watched))
    try:
        assert poller.stdout is not None
        assert poller.stdout.readline().strip() == "polling"
        node = FlotillaProcess(
            "node", "start", "--topology", str(cluster.topology_path), "--node", "alpha", "--log-format", "json"
        )
        cluster.processes["alpha"] = node
        node.wait_for_event("intake.listening", timeout=30)
        assert (node_dir / "journal.sqlite").exists()
    finally:
        stop.touch()
        out, err = poller.communicate(timeout=30)
    report = json.loads(out.splitlines()[-1])
    assert report["base_listed"] and report["tries"] > 10, (report, err)
    assert report["succeeded"] == {}, report
    for path in (data / "keys", node_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (node_dir / "journal.sqlite", data / "keys" / "alpha.key_secret", data / "keys" / "local.key_secret"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
