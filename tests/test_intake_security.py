"""The intake against another local user: a throwaway account made by the test runs the
project's own CLI and pyzmq against a real cluster, with and without a client key of its own."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.actors.pipeline.journal import natural_key
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.security.keys import generate_keys
from scripts.harness import free_ports
from tests.cluster_harness import LiveCluster, make_cluster
from tests.processes import ROOT, run_flotilla

SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
"""The other user runs the system's interpreter of the same version (the test's own lives
under a directory only root may enter) with this checkout's packages on its path."""


def _why_no_other_user() -> str | None:
    if os.geteuid() != 0:
        return "creating a throwaway user needs root"
    if not (shutil.which("useradd") and shutil.which("userdel") and shutil.which("setpriv")):
        return "useradd, userdel or setpriv is missing"
    if not SYSTEM_PYTHON.exists():
        return f"no {SYSTEM_PYTHON} to run the other user's client with"
    return None


@pytest.fixture
def other_user() -> Iterator[pwd.struct_passwd]:
    """A throwaway local account, removed afterwards."""
    reason = _why_no_other_user()
    if reason is not None:
        pytest.skip(reason)
    name = f"flt{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the other user can read (the topology is there; the cluster's data
    directory below it is the cluster owner's only)."""
    path = Path(tempfile.mkdtemp(prefix="flotilla-intake-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_as(user: pwd.struct_passwd, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `args` (after the interpreter) as `user`, with no groups and no capabilities."""
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{site}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            "--inh-caps=-all",
            str(SYSTEM_PYTHON),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
        check=False,
    )


TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers}
  - id: hold
    actor: hold
  - id: extractors
    pool: {actor: extractor, size: 1}
  - id: fetchers
    pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/extractors}}
"""


def start_keyed(directory: Path, clusters: list[LiveCluster], key_home: Path, metrics: int) -> LiveCluster:
    """A one-node cluster whose intake knows one client, mallory (its secret key in
    `key_home`, its public key in the cluster's generated key directory)."""
    keys = directory / "data" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    (directory / "data").chmod(0o700)
    generate_keys(key_home, "mallory")
    shutil.copy(key_home / "mallory.key", keys / "mallory.key")
    intake = free_ports(1)[0]
    extra = textwrap.dedent(f"""
        clients: [mallory]
        resilience: {{hold: alpha/root/hold}}
        rules: {{product: {{fields: {{title: {{css: h1, required: true}}}}}}}}
        intake: {{node: alpha, address: "tcp://127.0.0.1:{intake}", router: alpha/root/router}}
        """)
    cluster = make_cluster(directory, TREE, nodes=("alpha",), extra=extra)
    text = cluster.topology_path.read_text(encoding="utf-8")
    cluster.topology_path.write_text(
        text.replace("  alpha: {address: ", f"  alpha: {{metrics: '127.0.0.1:{metrics}', address: "), encoding="utf-8"
    )
    cluster.topology_path.chmod(0o644)
    clusters.append(cluster)
    cluster.start_node("alpha").wait_for_event("intake.listening", timeout=30)
    return cluster


RAW_CLIENT = """
import sys, zmq
from flotilla.nodes.intake.protocol import Hold, Counts, encoder
address, mode = sys.argv[1], sys.argv[2]
context = zmq.Context()
socket = context.socket(zmq.DEALER)
socket.setsockopt(zmq.LINGER, 0)
if mode == "stranger":  # a CURVE key of its own that the intake does not know
    public, secret = zmq.curve_keypair()
    socket.curve_publickey, socket.curve_secretkey = public, secret
    socket.curve_serverkey = open(sys.argv[3]).read().split('"')[1].encode()
socket.connect(address)
socket.send(encoder.encode(Hold(1, "on")))
socket.send(encoder.encode(Counts(2)))
print("answered" if socket.poll(3000) else "no answer")
socket.close(0)
context.term()
"""

SQUATTER = """
import sys
from pathlib import Path
from flotilla.actors.pipeline.journal import natural_key
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.auth import ClientKey, load_secret_file
from flotilla.nodes.intake.protocol import JobSpec
from flotilla.nodes.security.keys import load_public
address, home, victim, attacker = sys.argv[1:5]
public, secret = load_secret_file(Path(home) / "mallory.key_secret")
key = ClientKey(public, secret, load_public(Path(home), "alpha"))
with IntakeClient(address, timeout=5, key=key) as client:
    for ack in client.submit([JobSpec(attacker, "product", key=natural_key(victim, "product")),
                              JobSpec(attacker, "product", key="local:" + natural_key(victim, "product"))]):
        print(ack.status, ack.key)
"""


def test_another_user_cannot_use_the_intake_without_a_key_nor_steer_it_with_a_client_key(
    shared_dir: Path, other_user: pwd.struct_passwd, clusters: list[LiveCluster]
) -> None:
    home = shared_dir / "mallory-home"
    metrics = free_ports(1)[0]
    cluster = start_keyed(shared_dir / "cluster", clusters, home, metrics)
    shared_dir.joinpath("cluster").chmod(0o755)
    topology, address = str(cluster.topology_path), cluster.topology.intakes[0].address  # type: ignore[union-attr]
    shutil.copy(shared_dir / "cluster" / "data" / "keys" / "alpha.key", home / "alpha.key")
    for path in (home, *home.iterdir()):
        os.chown(path, other_user.pw_uid, other_user.pw_gid)

    # Without a key: the CLI finds none it may read, and raw ZeroMQ gets no answer at all.
    refused = run_as(other_user, "-m", "flotilla.nodes.cli", "submit", "http://127.0.0.1:1/x", "--topology", topology)
    assert refused.returncode == 2 and "no client key" in refused.stderr, refused
    hold = run_as(other_user, "-m", "flotilla.nodes.cli", "hold", "on", "--topology", topology)
    assert hold.returncode == 2 and "no client key" in hold.stderr, hold
    raw = run_as(other_user, "-c", RAW_CLIENT, address, "plaintext")
    assert raw.stdout.strip() == "no answer", raw
    stranger = run_as(other_user, "-c", RAW_CLIENT, address, "stranger", str(home / "alpha.key"))
    assert stranger.stdout.strip() == "no answer", stranger
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
        scraped = response.read().decode()
    assert "flotilla_intake_auth_failures_total 1.0" in scraped
    generate_keys(home, "stranger")
    os.chown(home / "stranger.key_secret", other_user.pw_uid, other_user.pw_gid)
    unknown = run_as(
        other_user,
        "-m",
        "flotilla.nodes.cli",
        "submit",
        "http://127.0.0.1:1/x",
        "--topology",
        topology,
        "--key",
        str(home / "stranger.key_secret"),
        "--server-key",
        str(home / "alpha.key"),
    )
    assert unknown.returncode == 1 and "refused this client's key" in unknown.stderr, unknown

    # With a client key: it submits and reads its own jobs, but cannot force Hold or replay.
    key = ["--key", str(home / "mallory.key_secret"), "--server-key", str(home / "alpha.key")]
    submitted = run_as(
        other_user, "-m", "flotilla.nodes.cli", "submit", "http://127.0.0.1:1/mine", "--topology", topology, *key
    )
    assert submitted.returncode == 0 and "1 accepted" in submitted.stdout, submitted
    forced = run_as(other_user, "-m", "flotilla.nodes.cli", "hold", "on", "--topology", topology, *key)
    assert forced.returncode == 1 and "Hold needs an operator key; mallory is a client" in forced.stderr, forced
    replayed = run_as(other_user, "-m", "flotilla.nodes.cli", "dlq", "replay", "--topology", topology, *key)
    assert replayed.returncode == 1 and "Replay needs an operator key" in replayed.stderr, replayed

    # A squatted key does not capture the victim's URL.
    victim = "http://127.0.0.1:1/victim"
    squat = run_as(other_user, "-c", SQUATTER, address, str(home), victim, "http://127.0.0.1:1/attacker")
    assert squat.returncode == 0 and squat.stdout.split() == [
        "accepted",
        f"mallory:{natural_key(victim, 'product')}",
        "accepted",
        f"mallory:local:{natural_key(victim, 'product')}",
    ], squat
    mine = run_flotilla("submit", victim, "--topology", topology)  # the cluster's owner, with the local key
    assert mine.returncode == 0 and "1 accepted" in mine.stdout, mine
    with IntakeClient.for_topology(cluster.topology) as owner:
        assert [job.url for job in owner.status([f"local:{natural_key(victim, 'product')}"])] == [victim]
        assert owner.hold().mode == "auto"  # the client's attempt changed nothing
        assert sum(owner.counts().states.values()) == 4
    jobs = run_as(other_user, "-m", "flotilla.nodes.cli", "jobs", "--topology", topology, *key)
    assert jobs.returncode == 0, jobs
    assert sum(int(n) for n in jobs.stdout.split("(")[0].split()[1::2]) == 3  # its own jobs only


def test_check_refuses_a_routable_intake_without_keys_even_with_insecure_bind(tmp_path: Path) -> None:
    base = (
        "nodes: {alpha: {}}\nrules: {p: {fields: {t: {css: h1}}}}\n"
        "tree: {children: [{id: router, actor: router, args: {fetchers: alpha/root/f}},\n"
        "  {id: x, pool: {actor: extractor}}, {id: f, pool: {actor: fetcher, args: {extractor: alpha/root/x}}}]}\n"
    )
    path = tmp_path / "routable.yaml"
    path.write_text(
        base + "intake: {node: alpha, address: 'tcp://192.0.2.10:7201', router: alpha/root/router}\n"
        "security: {insecure_bind: true}\n",
        encoding="utf-8",
    )
    refused = run_flotilla("check", str(path))
    assert refused.returncode == 2
    assert (
        "intake.address: tcp://192.0.2.10:7201 is not a loopback address and security.keys is not set" in refused.stderr
    )
    keys = tmp_path / "keys"
    for name in ("alpha", "alice"):
        generate_keys(keys, name)
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(
        base.replace("{alpha: {}}", "{alpha: {address: 'tcp://192.0.2.10:7101'}}")
        + "intake: {node: alpha, address: 'tcp://192.0.2.10:7201', router: alpha/root/router}\n"
        "security: {keys: keys}\nclients: [alice, bob]\n",
        encoding="utf-8",
    )
    missing = run_flotilla("check", str(keyed))
    assert missing.returncode == 2 and "no public key for client(s) bob" in missing.stderr, missing.stderr
    keyed.write_text(keyed.read_text(encoding="utf-8").replace("[alice, bob]", "[alice]"), encoding="utf-8")
    assert run_flotilla("check", str(keyed)).returncode == 0
