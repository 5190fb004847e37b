"""Partitions: every node in a network namespace of its own (tests/netns.py), real node
processes talking CURVE over veth pairs and a bridge, and a cable pulled and plugged back.

The first tests need nothing but namespaces: a cut host drops packets; a node cut off is seen
down by its peers (its heartbeats stop arriving), stops the children it hosted for a parent it
cannot hear, and gets them back from that parent once the link is restored.

The failover test adds a PostgreSQL server and the test site, each on a host of its own, and
cuts the owner of the tree off from everything, the database included: the owner steps down
before its lease could run out, a survivor takes over, no job is lost or stored twice, and
the old owner rejoins as a standby."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from flotilla.nodes.config.schema import TopologySection
from scripts.harness import wait_until
from tests.netns import Network, namespaces_unavailable
from tests.netns_postgres import NamespacedPostgres, postgres_unavailable
from tests.processes import ROOT, FlotillaProcess

SCRIPTS = ROOT / "scripts"
NODE_PORT = 7100
"""Every node listens on this port of its own host's address (each namespace has its own ports)."""
HEARTBEAT_TIMEOUT = 1.0
DETECTION_BOUND = 4.0
"""A cut node must be seen down within this long (heartbeat timeout plus a tick, with slack
for a loaded machine)."""


@pytest.fixture
def networks() -> Iterator[Callable[..., Network]]:
    """Make `Network`s of named hosts; each one torn down after the test, whatever its outcome."""
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)
    made: list[Network] = []

    def make(*hosts: str) -> Network:
        network = Network(hosts)
        made.append(network)
        return network

    yield make
    for network in made:
        network.close()


def write_topology(directory: Path, network: Network, nodes: tuple[str, ...], tree: str, extra: str = "") -> Path:
    """A topology whose nodes listen on their own host's address in `network`."""
    lines = ["cluster: partition", f"data_dir: '{directory / 'data'}'", "nodes:"]
    lines += [f"  {name}: {{address: 'tcp://{network.address(name)}:{NODE_PORT}'}}" for name in nodes]
    lines.append(f"transport: {{heartbeat_interval: 0.1, heartbeat_timeout: {HEARTBEAT_TIMEOUT}}}")
    lines.append(textwrap.dedent(extra).strip())
    lines.append("tree:")
    lines.append(textwrap.indent(textwrap.dedent(tree).strip(), "  "))
    path = directory / "cluster.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_node(network: Network, topology: Path, node: str) -> FlotillaProcess:
    """Node `node` in its own host's namespace, logging JSON."""
    return network.start_flotilla(
        node, "node", "start", "--topology", str(topology), "--node", node, "--log-format", "json"
    )


def shell(network: Network, topology: Path, node: str, command: str) -> Any:
    """One shell command on `node`, run from inside its host; its answer's data."""
    done = network.run_flotilla(node, "shell", node, "--topology", str(topology), "--exec", command, "--json")
    answer = json.loads(done.stdout)
    assert answer["ok"], (command, answer, done.stderr)
    return answer["data"]


def statuses(network: Network, topology: Path, supervisor: str) -> dict[str, str]:
    """Each child of `supervisor` (on alpha) and its status."""
    return {child["id"]: child["status"] for child in shell(network, topology, "alpha", f"which_children {supervisor}")}


def wait_for_statuses(
    network: Network, topology: Path, supervisor: str, want: dict[str, str], timeout: float, what: str
) -> None:
    """Wait until the children of `supervisor` named in `want` have those statuses (each
    look is a shell process started inside alpha's host)."""
    seen: dict[str, str] = {}

    def reached() -> bool:
        seen.update(statuses(network, topology, supervisor))
        return all(seen.get(child) == status for child, status in want.items())

    try:
        wait_until(reached, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen}") from None


CONNECT = """
import socket, sys, time
began = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except TimeoutError:
    print("timed out")
except OSError as exc:
    print("refused" if isinstance(exc, ConnectionRefusedError) else f"error {exc}")
"""
"""Try one TCP connection from inside a host: connected, timed out (packets dropped), refused."""


def connect(network: Network, source: str, target: str, port: int, timeout: float) -> str:
    done = network.run(source, sys.executable, "-c", CONNECT, network.address(target), str(port), str(timeout))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_cut_host_drops_packets_until_healed_and_the_network_leaves_nothing_behind(
    networks: Callable[..., Network],
) -> None:
    network = networks("alpha", "beta")
    listener = network.start(
        "beta",
        sys.executable,
        "-u",
        "-c",
        "import socket, sys\n"
        "s = socket.create_server((sys.argv[1], 7000)); print('listening', flush=True)\n"
        "while True: s.accept()[0].close()\n",
        network.address("beta"),
    )
    listener.wait_for_event_line("listening", timeout=10)
    assert connect(network, "alpha", "beta", 7000, 5) == "connected"
    assert connect(network, "alpha", "beta", 7001, 5) == "refused"  # a host that is there answers
    network.cut("beta")
    assert connect(network, "alpha", "beta", 7000, 1) == "timed out"  # a cut one does not: packets are dropped
    network.heal("beta")
    assert connect(network, "alpha", "beta", 7000, 5) == "connected"
    namespaces = [host.namespace for host in network.hosts.values()] + [network.switch]
    network.close()
    assert listener.proc.poll() is not None
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20, check=True).stdout
    assert not [name for name in namespaces if name in left], left


SPREAD_TREE = """
children:
  - id: tally
    actor: tally
  - id: counting
    node: beta
    supervisor:
      intensity: 20
      children:
        - id: workers
          pool: {actor: flaky, size: 2, args: {crash_rate: 0, report_to: alpha/root/tally}}
        - id: ticker
          actor: ticker
          args: {target: alpha/root/counting/workers, interval: 0.05}
  - id: steady
    node: gamma
    supervisor:
      children:
        - {id: tally, actor: tally}
"""


def test_a_node_cut_off_is_seen_down_stops_its_orphans_and_gets_its_subtree_back_when_the_link_heals(
    tmp_path: Path, networks: Callable[..., Network]
) -> None:
    network = networks("alpha", "beta", "gamma")
    topology = write_topology(tmp_path, network, ("alpha", "beta", "gamma"), SPREAD_TREE)
    beta = start_node(network, topology, "beta")
    gamma = start_node(network, topology, "gamma")
    alpha = start_node(network, topology, "alpha")
    alpha.wait_for_event("node.started", timeout=60)
    running = {"tally": "running", "counting": "running", "steady": "running"}
    wait_for_statuses(network, topology, "alpha/root", running, 30, "the tree to run on all three hosts")

    network.cut("beta")
    cut_at = time.monotonic()
    down = alpha.wait_for_event("cluster.node_down", timeout=DETECTION_BOUND + 5, peer="beta")
    detected = time.monotonic() - cut_at
    assert "silent" in down["why"], down  # its heartbeats stopped arriving: nothing was refused or reset
    assert detected < DETECTION_BOUND, detected
    gamma.wait_for_event("cluster.node_down", timeout=DETECTION_BOUND + 5, peer="beta")
    beta.wait_for_event("cluster.node_down", timeout=DETECTION_BOUND + 5, peer="alpha")
    orphan = beta.wait_for_event("host.orphan_stopped", timeout=20, path="alpha/root/counting")
    assert orphan["parent_node"] == "alpha"
    during = statuses(network, topology, "alpha/root")
    assert during["counting"] != "running" and during["steady"] == "running", during
    assert not [e for e in alpha.events() if e.get("event") == "cluster.node_down" and e.get("peer") == "gamma"]

    network.heal("beta")
    healed_at = time.monotonic()
    alpha.wait_for_event("cluster.node_up", timeout=30, count=2, peer="beta")
    rejoined = time.monotonic() - healed_at
    wait_for_statuses(network, topology, "alpha/root", running, 30, "alpha's supervisor to restart beta's subtree")
    restarted = time.monotonic() - healed_at
    counts = shell(network, topology, "alpha", "count_children alpha/root/counting/workers")
    assert counts["active"] == 2, counts
    print(
        f"\nbeta cut off: seen down in {detected:.2f} s; healed: up in {rejoined:.2f} s, subtree in {restarted:.2f} s"
    )


SITE_PORT = 8800
JOBS = 240
"""Submitted through alpha's intake before the cut."""
LATE_JOBS = 60
"""Submitted through gamma's intake while alpha is cut off."""
PAGE_MS = 100
"""Each page answers after this long, so that work is in flight when the owner is cut off."""
LEASE = 2.0
TAKEOVER_BOUND = 3 * LEASE
"""A survivor must own the tree within this long of the cut (the lease runs out, then its next claim)."""
RESUME_BOUND = TAKEOVER_BOUND + 10
"""The first job stored under the new owner comes within this long of the cut."""
TREE_STOP_BOUND = 30.0
"""The cut-off owner stops its tree within this long (each child within its shutdown timeout)."""

FAILOVER_TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_in_flight: 32, max_attempts: 20, transient_base: 0.1,
           transient_cap: 0.5, visibility: 10}
  - id: fetching
    node: beta
    supervisor:
      children:
        - id: extractors
          pool: {actor: extractor, size: 2}
        - id: fetchers
          pool: {actor: fetcher, size: 4, args: {extractor: alpha/root/fetching/extractors, timeout: 5.0}}
"""

FAILOVER_EXTRA = """
journal: {journal}
failover: {{candidates: [alpha, gamma], failback: stay, lease: {lease}}}
intake:  # each on its own host's loopback: the CLI run inside a host reaches that host's intake only
  - {{node: alpha, address: "tcp://127.0.0.1:7500", router: alpha/root/router}}
  - {{node: gamma, address: "tcp://127.0.0.1:7501", router: alpha/root/router}}
egress: {{allow: [{site}]}}
rules:
  product:
    fields:
      title: {{css: h1.title, required: true}}
      price: {{css: .price, required: true}}
"""


def postgres_journal_missing() -> str | None:
    """Why the failover test cannot run against PostgreSQL here (None: it can)."""
    if "journal" not in TopologySection.__struct_fields__:
        return "this checkout has no PostgreSQL journal yet (topology key `journal: postgresql://…`)"
    return postgres_unavailable()


def tree_gone(network: Network, topology: Path, node: str) -> bool:
    """No child of the tree runs on `node` (its shell is a unix socket: reachable while cut off)."""
    return not [path for path in shell(network, topology, node, "paths") if path.startswith("alpha/root/")]


def event_time(event: dict[str, Any]) -> float:
    """A log event's wall-clock time (every process on one machine: comparable)."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def test_the_owner_cut_off_from_the_fleet_and_the_database_is_replaced_and_no_job_is_lost_or_stored_twice(
    tmp_path: Path, networks: Callable[..., Network]
) -> None:
    """alpha owns the tree (the router), beta runs the fetchers and extractors, gamma stands
    by; jobs go in through alpha's intake, then alpha's cable is pulled while pages are in
    flight. Measured: how long until gamma owns the tree and stores a job; checked: alpha
    stopped acting first, more jobs go in through gamma's intake meanwhile, every job ends
    stored exactly once (the journal) after every page was fetched (the site), and alpha back
    on the network follows gamma's token without taking the tree back (`failback: stay`)."""
    reason = postgres_journal_missing()
    if reason is not None:
        pytest.skip(reason)
    network = networks("db", "site", "alpha", "beta", "gamma")
    database = NamespacedPostgres(network, "db")
    site = network.start(
        "site",
        sys.executable,
        str(SCRIPTS / "demo_site.py"),
        "--host",
        network.address("site"),
        "--port",
        str(SITE_PORT),
    )
    site_url = f"http://{network.address('site')}:{SITE_PORT}"
    site.wait_for_event_line(f"ready {site_url}", timeout=30)
    extra = FAILOVER_EXTRA.format(journal=database.url(), lease=LEASE, site=network.address("site"))
    topology = write_topology(tmp_path, network, ("alpha", "beta", "gamma"), FAILOVER_TREE, extra)

    alpha = start_node(network, topology, "alpha")
    first = alpha.wait_for_event("ownership.acquired", timeout=60)
    gamma = start_node(network, topology, "gamma")
    beta = start_node(network, topology, "beta")
    alpha.wait_for_event("intake.listening", timeout=60)
    gamma.wait_for_event("intake.listening", timeout=60)
    gamma.wait_for_event("cluster.node_up", timeout=60, peer="alpha")
    alpha.wait_for_event("ownership.tree_started", timeout=60)  # beta runs the fetchers

    def submit(host: str, pages: range) -> set[str]:
        """`flotilla submit` run inside `host` (so through its intake); the keys accepted."""
        listing = tmp_path / f"urls-{host}.txt"
        listing.write_text("".join(f"{site_url}/slow/{n}?ms={PAGE_MS}\n" for n in pages), encoding="utf-8")
        done = network.run_flotilla(host, "submit", str(listing), "--topology", str(topology), "--jsonl")
        assert done.returncode == 0, done.stderr
        accepted = {ack["key"] for ack in map(json.loads, done.stdout.splitlines()) if ack["status"] == "accepted"}
        assert len(accepted) == len(pages), done.stdout[-2000:]
        return accepted

    keys = submit("alpha", range(JOBS))

    def stored() -> int:
        return int(database.psql("SELECT count(*) FROM results")[0][0])

    wait_until(lambda: stored() >= JOBS // 4, timeout=60, what="a quarter of the jobs stored under alpha")
    network.cut("alpha")
    cut_at, cut_wall = time.monotonic(), time.time()
    stored_at_cut = stored()

    acquired = gamma.wait_for_event("ownership.acquired", timeout=TAKEOVER_BOUND + 10)
    takeover = time.monotonic() - cut_at
    released = alpha.wait_for_event("ownership.released", timeout=TAKEOVER_BOUND + 10)
    assert acquired["token"] > first["token"]
    assert event_time(released) < event_time(acquired), (released, acquired)  # never two owners at once
    assert takeover < TAKEOVER_BOUND, takeover
    beta.wait_for_event("cluster.owner", timeout=10, owner="gamma", token=acquired["token"])
    wait_until(lambda: stored() > stored_at_cut, timeout=30, what="jobs stored under gamma while alpha is cut off")
    keys |= submit("gamma", range(JOBS, JOBS + LATE_JOBS))  # and taken through gamma's intake meanwhile
    wait_until(lambda: tree_gone(network, topology, "alpha"), timeout=TREE_STOP_BOUND, what="the tree to stop on alpha")
    stopped = time.monotonic() - cut_at

    network.heal("alpha")
    healed_at = time.monotonic()
    alpha.wait_for_event("cluster.owner", timeout=30, owner="gamma", token=acquired["token"])
    rejoined = time.monotonic() - healed_at
    gamma.wait_for_event("cluster.node_up", timeout=30, count=2, peer="alpha")
    wait_until(lambda: stored() == len(keys), timeout=120, what="every job stored")

    rows = database.psql(
        "SELECT j.key, count(*) FROM attempts a JOIN jobs j ON j.seq = a.job WHERE a.outcome = 'stored' GROUP BY j.key"
    )
    stored_per_key = {key: int(count) for key, count in rows}
    assert set(stored_per_key) == keys  # every job submitted was stored...
    assert set(stored_per_key.values()) == {1}  # ...once
    assert {key for (key,) in database.psql("SELECT key FROM results")} == keys
    stats = network.get_json("site", f"{site_url}/__stats")
    assert isinstance(stats, dict)
    requested = {path: count for path, count in stats["by_path"].items() if path.startswith("/slow/")}
    assert set(requested) == {f"/slow/{n}" for n in range(JOBS + LATE_JOBS)}  # every page fetched, at least once
    refetched = sum(requested.values()) - len(keys)
    stored_times = [float(at) for (at,) in database.psql("SELECT stored_at FROM results")]
    resumed = min(at for at in stored_times if at > event_time(acquired)) - cut_wall
    assert resumed < RESUME_BOUND, resumed
    assert [e for e in alpha.events() if e.get("event") == "ownership.acquired"] == [first]  # failback: stay
    assert not [e for e in gamma.events() if e.get("event") == "ownership.released"]
    print(
        f"\n{JOBS} + {LATE_JOBS} jobs; owner alpha cut off after {stored_at_cut} stored: "
        f"gamma owned the tree in {takeover:.2f} s "
        f"and stored its first job {resumed:.2f} s after the cut; the tree stopped on alpha within {stopped:.2f} s; "
        f"healed: alpha followed gamma in {rejoined:.2f} s; "
        f"{refetched} pages fetched more than once, none stored twice"
    )
