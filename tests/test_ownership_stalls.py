"""An owner whose database stops answering (a partition drops every packet: a call hangs
instead of failing) steps down before its lease could run out, and does not act on the answer
when it finally comes. tests/test_partitions.py shows the same between real nodes, through a
real database cut off by a network namespace; here the lease table is a stand-in whose call
hangs exactly when the test says, because a real database cannot be made to stall on cue
(nor answer late on purpose) without a partition, which needs root and namespaces."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from flotilla.actors import ActorSystem
from flotilla.nodes.cluster.membership import Cluster
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.runtime.ownership import TreeOwnership
from scripts.harness import free_ports, wait_until

LEASE = 1.0


class StallingLeases:
    """Grants the lease on the first claim; the second one hangs until `answer` is set (then
    grants it too, as a renewal the database made before the link went); every later claim is
    refused (another node holds the lease by then)."""

    def __init__(self) -> None:
        self.answer = threading.Event()
        self.claims = 0
        self.first_asked = 0.0
        self.hung_asked = 0.0

    def claim(self, name: str, holder: str, ttl: float) -> int | None:
        self.claims += 1
        if self.claims == 1:
            self.first_asked = time.monotonic()
            return 7
        if self.claims == 2:
            self.hung_asked = time.monotonic()
            self.answer.wait(30)
            return 7
        return None

    def release(self, name: str, holder: str, token: int) -> bool:
        return True

    def close(self) -> None:
        self.answer.set()


@pytest.fixture
def alpha(tmp_path: Path) -> Iterator[tuple[ActorSystem, Cluster, Path]]:
    ports = free_ports(2)
    path = tmp_path / "t.yaml"
    path.write_text(
        f"""
nodes:
  alpha: {{address: "tcp://127.0.0.1:{ports[0]}"}}
  gamma: {{address: "tcp://127.0.0.1:{ports[1]}"}}
failover: {{candidates: [alpha, gamma], lease: {LEASE}}}
journal: postgresql://flotilla@127.0.0.1:{ports[1]}/never  # failover needs one; the leases here are the test's
tree:
  children:
    - {{id: a, actor: tally}}
""",
        encoding="utf-8",
    )
    system = ActorSystem("alpha")
    cluster = Cluster(load_topology(path), "alpha", system)
    cluster.start()
    yield system, cluster, path
    cluster.close()
    system.stop(timeout=5)


def test_an_owner_whose_renewal_hangs_steps_down_in_time_and_ignores_the_late_answer(
    alpha: tuple[ActorSystem, Cluster, Path],
) -> None:
    system, cluster, path = alpha
    leases = StallingLeases()
    failures: list[str] = []
    with structlog.testing.capture_logs() as logged:
        ownership = TreeOwnership(load_topology(path), "alpha", system, cluster, leases, on_failure=failures.append)
        ownership.start()
        try:
            wait_until(lambda: system.ref("alpha/root/a").is_alive(), timeout=10, what="the tree to start")
            wait_until(lambda: not ownership.owns, timeout=5 * LEASE, what="the owner to step down")
            stepped_down = time.monotonic() - leases.first_asked
            wait_until(lambda: not system.ref("alpha/root/a").is_alive(), timeout=10, what="the tree to stop")
            wait_until(lambda: time.monotonic() - leases.hung_asked > LEASE, timeout=5 * LEASE, what="a lease to pass")
            leases.answer.set()  # the hung renewal comes back a lease after it was asked: too late to mean anything
            wait_until(lambda: leases.claims >= 4, timeout=5 * LEASE, what="two more claims")
        finally:
            ownership.close()
    assert stepped_down < LEASE, stepped_down  # before its lease could run out in the database
    changes = [(e["event"], e.get("why", "")) for e in logged if e["event"].startswith("ownership.")]
    assert changes[0] == ("ownership.acquired", "")
    assert [event for event, _ in changes].count("ownership.acquired") == 1, changes  # never on the late answer
    released = [why for event, why in changes if event == "ownership.released"]
    assert len(released) == 1 and "did not answer" in released[0], changes
    assert failures == []


class SlowGrant:
    """Grants the lease on every claim; the first two take longer than a round to answer (a
    database busy while the node starts), though less than three quarters of the lease."""

    def __init__(self) -> None:
        self.claims = 0

    def claim(self, name: str, holder: str, ttl: float) -> int | None:
        self.claims += 1
        if self.claims <= 2:
            threading.Event().wait(0.6 * LEASE)  # the database is slow to answer
        return 3

    def release(self, name: str, holder: str, token: int) -> bool:
        return True

    def close(self) -> None:
        pass


def test_a_grant_slower_than_a_round_starts_the_tree_on_the_next_renewal_and_never_stops_it(
    alpha: tuple[ActorSystem, Cluster, Path],
) -> None:
    system, cluster, path = alpha
    leases = SlowGrant()
    with structlog.testing.capture_logs() as logged:
        ownership = TreeOwnership(load_topology(path), "alpha", system, cluster, leases, on_failure=print)
        ownership.start()
        try:
            wait_until(lambda: system.ref("alpha/root/a").is_alive(), timeout=10, what="the tree to start")
            wait_until(lambda: leases.claims >= 6, timeout=10 * LEASE, what="a few renewals")
            assert ownership.owns and ownership.token == 3
        finally:
            ownership.close()
    changes = [e["event"] for e in logged if e["event"] in ("ownership.acquired", "ownership.released")]
    assert changes == ["ownership.acquired", "ownership.released"], changes  # released by close() only
