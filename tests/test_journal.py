"""The job journal on a real SQLite file and on a real PostgreSQL server (every test runs on
both): durable submissions, leases, exactly-once results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.actors.pipeline.journal import Journal, NewJob, canonical_url, natural_key, open_journal
from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the journal is: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "journal.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def journal(where: str, clock: FakeClock) -> Iterator[Journal]:
    j = open_journal(where, clock=clock)
    yield j
    j.close()


def job(n: int) -> NewJob:
    url = f"http://127.0.0.1:8000/product/{n}"
    return NewJob(natural_key(url, "product"), url, "product")


def test_canonical_urls_give_the_same_key() -> None:
    assert canonical_url("HTTP://Example.COM:80/a?b=1#frag") == "http://example.com/a?b=1"
    assert canonical_url("https://example.com") == "https://example.com/"
    assert natural_key("http://EXAMPLE.com/a#x", "r") == natural_key("http://example.com/a", "r")
    assert natural_key("http://example.com/a", "r") != natural_key("http://example.com/a", "s")
    assert canonical_url("http://u:p1@h/x") != canonical_url("http://u:p2@h/x")
    assert canonical_url("http://[::1]:8080/x") == "http://[::1]:8080/x"


def test_a_submission_is_on_disk_when_submit_returns_and_duplicates_change_nothing(
    where: str, journal: Journal
) -> None:
    assert journal.submit([job(1), job(2)]) == [True, True]
    assert journal.submit([job(2), job(3)]) == [False, True]
    other = open_journal(where)  # another connection sees it at once
    assert other.counts()["pending"] == 3
    other.close()
    assert journal.counts()["pending"] == 3


def test_a_lease_hands_out_due_jobs_once_until_it_expires(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(i) for i in range(5)])
    first = journal.lease(limit=3, visibility=10)
    assert [lease.attempt for lease in first] == [1, 1, 1]
    second = journal.lease(limit=10, visibility=10)
    assert len(second) == 2 and not {lease.key for lease in first} & {lease.key for lease in second}
    assert journal.lease(limit=10, visibility=10) == []
    clock.advance(11)
    expired = journal.expire_leases()
    assert sorted(expired) == sorted(lease.key for lease in first + second)
    again = journal.lease(limit=10, visibility=10)
    assert {lease.attempt for lease in again} == {2}
    assert not {lease.token for lease in again} & {lease.token for lease in first + second}
    assert journal.lost_count(again[0].key) == 1


def test_a_result_is_stored_exactly_once_and_stale_reports_change_nothing(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(1)])
    stale = journal.lease(limit=1, visibility=5)[0]
    clock.advance(6)
    journal.expire_leases()
    current = journal.lease(limit=1, visibility=5)[0]
    assert journal.store(stale.key, stale.token, {"title": "old"}, "h0") is False
    assert journal.extracting(current.key, current.token) is True
    assert journal.store(current.key, current.token, {"title": "new"}, "h1") is True
    assert journal.store(current.key, current.token, {"title": "again"}, "h2") is False
    results = journal.results()
    assert [(r["fields"], r["content_hash"], r["attempts"]) for r in results] == [({"title": "new"}, "h1", 2)]
    assert journal.job(current.key).state == "stored"
    outcomes = [a[3] for a in journal.attempts(current.key)]
    assert outcomes == ["lost", "stored"]


def test_lease_tokens_are_unguessable_so_guessed_reports_change_nothing(journal: Journal) -> None:
    journal.submit([job(i) for i in range(50)])
    leases = journal.lease(limit=50, visibility=30)
    tokens = {lease.token for lease in leases}
    assert len(tokens) == 50 and all(0 < t < 2**63 for t in tokens)
    assert max(tokens) > 2**40  # random 63-bit integers, not a sequence
    for guess in range(1, 101):
        assert journal.store(leases[0].key, guess, {"title": "forged"}, "h") is False
    assert journal.result_count() == 0


def test_failures_retry_later_die_or_park(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(1), job(2), job(3)])
    a, b, c = journal.lease(limit=3, visibility=30)
    assert journal.fail(a.key, a.token, "TRANSIENT", "503", retry_at=clock.now + 2)
    assert journal.fail(b.key, b.token, "HARD", "404 Not Found", dead=True)
    assert journal.fail(c.key, c.token, "DRIFT", "missing price", park=True)
    assert journal.counts() == {
        "pending": 0,
        "fetching": 0,
        "extracting": 0,
        "stored": 0,
        "retrying": 1,
        "dead": 1,
        "parked": 1,
    }
    assert journal.lease(limit=5, visibility=30) == []
    clock.advance(2)
    assert [lease.key for lease in journal.lease(limit=5, visibility=30)] == [a.key]
    assert journal.job(b.key).reason == "HARD: 404 Not Found"
    assert journal.replay() == 2
    assert journal.counts()["pending"] == 2
    with pytest.raises(ValueError):
        journal.fail(a.key, a.token + 1, "X", "y", retry_at=1, dead=True)


def test_a_batch_is_one_transaction(journal: Journal) -> None:
    journal.submit([job(i) for i in range(3)])
    leases = journal.lease(limit=3, visibility=30)
    with pytest.raises(RuntimeError):
        with journal.batch():
            journal.store(leases[0].key, leases[0].token, {}, "h")
            raise RuntimeError("crash in the middle")
    assert journal.result_count() == 0
    with journal.batch():
        for lease in leases:
            journal.store(lease.key, lease.token, {"n": 1}, "h")
    assert journal.result_count() == 3


def test_poison_jobs_can_be_buried_and_replayed(journal: Journal) -> None:
    journal.submit([job(1)])
    key = job(1).key
    lease = journal.lease(limit=1, visibility=30)[0]
    journal.fail(lease.key, lease.token, "TRANSIENT", "x", retry_at=0)
    assert journal.tries(key) == 1
    assert journal.bury(key, "poison: lost 3 times") is True
    assert journal.job(key).state == "dead"
    assert journal.replay([key]) == 1
    assert journal.job(key).state == "pending" and journal.tries(key) == 0  # a fresh budget
    assert journal.job(key).attempts == 1  # the history is kept


def test_a_job_s_history_tells_its_whole_story(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(1)], batch="b1")
    key = job(1).key
    first = journal.lease(limit=1, visibility=30)[0]
    clock.advance(0.5)
    journal.fail(key, first.token, "TRANSIENT", "HTTP 503", evidence="body: 'busy'", retry_at=clock() + 2)
    clock.advance(2)
    waiting = journal.lease(limit=1, visibility=30)[0]
    assert journal.defer(key, waiting.token, clock() + 1, "breaker open for h: a trial failed") == "deferred"
    clock.advance(1)
    second = journal.lease(limit=1, visibility=30)[0]
    assert second.tries == 2  # the deferred lease was not counted
    journal.store(key, second.token, {"title": "t"}, "hash")
    events = [(e.event, e.attempt) for e in journal.history(key)]
    assert events == [
        ("submitted", None),
        ("leased", 1),
        ("failed", 1),
        ("retrying", 1),
        ("deferred", None),
        ("leased", 2),
        ("stored", 2),
    ]
    story = journal.history(key)
    assert "HTTP 503 | body: 'busy'" in story[2].detail and "breaker open for h" in story[4].detail
    assert journal.result(key)["fields"] == {"title": "t"}  # type: ignore[index]
    assert journal.history("nope") == [] and journal.result("nope") is None


def test_waiting_spends_a_budget_and_then_the_job_is_dead_with_the_reason(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(1)])
    key = job(1).key
    lease = journal.lease(limit=1, visibility=30)[0]
    assert journal.defer(key, lease.token, clock() + 100, "breaker open for h", budget=10) == "deferred"
    assert journal.job(key).due_at == pytest.approx(clock() + 10)  # never waits past the budget
    clock.advance(10)
    lease = journal.lease(limit=1, visibility=30)[0]
    assert (
        journal.defer(key, lease.token, clock() + 5, "breaker open for h: 10 of 10 calls failed", budget=10) == "dead"
    )
    row = journal.job(key)
    assert row.state == "dead" and row.reason.startswith("WAITED") and "10 of 10 calls failed" in row.reason
    assert row.attempts == 0  # waiting never counted as an attempt
    assert journal.replay([key]) == 1
    lease = journal.lease(limit=1, visibility=30)[0]
    assert journal.defer(key, lease.token, clock() + 5, "breaker open for h", budget=10) == "deferred"  # fresh budget


def test_returned_leases_are_due_again_uncounted_and_their_late_reports_are_stale(
    journal: Journal, clock: FakeClock
) -> None:
    journal.submit([job(1)])
    key = job(1).key
    lease = journal.lease(limit=1, visibility=30)[0]
    clock.advance(0.1)
    assert journal.returned(key, lease.token, "no live fetcher at p") is True
    clock.advance(0.1)
    assert journal.returned(key, lease.token, "again") is False
    assert journal.store(key, lease.token, {}, "h") is False
    again = journal.lease(limit=1, visibility=30)[0]
    assert again.attempt == 1 and again.tries == 1
    assert [e.event for e in journal.history(key)] == ["submitted", "returned", "leased"]


def test_a_retried_submission_from_the_same_origin_is_not_its_own_duplicate(journal: Journal) -> None:
    assert journal.submit([job(1)], origin="s1:1") == [True]
    assert journal.submit([job(1)], origin="s1:1") == [True]  # the answer was lost; the retry is accepted
    assert journal.submit([job(1)], origin="s2:1") == [False]
    assert journal.submit([job(1)]) == [False]


def test_batches_report_their_jobs_and_cancel_ends_what_is_not_terminal(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(1), job(2), job(3)], batch="b")
    journal.submit([job(3), job(4)], batch="c")  # 3 is in both batches
    a, b, _, _ = journal.lease(limit=4, visibility=30)
    journal.store(a.key, a.token, {}, "h")
    journal.fail(b.key, b.token, "HARD", "HTTP 404", dead=True)
    report = journal.batch_report("b")
    assert report is not None and report.total == 3 and not report.done
    assert report.states["stored"] == 1 and report.reasons == {"dead HARD: HTTP 404": 1}
    assert journal.cancel(batch="b") == 1  # only job 3 was not terminal
    report = journal.batch_report("b")
    assert report.done and report.reasons == {"dead HARD: HTTP 404": 1, "dead cancelled by an operator": 1}
    assert journal.cancel([job(4).key]) == 1 and journal.batch_report("c").done
    assert journal.batch_report("nope") is None


def test_waiting_jobs_are_due_now_after_a_restart(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(1), job(2)])
    lease, other = journal.lease(limit=2, visibility=30)
    journal.defer(lease.key, lease.token, clock() + 300, "breaker open for h")
    journal.fail(other.key, other.token, "TRANSIENT", "HTTP 503", retry_at=clock() + 300)
    assert journal.wake_waiting() == 1
    assert [leased.key for leased in journal.lease(limit=2, visibility=30)] == [lease.key]


def test_a_replay_takes_the_states_it_is_given_and_named_keys_all_or_none(journal: Journal) -> None:
    from flotilla.actors.pipeline.journal import NotReplayable

    journal.submit([job(1), job(2), job(3)])
    a, b, c = journal.lease(limit=3, visibility=30)
    journal.fail(a.key, a.token, "HARD", "404", dead=True)
    journal.fail(b.key, b.token, "DRIFT", "missing price", park=True)
    with pytest.raises(NotReplayable) as refused:
        journal.replay([a.key, b.key, "nobody"], ("dead",), strict=True)
    assert refused.value.wrong == {b.key: "parked", "nobody": None}
    assert str(refused.value) == f"nothing replayed: not dead: {b.key} (parked), nobody (no such job)"
    with pytest.raises(NotReplayable):
        journal.replay([c.key], ("dead", "parked"), strict=True)  # fetching: not replayable
    assert (journal.job(a.key).state, journal.job(b.key).state) == ("dead", "parked")  # nothing replayed
    assert journal.replay([a.key, b.key], ("dead",)) == 1  # not strict: what is dead goes, the rest stays
    assert journal.replay(states=("dead",)) == 0 and journal.replay(states=("parked",)) == 1
    assert journal.counts()["pending"] == 2


def test_results_in_store_order_page_by_a_cursor_up_to_a_time(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(n) for n in range(5)])
    leases = {lease.key: lease for lease in journal.lease(limit=5, visibility=30)}
    order = [job(n).key for n in (3, 1, 4, 0, 2)]
    for i, key in enumerate(order):
        if i != 2:  # two results stored at the same time: the key orders them
            clock.advance(1)
        journal.store(key, leases[key].token, {"n": i}, "h")
    now = clock.now
    tied = sorted(order[1:3])
    expected = [order[0], *tied, order[3], order[4]]
    page = journal.results_in_store_order((0.0, ""), now, limit=2)
    assert [r["key"] for r in page] == expected[:2]
    rest = journal.results_in_store_order((page[-1]["stored_at"], page[-1]["key"]), now, limit=10)
    assert [r["key"] for r in rest] == expected[2:]
    assert rest[0]["stored_at"] == page[-1]["stored_at"]  # the tie split across pages, nothing lost
    assert [r["key"] for r in journal.results_in_store_order((0.0, ""), now - 1, limit=10)] == expected[:4]
    assert journal.results_in_store_order((0.0, ""), now, rules="article") == []
    assert journal.results_in_store_order((0.0, ""), now, client="someone") == []
