"""Several intake addresses: the client fails over between them, and the topology lists them.

Real ZeroMQ sockets, real SQLite journals, a real node process (frozen with SIGSTOP). Two
intakes serving one journal need a shared journal, which SQLite is not: the client's side is
shown with one live intake beside addresses where nothing listens, a frozen node, or a second
intake with a journal of its own (to count which one answered).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.nodes.config.topology import Topology, TopologyError, load_topology, parse_topology
from flotilla.nodes.intake.auth import ClientKey, IntakeAccess
from flotilla.nodes.intake.client import IntakeClient, IntakeError, IntakeRefused, IntakeUnavailable
from flotilla.nodes.intake.protocol import JobSpec, Role
from flotilla.nodes.intake.server import Intake
from flotilla.nodes.security.keys import CurveKeys, generate_keys, load_public, load_secret
from scripts.harness import free_ports
from scripts.harness.waiting import wait_until
from tests.processes import FlotillaProcess, run_flotilla

TREE = (
    "tree: {children: [{id: router, actor: router, args: {fetchers: %(node)s/root/f}}, {id: x, actor: extractor},\n"
    "                  {id: f, pool: {actor: fetcher, args: {extractor: %(node)s/root/x}}}]}\n"
)
"""A one-node tree with a router (the intake's) on node ``%(node)s``."""

RULES = "rules: {product: {fields: {t: {css: h1}}}}\n"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A key directory: node keys for alpha and beta, the local user's, and a stranger's."""
    directory = tmp_path / "keys"
    for name in ("alpha", "beta", "local", "stranger"):
        generate_keys(directory, name)
    return directory


def serve(address: str, node: str, keys: Path, journal: Path, *, users: tuple[str, ...] = ("local",)) -> Intake:
    """An intake at `address` with `node`'s key pair and its own journal, letting in `users`
    (operators)."""
    public, secret = load_secret(keys, node)
    roles: dict[str, Role] = dict.fromkeys(users, "operator")
    access = IntakeAccess(CurveKeys(public, secret, {name: load_public(keys, name) for name in users}), roles)
    intake = Intake(address, journal, {"product"}, lambda: None, access=access)
    intake.start()
    return intake


def seed(intake: Intake, keys: Path, node: str, key: str = "marker") -> None:
    """One pending job (`key`) in `intake`'s journal: its counts tell it from an empty one."""
    with IntakeClient(intake.address, timeout=5, key=local_key(keys, {intake.address: node})) as client:
        assert [a.status for a in client.submit([JobSpec("http://127.0.0.1:1/seed", "product", key=key)])] == [
            "accepted"
        ]


def pending(client: IntakeClient) -> int:
    """Pending jobs in the journal of the intake that answers (1: the seeded one)."""
    return client.counts().states.get("pending", 0)


def local_key(keys: Path, servers: dict[str, str], name: str = "local") -> ClientKey:
    """`name`'s key, checking the intake at each address of `servers` against that node's key."""
    public, secret = load_secret(keys, name)
    known = {address: load_public(keys, node) for address, node in servers.items()}
    return ClientKey(public, secret, next(iter(known.values())), known)


def address() -> str:
    return f"tcp://127.0.0.1:{free_ports(1)[0]}"


@pytest.fixture
def two_intakes(keys: Path, tmp_path: Path) -> Iterator[tuple[Intake, Intake]]:
    """Live intakes of alpha and beta, each with a journal of its own; beta's holds one job
    (key "present") and lets the stranger in: whichever answers, the answer says which."""
    first = serve(address(), "alpha", keys, tmp_path / "alpha.sqlite")
    second = serve(address(), "beta", keys, tmp_path / "beta.sqlite", users=("local", "stranger"))
    seed(second, keys, "beta", key="present")
    yield first, second
    first.close()
    second.close()


def test_a_request_to_an_address_where_nothing_listens_goes_to_the_next(keys: Path, tmp_path: Path) -> None:
    dead = address()
    live = serve(address(), "beta", keys, tmp_path / "journal.sqlite")
    try:
        with IntakeClient([dead, live.address], timeout=5, key=local_key(keys, {live.address: "beta"})) as client:
            started = time.monotonic()
            acks = client.submit([JobSpec("http://127.0.0.1:1/p/1", "product")])
            took = time.monotonic() - started
            assert [a.status for a in acks] == ["accepted"]
            assert took < 5, f"a refused connection is left at once, not after the timeout ({took:.1f} s)"
            assert client.address == live.address
            assert client.counts().states["pending"] == 1
        wait_until(lambda: live.served == 2, what="both requests served by the live intake")
    finally:
        live.close()


def test_a_frozen_intake_times_out_and_the_next_one_answers_then_and_first_next_time(
    keys: Path, tmp_path: Path
) -> None:
    """The first address is a real node's intake, frozen with SIGSTOP: its port accepts
    connections, but nothing answers."""
    node_port, frozen_address = free_ports(1)[0], address()
    path = tmp_path / "alpha.yaml"
    path.write_text(
        f"nodes: {{alpha: {{address: 'tcp://127.0.0.1:{node_port}'}}}}\n"
        f"security: {{keys: {keys}}}\n" + RULES + f"intake:\n  - {{node: alpha, address: '{frozen_address}', "
        "router: alpha/root/router}\n" + TREE % {"node": "alpha"},
        encoding="utf-8",
    )
    node = FlotillaProcess("node", "start", "--topology", str(path), "--log-format", "json")
    live = serve(address(), "beta", keys, tmp_path / "beta.sqlite")
    try:
        node.wait_for_event("intake.listening", timeout=30, address=frozen_address)
        servers = {frozen_address: "alpha", live.address: "beta"}
        seed(live, keys, "beta")
        servers = {frozen_address: "alpha", live.address: "beta"}
        with IntakeClient([frozen_address, live.address], timeout=2, retries=0, key=local_key(keys, servers)) as client:
            assert pending(client) == 0  # the node's intake answers while it runs
            listed = run_flotilla("jobs", "--topology", str(path))  # the CLI reads the list form too
            assert listed.returncode == 0 and listed.stdout.startswith("pending 0"), listed.stderr
            node.signal(signal.SIGSTOP)
            started = time.monotonic()
            acks = client.submit([JobSpec("http://127.0.0.1:1/p/1", "product")])
            took = time.monotonic() - started
            assert [a.status for a in acks] == ["accepted"]
            assert 2 <= took < 2 + 10, f"the frozen intake is given its timeout, then left ({took:.1f} s)"
            assert client.address == live.address
            started = time.monotonic()
            assert pending(client) == 2  # the live intake's journal: the seed and the new job
            assert time.monotonic() - started < 2, "the address that answered is asked first"
    finally:
        node.signal(signal.SIGCONT)
        live.close()
        node.kill()


def test_the_address_that_answered_last_is_asked_first(
    two_intakes: tuple[Intake, Intake], keys: Path, tmp_path: Path
) -> None:
    first, second = two_intakes
    servers = {first.address: "alpha", second.address: "beta"}
    with IntakeClient([first.address, second.address], timeout=5, key=local_key(keys, servers)) as client:
        assert pending(client) == 0, "the first address is asked first"
        first.close()
        assert pending(client) == 1 and client.address == second.address
        again = serve(first.address, "alpha", keys, tmp_path / "alpha.sqlite")  # back at the same address
        try:
            assert [pending(client), pending(client)] == [1, 1], "the one that answered stays first"
        finally:
            again.close()


def test_an_error_reply_is_not_tried_elsewhere(two_intakes: tuple[Intake, Intake], keys: Path) -> None:
    """Alpha has no job "present", beta has: alpha's Error is the answer."""
    first, second = two_intakes
    servers = {first.address: "alpha", second.address: "beta"}
    with IntakeClient([first.address, second.address], timeout=5, key=local_key(keys, servers)) as client:
        with pytest.raises(IntakeError, match="no job with key 'present'"):
            client.job("present")
        assert client.address == first.address
    with IntakeClient(second.address, timeout=5, key=local_key(keys, servers)) as client:
        assert client.job("present").job.key == "local:present"


def test_a_refused_key_is_not_tried_elsewhere(two_intakes: tuple[Intake, Intake], keys: Path) -> None:
    """Alpha refuses the stranger's key at the handshake; beta would let it in."""
    first, second = two_intakes
    servers = {first.address: "alpha", second.address: "beta"}
    stranger = local_key(keys, servers, name="stranger")
    with IntakeClient([first.address, second.address], timeout=5, key=stranger) as client:
        with pytest.raises(IntakeRefused, match=f"the intake at {first.address} refused this client's key"):
            client.counts()
    with IntakeClient([second.address], timeout=5, key=stranger) as client:
        assert client.counts().states["pending"] == 1


def test_a_client_gives_up_within_timeout_times_addresses_times_tries(keys: Path) -> None:
    dead = [address(), address()]
    with IntakeClient(dead, timeout=0.5, retries=1, key=local_key(keys, dict.fromkeys(dead, "alpha"))) as client:
        started = time.monotonic()
        with pytest.raises(IntakeUnavailable, match=f"no answer from {dead[0]}, {dead[1]} after 2 tries each"):
            client.counts()
        took = time.monotonic() - started
    assert took <= 0.5 * 2 * 2 + 1.0, f"bounded by timeout x addresses x tries ({took:.1f} s)"


def test_one_address_keeps_the_old_client(keys: Path, tmp_path: Path) -> None:
    live = serve(address(), "alpha", keys, tmp_path / "journal.sqlite")
    try:
        public, secret = load_secret(keys, "local")
        with IntakeClient(live.address, timeout=5, key=ClientKey(public, secret, load_public(keys, "alpha"))) as c:
            assert c.addresses == [live.address] and c.address == live.address
            assert c.counts().results == 0
    finally:
        live.close()


# --- the topology --------------------------------------------------------------------------


def topology_text(intake: str, nodes: tuple[str, ...] = ("alpha", "beta")) -> str:
    ports = free_ports(len(nodes))
    listed = ", ".join(f"{n}: {{address: 'tcp://127.0.0.1:{p}'}}" for n, p in zip(nodes, ports, strict=True))
    tree = (
        "tree:\n  children:\n"
        "    - {id: router, actor: router, args: {fetchers: alpha/root/f}}\n"
        "    - {id: x, actor: extractor}\n"
        "    - {id: f, pool: {actor: fetcher, args: {extractor: alpha/root/x}}}\n"
        "    - id: b\n      node: beta\n      supervisor:\n        children:\n"
        "          - {id: router, actor: router, args: {fetchers: alpha/root/f}}\n"
    )
    return f"nodes: {{{listed}}}\n{RULES}{intake}{tree}"


TWO = (
    "intake:\n"
    "  - {node: alpha, address: 'tcp://127.0.0.1:%d', router: alpha/root/router}\n"
    "  - {node: beta, address: 'tcp://127.0.0.1:%d', router: alpha/root/b/router}\n"
)


@pytest.fixture
def shared_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Topologies whose journal every node reaches (what a PostgreSQL journal will declare)."""
    monkeypatch.setattr(Topology, "journal_is_shared", property(lambda _self: True))


def test_a_list_of_one_intake_means_what_the_mapping_means() -> None:
    port = free_ports(1)[0]
    entry = f"{{node: alpha, address: 'tcp://127.0.0.1:{port}', router: alpha/root/router}}"
    listed = parse_topology(topology_text(f"intake:\n  - {entry}\n"))
    mapping = parse_topology(topology_text(f"intake: {entry}\n"))
    assert listed.intakes == mapping.intakes and len(listed.intakes) == 1
    assert listed.intake_on("alpha") == listed.intakes[0] and listed.intake_on("beta") is None
    assert listed.intake_addresses == [f"tcp://127.0.0.1:{port}"]


def test_two_intakes_parse_in_order_with_a_shared_journal(shared_journal: None) -> None:
    ports = free_ports(2)
    topology = parse_topology(topology_text(TWO % tuple(ports)))
    assert [(i.node, i.router) for i in topology.intakes] == [
        ("alpha", "alpha/root/router"),
        ("beta", "alpha/root/b/router"),
    ]
    assert topology.intake_addresses == [f"tcp://127.0.0.1:{p}" for p in ports]
    assert topology.intake_on("beta") == topology.intakes[1]


@pytest.mark.parametrize(
    ("second", "where", "message"),
    [
        (
            "  - {node: alpha, address: 'tcp://127.0.0.1:%d', router: alpha/root/router}\n",
            "intake[1].node",
            "'alpha' already serves intake[0]: one intake per node",
        ),
        (
            "  - {node: beta, address: 'tcp://127.0.0.1:%d', router: alpha/root/b/router}\n",
            "intake[1].address",
            "tcp://127.0.0.1:%d is already the address of intake[0]",
        ),
    ],
)
def test_a_duplicate_node_or_address_is_a_located_problem(
    shared_journal: None, second: str, where: str, message: str
) -> None:
    port = free_ports(1)[0]
    text = topology_text(
        f"intake:\n  - {{node: alpha, address: 'tcp://127.0.0.1:{port}', router: alpha/root/router}}\n"
        + second.replace("%d", str(port))
    )
    with pytest.raises(TopologyError) as raised:
        parse_topology(text, "t.yaml")
    assert [p.format("t.yaml") for p in raised.value.problems] == [
        f"t.yaml:5: {where}: {message.replace('%d', str(port))}"
    ]


def test_an_empty_intake_list_is_a_problem() -> None:
    with pytest.raises(TopologyError, match="intake: must be a mapping or a non-empty list of them"):
        parse_topology(topology_text("intake: []\n"))


def test_check_refuses_two_intakes_with_the_sqlite_journal(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(topology_text(TWO % tuple(free_ports(2))), encoding="utf-8")
    result = run_flotilla("check", str(path))
    assert result.returncode == 2
    assert (
        f"{path}:5: intake[1]: several intakes need a PostgreSQL journal (journal: postgresql://...)" in result.stderr
    )


def test_for_topology_asks_every_intake_with_its_node_key(shared_journal: None, tmp_path: Path) -> None:
    """A client built from a topology of two intakes checks each against its node's key: it
    fails over from alpha's (stopped) to beta's, whose handshake would fail with alpha's key."""
    path = tmp_path / "two.yaml"
    path.write_text(topology_text(TWO % tuple(free_ports(2))), encoding="utf-8")
    topology = load_topology(path)
    keys = tmp_path / "data" / "keys"
    for name in ("alpha", "beta", "local"):
        generate_keys(keys, name)
    beta = Intake(
        topology.intakes[1].address,
        tmp_path / "beta.sqlite",
        {"product"},
        lambda: None,
        access=IntakeAccess.load(topology, "beta"),
    )
    beta.start()
    try:
        with IntakeClient.for_topology(topology, timeout=5) as client:
            assert client.addresses == topology.intake_addresses
            assert client.counts().results == 0
            assert client.address == beta.address
    finally:
        beta.close()
