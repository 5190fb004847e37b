"""CURVE with a ZAP allowlist, and hostile peers: nothing from an unknown key gets in, and
garbage never takes a node down."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import zmq
from structlog.testing import capture_logs

from flotilla.actors.pipeline.messages import JobOutcome
from flotilla.nodes.config.topology import TopologyError, parse_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from flotilla.nodes.security.auth_failures import AUTH_ALERT_COUNT, AuthFailures
from flotilla.nodes.security.keys import (
    CurveKeys,
    KeyFileError,
    ensure_generated_keys,
    generate_keys,
    generated_keys_dir,
    load_public,
    load_secret,
    local_user_keys,
)
from scripts.harness import free_ports, wait_until
from tests.cluster_harness import LiveCluster, make_cluster
from tests.processes import ROOT, run_flotilla

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
    with pytest.raises(KeyFileError, match="readable by others"):
        CurveKeys.load(tmp_path, "alpha", ["alpha"])


def test_keys_are_generated_once_owner_only_and_agreed_on_by_nodes_starting_together(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code = (
        "import sys; from pathlib import Path;"
        "from flotilla.nodes.security.keys import ensure_generated_keys, load_public;"
        "d = ensure_generated_keys(Path(sys.argv[1]), ['alpha', 'beta', 'gamma']);"
        "print(load_public(d, 'alpha').decode(), load_public(d, 'local').decode())"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", code, str(data / "keys")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(4)
    ]
    outputs = {p.communicate(timeout=60)[0].strip() for p in starters}
    assert len(outputs) == 1 and all(p.returncode == 0 for p in starters)  # one set, whoever came first
    keys = data / "keys"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700 and stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("alpha", "beta", "gamma", "local"):
        assert stat.S_IMODE((keys / f"{name}.key_secret").stat().st_mode) == 0o600
    before = load_public(keys, "alpha")
    ensure_generated_keys(keys, ["alpha", "beta", "gamma", "delta"])  # a node added later: reuse the rest
    assert load_public(keys, "alpha") == before and (keys / "delta.key_secret").exists()


def test_the_local_user_finds_the_generated_client_key_and_no_node_may_take_its_name(tmp_path: Path) -> None:
    topology = parse_topology(
        "nodes: {alpha: {}}\ntree: {children: [{id: w, actor: 'tests.helpers:Probe'}]}\n", base=tmp_path
    )
    pair = local_user_keys(topology)
    assert pair is not None and pair == load_secret(tmp_path / "data" / "keys", "local")
    with pytest.raises(KeyFileError, match="'local'"):
        ensure_generated_keys(tmp_path / "other", ["local"])
    with pytest.raises(TopologyError, match="'local' names the local user's generated key"):
        parse_topology("nodes: {local: {}}\ntree: {children: [{id: w, actor: 'tests.helpers:Probe'}]}\n")


def test_a_key_directory_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "data" / "keys"
    planted.mkdir(parents=True)
    os.chown(planted, 65534, 65534)  # nobody's: needs root, which these tests have where they can chown
    with pytest.raises(KeyFileError, match="belongs to uid 65534"):
        ensure_generated_keys(planted, ["alpha"])


def test_plaintext_is_an_explicit_opt_in_for_loopback_addresses_only() -> None:
    tree = "tree: {children: [{id: w, actor: 'tests.helpers:Probe'}]}\n"
    plain = parse_topology("nodes: {a: {address: 'tcp://127.0.0.1:7000'}}\nsecurity: {plaintext: true}\n" + tree)
    assert plain.security.plaintext
    with pytest.raises(TopologyError, match="not a loopback address and security.plaintext is set"):
        parse_topology(
            "nodes: {a: {address: 'tcp://10.0.0.5:7000'}}\nsecurity: {plaintext: true, insecure_bind: true}\n" + tree
        )
    keyed = parse_topology("nodes: {a: {address: 'tcp://10.0.0.5:7000'}}\n" + tree)
    assert not keyed.security.plaintext and keyed.security.keys is None  # CURVE with generated keys


def test_failed_authentications_are_logged_once_per_interval_and_alerted_once_past_the_rate() -> None:
    now = [0.0]
    alerts: list[tuple[str, str]] = []
    failures = AuthFailures(
        "node",
        on_alert=lambda t, d: alerts.append((t, d)),
        log_interval=10,
        alert_count=100,
        alert_window=3600,
        clock=lambda: now[0],
    )
    with capture_logs() as logs:
        for _ in range(100):
            failures.record("KEY", "10.0.0.9")
            now[0] += 1
        assert not alerts  # 100 in 100 s is the limit, not past it
        failures.record("KEY", "10.0.0.9")
        for _ in range(50):
            failures.record("KEY", "10.0.0.9")
        now[0] += 10
        failures.flush()
    lines = [e for e in logs if e["event"] == "auth.rejected"]
    assert failures.total == 151 and sum(e["count"] for e in lines) == 151
    assert len(lines) == 12  # the first at once, then one per 10 s
    assert len(alerts) == 1 and "more than 100" in alerts[0][1]


def _curve_cluster(tmp_path: Path, clusters: list[LiveCluster]) -> LiveCluster:
    for name in ("alpha", "tester"):
        generate_keys(tmp_path / "keys", name)
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "tester"), extra="security: {keys: keys}")
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    cluster.join(keys=CurveKeys.load(tmp_path / "keys", "tester", ["alpha", "tester"]))
    cluster.wait_up("alpha")
    alpha.wait_for_event("transport.secured")
    alpha.wait_for_event("node.started")  # its tree runs (heard before its tree starts)
    return cluster


def test_nodes_with_keys_talk_over_curve(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    cluster = _curve_cluster(tmp_path, clusters)
    assert cluster.system.ask("alpha/root/echo", "whoami") == ["alpha/root/echo", 1]


def test_a_peer_with_an_unknown_key_gets_nothing_in_and_is_logged(tmp_path: Path, clusters: list[LiveCluster]) -> None:
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
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    # The worst case: beta's secret key is stolen (beta is not running), so the rogue passes
    # the handshake as beta; what it sends is still checked frame by frame. A second socket
    # with that key claims another name and is refused outright.
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "beta", "tester"))
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    cluster.join()
    cluster.wait_up("alpha")
    keys = generated_keys_dir(cluster.topology)
    public, secret = load_secret(keys, "beta")
    context = zmq.Context()
    rogue = context.socket(zmq.DEALER)
    stranger = context.socket(zmq.DEALER)
    try:
        for sock, name in ((rogue, b"beta"), (stranger, b"mallory")):
            sock.linger = 0
            sock.routing_id = name
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.curve_serverkey = load_public(keys, "alpha")
            sock.connect(cluster.topology.nodes["alpha"].address)
        hostile = [
            b"",
            b"\xc1",
            b"\xdd\xff\xff\xff\xff",
            b"\x91" * 100_000,
            b"\x94\x01\xa3a/b\xc4\x01\xc1\xc2",
            b"\x95\x02\xa9alpha/x/y\xc4\x03\xc7\x01*\xc3\x01\xcb\x40\x14\x00\x00\x00\x00\x00\x00",
            os.urandom(4096),
        ]
        rogue.send_multipart(hostile)
        stranger.send_multipart([b"\x92\x05\xc0"])
        alpha.wait_for_event("transport.peer_rejected", peer="mallory")
        alpha.wait_for_event("cluster.frame_rejected", peer="beta")
    finally:
        rogue.close()
        stranger.close()
        context.term()
    alpha.wait_for_event("node.started")  # its tree runs (it gives its peers a moment first)
    assert cluster.system.ask("alpha/root/echo", "whoami") == ["alpha/root/echo", 1]
    assert alpha.proc.poll() is None


def _metric(address: str, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_refused_handshakes_are_counted_logged_with_throttling_and_alerted_past_the_rate(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    tree = """
children:
  - {id: alerts, actor: alerts}
  - {id: echo, actor: "tests.helpers:Probe"}
"""
    port = free_ports(1)[0]
    cluster = make_cluster(tmp_path, tree, nodes=("alpha", "tester"))
    cluster.topology_path.write_text(
        cluster.topology_path.read_text(encoding="utf-8").replace(
            "  alpha: {address: ", f"  alpha: {{metrics: '127.0.0.1:{port}', address: "
        ),
        encoding="utf-8",
    )
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    alpha.wait_for_event("metrics.listening")
    server_key = load_public(generated_keys_dir(cluster.topology), "alpha")
    metrics = f"127.0.0.1:{port}"
    context = zmq.Context()
    intruders: list[zmq.Socket] = []
    try:

        def refused() -> bool:
            for _ in range(10):  # each a fresh unknown key
                sock = context.socket(zmq.DEALER)
                sock.linger = 0
                sock.reconnect_ivl = 10
                sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
                sock.curve_serverkey = server_key
                sock.connect(cluster.topology.nodes["alpha"].address)
                intruders.append(sock)
            return _metric(metrics, "flotilla_auth_failures_total", 'socket="node"') > AUTH_ALERT_COUNT

        wait_until(refused, timeout=60, what=f"more than {AUTH_ALERT_COUNT} refused handshakes")
        alpha.wait_for_event("auth.alert", socket="node")
        alpha.wait_for_event("alert", source="alpha", title="failed authentications on the node socket")
    finally:
        for sock in intruders:
            sock.close(0)
        context.term()
    lines = [e for e in alpha.events() if e["event"] == "transport.key_rejected"]
    assert 1 <= len(lines) <= 3  # one line per interval, each with its count, not one per attempt
    assert lines[0]["count"] == 1 and lines[0]["address"] == "127.0.0.1"


def test_a_node_refuses_a_data_directory_another_user_owns(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha",))
    planted = cluster.topology.node_data_dir("alpha")
    planted.mkdir(parents=True)
    os.chown(planted, 65534, 65534)
    result = run_flotilla(
        "node",
        "start",
        "--topology",
        str(cluster.topology_path),
        "--node",
        "alpha",
        "--log-format",
        "json",
        "--run-for",
        "5",
    )
    assert result.returncode == 2
    assert "node.bad_data_dir" in result.stdout and "belongs to uid 65534" in result.stdout
    assert list(planted.iterdir()) == []  # nothing was written into it


def test_forged_outcomes_with_guessed_lease_tokens_are_refused(tmp_path: Path, clusters: list[LiveCluster]) -> None:
    # The forger is a member of the cluster (the tester's key: think of a stolen node key) and
    # knows the job's key; it does not know the lease token the fetcher was given. The page
    # never answers (a socket that listens and never accepts), so the lease stays out.
    tree = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers, visibility: 60}
  - {id: extractor, actor: extractor}
  - {id: fetchers, pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/extractor, timeout: 60}}}
"""
    extra = (
        "rules: {page: {fields: {title: {css: h1}}}}\n"
        f"intake: {{node: alpha, address: 'tcp://127.0.0.1:{free_ports(1)[0]}', router: alpha/root/router}}"
    )
    cluster = make_cluster(tmp_path, tree, nodes=("alpha", "tester"), extra=extra)
    clusters.append(cluster)
    alpha = cluster.start_node("alpha")
    system = cluster.join()
    cluster.wait_up("alpha")
    alpha.wait_for_event("intake.listening", timeout=30)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    journal = sqlite3.connect(cluster.topology.node_data_dir("alpha") / "journal.sqlite")
    try:
        with IntakeClient.for_topology(cluster.topology) as client:
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/page"
            [ack] = client.submit([JobSpec(url=url, rules="page")])

            def leased_token() -> int | None:
                row = journal.execute(
                    "SELECT lease_token FROM jobs WHERE key=? AND state='fetching'", (ack.key,)
                ).fetchone()
                return row[0] if row else None

            wait_until(lambda: leased_token() is not None, timeout=20, what="the lease")
            token = leased_token()
            assert token is not None
            router = system.ref("alpha/root/router")
            for guess in [*range(1, 201), token + 1, token - 1]:
                router.tell(JobOutcome(ack.key, guess, fields={"title": "forged"}, content_hash="x"))
            # The holder reports last; when its outcome is in, every guess before it was judged.
            router.tell(JobOutcome(ack.key, token, fields={"title": "real"}, content_hash="h"))
            wait_until(lambda: client.status([ack.key])[0].state == "stored", timeout=20, what="the real outcome")
            results = list(client.all_results())
    finally:
        journal.close()
        silent.close()
    assert [r.fields for r in results] == [{"title": "real"}]


def test_a_client_that_does_not_speak_curve_is_counted_as_a_failed_authentication(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "tester"))
    clusters.append(cluster)
    cluster.join()  # the tester's own listening socket is the one probed
    assert cluster.cluster is not None
    failures = cluster.cluster.transport.auth_failures
    context = zmq.Context()
    plain = context.socket(zmq.DEALER)
    try:
        plain.linger = 0
        plain.routing_id = b"alpha"
        plain.connect(cluster.topology.nodes["tester"].address)
        plain.send_multipart([b"\x92\x05\xc0"], zmq.NOBLOCK)
        wait_until(lambda: failures.total >= 1, timeout=10, what="the plaintext handshake to be counted")
    finally:
        plain.close()
        context.term()
    assert cluster.cluster.transport.stats.received_frames["alpha"] == 0
