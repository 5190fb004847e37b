"""Ownership leases and fencing tokens in the journal's database, on a real SQLite file and a
real PostgreSQL server (every test runs on both)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.actors.pipeline.journal import Fenced, NewJob, natural_key, open_journal
from flotilla.actors.pipeline.journal_engine import JournalUnavailable
from flotilla.actors.pipeline.leases import LeaseTable
from scripts.harness import wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "journal.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def leases(where: str) -> Iterator[LeaseTable]:
    table = LeaseTable(where)
    yield table
    table.close()


def claim_once_run_out(leases: LeaseTable, holder: str) -> int:
    """Claim the lease for `holder` as soon as the running one has run out; its token."""
    tokens: list[int] = []

    def claimed() -> bool:
        token = leases.claim("tree", holder, ttl=30)
        if token is not None:
            tokens.append(token)
        return bool(tokens)

    wait_until(claimed, timeout=5, what=f"{holder} gets the lease once it ran out")
    return tokens[0]


def test_the_first_claim_wins_and_renewals_keep_the_token(leases: LeaseTable) -> None:
    first = leases.claim("tree", "alpha/1", ttl=30)
    assert first == 1
    assert leases.claim("tree", "gamma/1", ttl=30) is None  # alpha's lease runs
    assert leases.claim("tree", "alpha/1", ttl=30) == first  # a renewal
    held = leases.holder("tree")
    assert held is not None and held.holder == "alpha/1" and held.token == first and 29 < held.remaining <= 30


def test_a_lease_that_ran_out_goes_to_the_next_claimant_with_a_newer_token(leases: LeaseTable) -> None:
    old = leases.claim("tree", "alpha/1", ttl=0.2)
    assert old is not None
    new = claim_once_run_out(leases, "gamma/1")
    assert new > old
    assert leases.claim("tree", "alpha/1", ttl=30) is None  # the old owner cannot renew


def test_a_released_lease_is_taken_at_once_and_only_its_holder_releases_it(leases: LeaseTable) -> None:
    token = leases.claim("tree", "alpha/1", ttl=30)
    assert token is not None
    assert not leases.release("tree", "gamma/1", token)  # not gamma's to end
    assert not leases.release("tree", "alpha/1", token + 1)  # not under that token
    assert leases.release("tree", "alpha/1", token)
    assert leases.claim("tree", "gamma/1", ttl=30) == token + 1


def test_a_restarted_process_of_the_same_node_gets_a_new_token(leases: LeaseTable) -> None:
    token = leases.claim("tree", "alpha/boot-1", ttl=0.1)
    assert token is not None
    assert claim_once_run_out(leases, "alpha/boot-2") == token + 1


def test_racing_claimants_never_get_the_same_token(where: str) -> None:
    """Eight holders (each with its own connection) claim at once, over and over, a lease
    that runs out at once: every claim is a change of hands, and no two get the same token
    (without the row lock, two transactions read the same token and both take it)."""
    tables = [LeaseTable(where) for _ in range(8)]
    winners: list[tuple[int, str]] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        for _ in range(25):
            token = tables[i].claim("tree", f"node-{i}", ttl=0.0)
            if token is not None:
                with lock:
                    winners.append((token, f"node-{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for table in tables:
        table.close()
    tokens = [token for token, _ in winners]
    assert len(tokens) == 8 * 25
    assert len(set(tokens)) == len(tokens), "two claimants got the same token"


def test_a_fenced_journal_refuses_writes_once_a_newer_owner_holds_the_lease(where: str, leases: LeaseTable) -> None:
    url = "http://127.0.0.1:9/product/1"
    owner = leases.claim("tree", "alpha/1", ttl=30)
    assert owner is not None
    journal = open_journal(where)
    journal.submit([NewJob(natural_key(url, "product"), url, "product")])
    journal.fence("tree", owner)
    assert len(journal.lease(10, visibility=30)) == 1  # the current owner writes

    leases.release("tree", "alpha/1", owner)
    newer = leases.claim("tree", "gamma/1", ttl=30)
    assert newer == owner + 1
    with pytest.raises(Fenced) as refused:
        journal.replay()
    assert refused.value.current == newer
    with pytest.raises(Fenced), journal.batch():
        journal.expire_leases()
    intake = open_journal(where)  # writers that are no owner's (an intake) are not fenced
    assert intake.submit([NewJob(natural_key(url + "2", "product"), url + "2", "product")]) == [True]
    intake.close()
    journal.close()


def test_a_database_out_of_reach_fails_the_call_not_the_table() -> None:
    table = LeaseTable("postgresql://flotilla@127.0.0.1:9/nowhere")  # nothing listens on port 9
    with pytest.raises(JournalUnavailable):
        table.claim("tree", "alpha/1", ttl=1)
    table.close()
