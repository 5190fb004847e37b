"""The journal's costs stay flat as it grows, on a real SQLite file and a real PostgreSQL
server: counts kept as jobs move (checked against a full count after every kind of move),
the partial indexes its hot statements use, retention's pruning, and reads that never wait
for a writer's open transaction."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flotilla.actors.pipeline.journal import STATES, Journal, NewJob, natural_key, open_journal
from flotilla.actors.pipeline.journal_schema import MIGRATIONS, migrate
from flotilla.actors.pipeline.journal_sqlite import SqliteEngine
from flotilla.actors.pipeline.pruning import DAY, Pruner, Retention, prune_all
from scripts.harness import wait_until
from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "journal.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def journal(where: str, clock: FakeClock) -> Iterator[Journal]:
    j = open_journal(where, clock=clock)
    yield j
    j.close()


def job(n: int, client: str = "") -> NewJob:
    url = f"http://127.0.0.1:8000/product/{n}"
    return NewJob(natural_key(url, "product"), url, "product", client)


def counted_by_scan(journal: Journal, client: str | None = None) -> tuple[dict[str, int], int]:
    """Jobs by state and results, counted the slow way (for comparison)."""
    with journal._engine.reading() as db:  # noqa: SLF001 - the test compares with the tables themselves
        rows = db.execute(
            "SELECT state, COUNT(*) FROM jobs WHERE CAST(? AS TEXT) IS NULL OR client = ? GROUP BY state",
            (client, client),
        ).fetchall()
        results = db.execute(
            "SELECT COUNT(*) FROM results WHERE CAST(? AS TEXT) IS NULL OR client = ?", (client, client)
        ).fetchone()[0]
    found = dict(rows)
    return {state: found.get(state, 0) for state in STATES}, results


def assert_counts_true(journal: Journal) -> None:
    for client in (None, "alice", "bob"):
        states, results = counted_by_scan(journal, client)
        assert journal.counts(client) == states, client
        assert journal.result_count(client) == results, client


def test_counts_follow_every_move_of_the_state_machine(journal: Journal, clock: FakeClock) -> None:
    rng = random.Random(7)
    journal.submit([job(i, rng.choice(["alice", "bob"])) for i in range(200)], batch="b")
    journal.submit([job(i, "alice") for i in range(190, 210)])  # some duplicates
    assert_counts_true(journal)
    for round_ in range(4):
        leases = journal.lease(60, visibility=10)
        with journal.batch():
            for n, lease in enumerate(leases):
                move = n % 6
                if move == 0:
                    journal.store(lease.key, lease.token, {"n": n}, "h")
                elif move == 1:
                    journal.fail(lease.key, lease.token, "TRANSIENT", "503", retry_at=clock() + 1)
                elif move == 2:
                    journal.fail(lease.key, lease.token, "HARD", "404", dead=True)
                elif move == 3:
                    journal.fail(lease.key, lease.token, "DRIFT", "layout", park=True)
                elif move == 4:
                    journal.defer(lease.key, lease.token, clock() + 1, "breaker open", budget=100)
                else:
                    journal.returned(lease.key, lease.token, "node down")
        assert_counts_true(journal)
        clock.advance(11)
        journal.expire_leases()
        if round_ == 1:
            journal.replay()
            journal.cancel(batch="b")
        assert_counts_true(journal)
    assert journal.counts()["stored"] > 0 and journal.result_count() > 0


def test_pruning_deletes_what_ended_long_enough_ago_and_keeps_the_rest(journal: Journal, clock: FakeClock) -> None:
    journal.submit([job(i) for i in range(30)], batch="old")
    leases = journal.lease(30, visibility=10)
    for lease in leases[:20]:
        journal.store(lease.key, lease.token, {"n": 1}, "h")
    for lease in leases[20:25]:
        journal.fail(lease.key, lease.token, "HARD", "404", dead=True)
    stored_keys = {lease.key for lease in leases[:20]}
    clock.advance(2 * DAY)
    journal.submit([job(i) for i in range(100, 110)])  # recent: pending, not pruned
    recent = journal.lease(5, visibility=10)
    for lease in recent:
        journal.store(lease.key, lease.token, {"n": 2}, "h")

    pruned = prune_all(journal, Retention(stored=DAY, dead=None, results=None, batch=7), clock())

    assert pruned.jobs == 20 and pruned.results == 0
    for key in stored_keys:
        assert journal.job(key) is None and journal.history(key) == [] and journal.attempts(key) == []
        assert journal.result(key) is not None  # results are kept
    assert journal.counts()["dead"] == 5 and journal.counts()["stored"] == 5
    assert journal.batch_report("old") is not None and journal.batch_report("old").total == 10
    assert_counts_true(journal)

    # a pruned key submitted again is fetched again, and its result is still stored once
    again = next(iter(stored_keys))
    n = next(i for i in range(30) if job(i).key == again)
    assert journal.submit([job(n)]) == [True]
    lease = next(lease for lease in journal.lease(50, visibility=10) if lease.key == again)
    assert journal.store(lease.key, lease.token, {"n": 3}, "h")
    assert journal.result(again)["fields"] == {"n": 1}
    assert_counts_true(journal)

    clock.advance(2 * DAY)
    pruned = prune_all(journal, Retention(stored=None, dead=DAY, results=DAY, batch=3), clock())
    assert pruned.jobs == 5 and pruned.results == journal.result_count() + pruned.results
    assert journal.counts()["dead"] == 0 and journal.result_count() == 0
    assert_counts_true(journal)


def test_a_pruner_runs_in_the_background_until_stopped(where: str, clock: FakeClock) -> None:
    journal = open_journal(where)
    journal.submit([job(i) for i in range(12)])
    for lease in journal.lease(12, visibility=10):
        journal.store(lease.key, lease.token, {}, "h")
    seen: list[int] = []
    errors: list[BaseException] = []
    # every stored job is older than a millisecond by the time the pruner looks
    pruner = Pruner(
        lambda: open_journal(where, durable=False),
        Retention(stored=0.001, every=0.05, batch=5),
        on_pruned=lambda pruned, _seconds: seen.append(pruned.jobs),
        on_error=errors.append,
    )
    pruner.start()
    try:
        wait_until(lambda: sum(seen) == 12, timeout=10, what="every stored job pruned")
    finally:
        pruner.stop()
    assert not pruner._thread.is_alive()  # noqa: SLF001
    assert errors == [] and journal.counts()["stored"] == 0
    journal.close()


def test_reads_from_other_threads_never_wait_for_an_open_transaction(where: str) -> None:
    writer = open_journal(where, durable=False)
    writer.submit([job(i) for i in range(3)])
    holding, release = threading.Event(), threading.Event()

    def hold_a_batch() -> None:
        with writer.batch():
            writer.lease(1, visibility=10)
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold_a_batch)
    thread.start()
    try:
        assert holding.wait(5)
        answered = threading.Event()
        counts: dict[str, int] = {}

        def read() -> None:
            counts.update(writer.counts())  # the same Journal, as a metrics scrape reads the router's
            answered.set()

        threading.Thread(target=read, daemon=True).start()
        assert answered.wait(2), "a read waited for another thread's open transaction"
        assert counts["pending"] == 3  # the open batch's lease is not seen until it commits
    finally:
        release.set()
        thread.join(10)
    assert writer.counts()["fetching"] == 1
    writer.close()


def plan(path: Path, sql: str, parameters: tuple[object, ...] = ()) -> str:
    with sqlite3.connect(path) as db:
        return " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, parameters))


def test_the_hot_statements_use_the_partial_indexes_on_sqlite(tmp_path: Path) -> None:
    """SQLite uses a partial index only if the statement repeats its terms word for word: a
    changed statement that silently scans a million jobs fails here."""
    path = tmp_path / "journal.sqlite"
    journal = open_journal(path)
    statements: list[str] = []
    journal._engine._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]  # noqa: SLF001
    journal.submit([job(i) for i in range(3)])
    journal.lease(2, visibility=10)
    journal.expire_leases()
    journal._engine._db.set_trace_callback(None)  # type: ignore[attr-defined]  # noqa: SLF001
    lease_sql = next(s for s in statements if "ORDER BY due_at" in s)  # as run, values inlined
    expire_sql = next(s for s in statements if s.startswith("SELECT key FROM jobs WHERE"))
    assert "jobs_due" in plan(path, lease_sql)
    assert "jobs_out" in plan(path, expire_sql)
    assert "jobs_due" in plan(path, "SELECT MIN(due_at) FROM jobs WHERE state IN ('pending', 'retrying')")
    assert "jobs_ended" in plan(
        path,
        "SELECT key FROM jobs WHERE key > ? AND state = 'dead' AND state IN ('stored', 'dead', 'parked')"
        " ORDER BY key LIMIT 5",
        ("",),
    )
    journal.close()


def test_a_version_2_journal_gains_its_counts_and_result_owners(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    engine = SqliteEngine(path, durable=False)
    migrate(engine, MIGRATIONS[:2])
    with engine.transaction() as db:
        for n, (client, state) in enumerate([("a", "pending"), ("a", "stored"), ("b", "stored"), ("b", "dead")]):
            db.execute(
                "INSERT INTO jobs (key, url, rules, state, due_at, created_at, updated_at, client)"
                " VALUES (?, 'http://h/', 'r', ?, 0, 0, 0, ?)",
                (f"k{n}", state, client),
            )
            if state == "stored":
                db.execute(
                    "INSERT INTO results (key, url, rules, fields, content_hash, attempts, stored_at)"
                    " VALUES (?, 'http://h/', 'r', '{}', 'h', 1, 0)",
                    (f"k{n}",),
                )
    engine.close()
    journal = open_journal(path)
    assert journal.schema_version == MIGRATIONS[-1].version
    assert journal.counts("a") == {**dict.fromkeys(STATES, 0), "pending": 1, "stored": 1}
    assert journal.result_count() == 2 and journal.result_count("b") == 1
    assert [r["key"] for r in journal.results(client="b")] == ["k2"]
    assert_counts_true(journal)
    journal.close()


def test_counting_rows_of_closed_connections_fold_into_one(postgres_url: str) -> None:
    writers = [open_journal(postgres_url) for _ in range(3)]
    for n, writer in enumerate(writers):
        writer.submit([job(n * 10 + i, "alice") for i in range(10)])
    for writer in writers[1:]:
        writer.close()
    survivor = writers[0]
    before = survivor.counts("alice")
    with survivor._engine.reading() as db:  # noqa: SLF001 - the test looks at the counting rows
        rows_before = db.execute("SELECT COUNT(*) FROM job_counts").fetchone()[0]
    wait_until(lambda: survivor.fold_counts() >= 0 and _rows(survivor) < rows_before, timeout=10, what="rows folded")
    assert survivor.counts("alice") == before == {**dict.fromkeys(STATES, 0), "pending": 30}
    assert Counter(survivor.counts()) == Counter(before)
    survivor.close()


def _rows(journal: Journal) -> int:
    with journal._engine.reading() as db:  # noqa: SLF001
        return int(db.execute("SELECT COUNT(*) FROM job_counts").fetchone()[0])


def test_jobs_are_found_by_their_integer_id_through_an_index_on_postgresql(postgres_url: str) -> None:
    journal = open_journal(postgres_url)
    journal.submit([job(i) for i in range(3)], batch="b")
    with journal._engine.reading() as db:  # noqa: SLF001 - the test reads the planner's choice
        db.execute("SET enable_seqscan = off")
        plan = " ".join(row[0] for row in db.execute("EXPLAIN UPDATE jobs SET tries = 0 WHERE seq = 1").fetchall())
        db.execute("RESET enable_seqscan")
    assert "jobs_by_seq" in plan
    journal.close()


def test_a_key_submitted_while_its_ended_job_is_being_pruned_is_recorded_anew(postgres_url: str) -> None:
    """The pruner deletes the job itself first: another intake's submission of that key waits
    for the pruner's transaction and then records a new job (it is not told "duplicate" about
    a job that is about to vanish)."""
    intake, pruner = open_journal(postgres_url), open_journal(postgres_url)
    intake.submit([job(1)], batch="first")
    (lease,) = intake.lease(1, visibility=10)
    assert intake.store(lease.key, lease.token, {"n": 1}, "h")
    with ThreadPoolExecutor(1) as submitter:
        with pruner.batch():  # the pruner's transaction, still open
            assert pruner.prune({"stored": time.time() + 1}, None, limit=10).jobs == 1
            answer = submitter.submit(intake.submit, [job(1)], "second")
            assert not futures.wait([answer], timeout=0.3).done  # it waits for the pruner to commit
        assert answer.result(timeout=10) == [True]
    assert intake.job(job(1).key).state == "pending"
    assert intake.batch_report("second").total == 1 and intake.batch_report("first") is None
    assert_counts_true(intake)
    intake.close()
    pruner.close()


def test_a_key_twice_in_one_request_is_new_once_on_its_retry_too(journal: Journal) -> None:
    first = journal.submit([job(1), job(1), job(2)], origin="s:1")
    assert journal.submit([job(1), job(1), job(2)], origin="s:1") == first == [True, False, True]


def _store_order_statements(journal: Journal) -> list[str]:
    """The statements `results_in_store_order` runs, unscoped and scoped by client and by rules."""
    statements: list[str] = []
    reader = journal._engine._reader  # type: ignore[attr-defined]  # noqa: SLF001 - the connection that reads
    reader.set_trace_callback(statements.append)
    for client, rules in ((None, None), ("alice", None), (None, "product"), ("alice", "product")):
        journal.results_in_store_order((5.0, "k"), 1e9, 100, client, rules)
    reader.set_trace_callback(None)
    return [s for s in statements if "ORDER BY stored_at, key" in s]


def test_an_export_page_reads_one_range_of_the_stored_at_index_on_sqlite(tmp_path: Path) -> None:
    """Each page of an export is one range of `results_by_age` from the cursor on, sorted by key
    only among equal times — not a union of index ranges sorted whole, whose cost grows with
    the results left to export (quadratic over an export)."""
    path = tmp_path / "journal.sqlite"
    journal = open_journal(path)
    statements = _store_order_statements(journal)
    assert len(statements) == 4
    for sql in statements:
        found = plan(path, sql)
        assert "USING INDEX results_by_age (stored_at>? AND stored_at<?)" in found, found
        assert "MULTI-INDEX" not in found and "TEMP B-TREE FOR ORDER BY" not in found, found
    journal.close()


def test_an_export_page_reads_one_range_of_the_stored_at_index_on_postgresql(postgres_url: str) -> None:
    """The statement of `results_in_store_order` (the same terms): an index range from the
    cursor's time on, not a scan from the index's start that filters out what was exported."""
    journal = open_journal(postgres_url)
    sql = (
        "EXPLAIN SELECT key FROM results WHERE stored_at >= ? AND stored_at <= ? AND (stored_at > ? OR key > ?)"
        " AND (CAST(? AS TEXT) IS NULL OR client = ?) AND (CAST(? AS TEXT) IS NULL OR rules = ?)"
        " ORDER BY stored_at, key LIMIT 100"
    )
    with journal._engine.reading() as db:  # noqa: SLF001 - the test reads the planner's choice
        db.execute("SET enable_seqscan = off")
        plans = [
            "\n".join(row[0] for row in db.execute(sql, (5.0, 1e9, 5.0, "k", c, c, r, r)).fetchall())
            for c, r in ((None, None), ("alice", "product"))
        ]
        db.execute("RESET enable_seqscan")
    for found in plans:  # the range starts at the cursor, not at the index's first row
        assert "Index Cond: ((stored_at >= " in found and "results_by_age" in found, found
        assert "BitmapOr" not in found, found
    journal.close()
