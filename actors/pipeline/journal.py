"""The job journal: every job and every transition of its state machine, in SQLite (WAL) on one
node or in PostgreSQL shared by many (`open_journal`; the engines: journal_sqlite, journal_postgres).

A job is written (and committed) before its submission is acknowledged. Dispatching a job
*leases* it: its state becomes ``fetching`` with a visibility deadline and a fresh lease
token, and its attempt count goes up. Only a report quoting the current lease token can move
the job on, so a late or duplicated report from an earlier attempt changes nothing. A lease
that expires puts the job back to ``pending`` (the attempt is counted as lost). Storing the
result and marking the job ``stored`` happen in one transaction with a conditional put keyed
by the job's natural key: a replay stores nothing twice.

States::

    pending ──lease──▶ fetching ──▶ extracting ──▶ stored
       ▲                  │              │
       │                  ├──────────────┴──▶ retrying (due_at) ──due──▶ pending
       ├──lease expired───┤                └──▶ dead (reason; the dead-letter queue)
       └────deferred──────┘                └──▶ parked (drift: waits for an operator)

A *deferred* lease was handed back unused (the target's breaker is open, the fleet holds, no
rate-limit slot or proxy was available): the job waits, and the attempt is not counted.

The state machine is written once, against `JournalEngine` (actors/pipeline/journal_engine.py);
the schema and its versions are in actors/pipeline/journal_schema.py.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flotilla.actors.core.backoff import backoff_delay
from flotilla.actors.pipeline.journal_engine import Db, JournalEngine, JournalUnavailable
from flotilla.actors.pipeline.journal_schema import DUE, ENDED, OUT, RESULTS_COUNTED, migrate
from flotilla.actors.pipeline.journal_sqlite import SqliteEngine
from flotilla.actors.pipeline.journal_target import JournalTarget
from flotilla.actors.pipeline.urls import canonical_url, natural_key  # noqa: F401 - callers import them from here too

JobState = Literal["pending", "fetching", "extracting", "stored", "retrying", "dead", "parked"]
STATES: tuple[JobState, ...] = ("pending", "fetching", "extracting", "stored", "retrying", "dead", "parked")

TERMINAL: tuple[JobState, ...] = ("stored", "dead", "parked")
"""States a job stays in until an operator replays it."""

CANCELLED = "cancelled by an operator"
"""The reason of a job ended by `cancel`."""


class NotReplayable(ValueError):
    """A replay named jobs that are not in the states it replays (nothing was replayed)."""

    def __init__(self, wrong: dict[str, str | None], states: Sequence[str]) -> None:
        self.wrong = wrong
        """Each such key and its state (None: no such job)."""
        named = ", ".join(f"{key} ({state or 'no such job'})" for key, state in sorted(wrong.items()))
        super().__init__(f"nothing replayed: not {' or '.join(states)}: {named}")


@dataclass(frozen=True)
class NewJob:
    """A job as submitted: its URL, the rules to extract with, and its key."""

    key: str
    url: str
    rules: str
    client: str = ""
    """The intake client that submitted it (the name its key has in the topology)."""


@dataclass(frozen=True)
class Lease:
    """A job handed out for one attempt."""

    key: str
    url: str
    rules: str
    token: int
    attempt: int
    submitted_at: float = 0.0
    """When the job was submitted (wall clock), for end-to-end latency."""
    tries: int = 1
    """Attempts since submission or the last replay, this one included (1: its first)."""


@dataclass(frozen=True)
class JobRow:
    """A job's current state, for queries."""

    key: str
    url: str
    rules: str
    state: JobState
    attempts: int
    due_at: float
    reason: str | None
    updated_at: float


@dataclass(frozen=True)
class JobEvent:
    """One line of a job's story (`Journal.history`)."""

    at: float
    """When (wall clock)."""
    event: str
    """submitted, leased, captured (its page kept), stored, failed, lost, cancelled (an
    attempt's end), or retrying, dead, parked, deferred, returned, replayed, cancelled,
    reextracted (the job's own course)."""
    attempt: int | None
    """The attempt it belongs to, if any."""
    detail: str = ""


@dataclass(frozen=True)
class BatchReport:
    """Where the jobs of one submission stand (`Journal.batch_report`)."""

    batch: str
    total: int
    states: dict[str, int]
    """Jobs of the batch in each state (every state listed)."""
    reasons: dict[str, int]
    """Dead and parked jobs by state and reason, e.g. ``dead HARD: HTTP 404``."""
    started_at: float
    """When the batch's first job was submitted (wall clock)."""
    last_change: float
    """The latest change to any of its jobs."""
    attempts: int
    """Attempts made for its jobs, in all."""

    @property
    def done(self) -> bool:
        """Every job of the batch is stored, dead or parked."""
        return all(self.states.get(state, 0) == 0 for state in STATES if state not in TERMINAL)


@dataclass(frozen=True)
class StoredPage:
    """A stored result and the page it was extracted from (`Journal.stored_pages`)."""

    key: str
    url: str
    content_hash: str
    fields: dict[str, Any]
    revision: int
    page_url: str = ""
    """The URL its page came from, after redirects ("": not recorded, results stored before
    it was; the job's `url` stands for it)."""

    @property
    def base(self) -> str:
        """The URL relative URLs in its fields are joined to: the page's, else the job's."""
        return self.page_url or self.url


@dataclass(frozen=True)
class Pruned:
    """What one `Journal.prune` deleted."""

    jobs: int
    results: int


def _event(db: Db, key: str, at: float, event: str, attempt: int | None, detail: str) -> None:
    db.execute(
        "INSERT INTO events (key, at, event, attempt, detail) VALUES (?, ?, ?, ?, ?)",
        (key, at, event, attempt, detail[:3000]),
    )


def _reason_kind(reason: str) -> str:
    """A reason without its particulars (for grouping): cut at the first " | " or " (" ."""
    for cut in (" | ", " ("):
        reason = reason.split(cut, 1)[0]
    return reason


SUBMIT_CHUNK = 1000
"""Most jobs written by one statement of a submission (9 parameters each: within SQLite's
32,766)."""


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Fenced(RuntimeError):
    """A write quoted a lease's fencing token that is no longer current: a newer owner holds
    the lease, and this writer must stop acting as its owner."""

    def __init__(self, lease: str, token: int, current: int | None) -> None:
        super().__init__(f"lease {lease!r}: token {token} is stale (current: {current})")
        self.lease, self.token, self.current = lease, token, current


class Journal:
    """The jobs and results of a fleet, in a SQLite file or a PostgreSQL database.

    Safe to share between threads. With `durable=True` every commit waits for the disk (SQLite
    `synchronous=FULL`, PostgreSQL `synchronous_commit` on): use it where a commit is promised
    to someone (acknowledging a submission). Otherwise commits survive a crash of the process
    but possibly not a power cut (or a crash of the database server) — which is enough for
    state transitions, since a lost transition only replays an attempt. `with journal.batch():`
    groups many operations in one transaction (on PostgreSQL, the calling thread's: other
    threads use connections of their own meanwhile). The schema is created or migrated on
    open (`journal_schema.migrate`)."""

    def __init__(
        self, where: Path | str | JournalTarget | JournalEngine, *, durable: bool = True, clock: Any = time.time
    ) -> None:
        """`where`: a SQLite path, a `JournalTarget` (either backend) or an open engine."""
        self._engine = where if isinstance(where, JournalEngine) else open_engine(where, durable=durable)
        self._clock = clock
        self.where = self._engine.where
        """The file or ``host:port/dbname`` (for logs)."""
        self.backend = self._engine.backend
        self._job_of = f"(SELECT {self._engine.row_id} FROM jobs WHERE key=?)"  # noqa: S608  constant
        """The SQL of a job's integer id from its key (attempts name jobs by id)."""
        self._fence: tuple[str, int] | None = None
        self._open = threading.local()
        """Per thread: how deep in this journal's transactions it is (0: in none)."""
        try:
            self.schema_version = migrate(self._engine)
        except BaseException:
            self._engine.close()
            raise

    def close(self) -> None:
        self._engine.close()

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` whenever jobs are submitted or replayed through another
        connection — another node's intake — (PostgreSQL; SQLite never calls it: its
        journal has one node). Returns a function that stops listening; `close` stops it too."""
        return self._engine.listen(callback)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run every operation inside the block in one transaction (committed at the end)."""
        with self._transaction():
            yield

    def fence(self, lease: str, token: int) -> None:
        """From now on every transaction that writes to this journal first checks that `token`
        is still the fencing token of `lease` (`flotilla.actors.pipeline.leases`); if another
        owner has taken the lease since, it raises `Fenced` and the transaction is rolled
        back. (Once per transaction, with no lock: a change of owner committed while a batch
        runs is seen by the next one. Holding the lease's row instead would let a router's
        batch delay its own owner's renewal.)"""
        self._fence = (lease, token)

    @contextmanager
    def _transaction(self) -> Iterator[Db]:
        """The calling thread's transaction (the enclosing batch's, if any); a new one is
        checked against the fence first."""
        with self._engine.transaction() as db:
            depth = getattr(self._open, "depth", 0)
            if depth == 0 and self._fence is not None:
                lease, token = self._fence
                row = db.execute("SELECT token FROM owners WHERE name=?", (lease,)).fetchone()
                if row is None or int(row[0]) != token:
                    raise Fenced(lease, token, int(row[0]) if row else None)
            self._open.depth = depth + 1
            try:
                yield db
            finally:
                self._open.depth = depth

    def _write(self, statements: Any) -> Any:
        """Run `statements(db)` in a transaction (the enclosing batch's, if any)."""
        with self._transaction() as db:
            return statements(db)

    # --- submissions ------------------------------------------------------------------------

    def submit(self, jobs: Sequence[NewJob], batch: str = "", origin: str = "") -> list[bool]:
        """Record new jobs (committed to disk before this returns) as part of `batch` (if
        given); for each, True if it is new — or was recorded by this same `origin` before (a
        client's retry of a request whose answer it lost) — and False if a job with that key
        exists already (nothing changes for it but its membership of `batch`)."""
        now = self._clock()

        def insert(db: Db) -> list[bool]:
            row_id = self._engine.row_id
            ids: dict[str, int] = {}  # key -> row id, of every job named
            inserted: set[str] = set()
            first: dict[str, NewJob] = {}
            for job in jobs:
                first.setdefault(job.key, job)
            # in key order: two submissions of overlapping keys take their index entries in the
            # same order (no deadlock between intakes on PostgreSQL)
            for chunk in _chunks(sorted(first.values(), key=lambda job: job.key), SUBMIT_CHUNK):
                rows = ", ".join(["(?, ?, ?, 'pending', ?, ?, ?, ?, ?)"] * len(chunk))
                for key, job_id in db.execute(
                    "INSERT INTO jobs (key, url, rules, state, due_at, origin, created_at, updated_at, client)"  # noqa: S608  placeholders only
                    f" VALUES {rows} ON CONFLICT DO NOTHING RETURNING key, {row_id}",
                    [v for job in chunk for v in (job.key, job.url, job.rules, now, origin, now, now, job.client)],
                ).fetchall():
                    inserted.add(key)
                    ids[key] = job_id
            ours: set[str] = set()  # recorded before by this same origin: a retried request's
            for chunk in _chunks([key for key in first if key not in inserted], SUBMIT_CHUNK):
                for key, job_id, by in db.execute(
                    f"SELECT key, {row_id}, origin FROM jobs WHERE key IN ({', '.join('?' * len(chunk))})",  # noqa: S608  placeholders only
                    list(chunk),
                ).fetchall():
                    ids[key] = job_id
                    if origin and by == origin:
                        ours.add(key)
            fresh, seen = [], set()
            for job in jobs:  # a key given twice in one request is new once, on a retry too
                fresh.append((job.key in inserted or job.key in ours) and job.key not in seen)
                seen.add(job.key)
            if batch:
                for chunk in _chunks(sorted(ids.values()), SUBMIT_CHUNK):
                    db.execute(
                        "INSERT INTO batches (batch, job, added_at) VALUES "  # noqa: S608  placeholders only
                        + ", ".join(["(?, ?, ?)"] * len(chunk))
                        + " ON CONFLICT DO NOTHING",
                        [v for job_id in chunk for v in (batch, job_id, now)],
                    )
            if inserted:
                self._engine.notify_jobs(db)  # routers on other nodes: new jobs are due
            return fresh

        return self._write(insert)

    # --- dispatching ------------------------------------------------------------------------

    def lease(self, limit: int, visibility: float) -> list[Lease]:
        """Hand out up to `limit` jobs that are due, oldest first, each for one attempt that
        must report within `visibility` seconds."""
        now = self._clock()
        engine = self._engine

        def take(db: Db) -> list[Lease]:
            rows = db.execute(
                f"SELECT {engine.row_id}, key, url, rules, attempts, tries, created_at FROM jobs"  # noqa: S608  constant
                f" WHERE {DUE} AND due_at <= ? ORDER BY due_at, {engine.row_id}"
                f" LIMIT ?{engine.skip_locked}",
                (now, limit),
            ).fetchall()
            ids = [row[0] for row in rows]
            leases = [
                # the token is unguessable: only the lease's holder can report on it
                Lease(key, url, rules, secrets.randbits(63), attempts + 1, created_at, tries + 1)
                for _, key, url, rules, attempts, tries, created_at in rows
            ]
            db.executemany(
                "UPDATE jobs SET state='fetching', lease_until=?, lease_token=?, attempts=?,"  # noqa: S608  constant
                f" tries=tries+1, updated_at=? WHERE {engine.row_id}=?",
                [(now + visibility, lease.token, lease.attempt, now, i) for lease, i in zip(leases, ids, strict=True)],
            )
            db.executemany(
                "INSERT INTO attempts (job, attempt, started_at) VALUES (?, ?, ?) ON CONFLICT (job, attempt)"
                " DO UPDATE SET started_at=excluded.started_at, ended_at=NULL, outcome=NULL, detail=NULL",
                [(i, lease.attempt, now) for lease, i in zip(leases, ids, strict=True)],
            )
            return leases

        return self._write(take)

    def next_due(self) -> float | None:
        """When the earliest waiting job becomes due (None if none waits)."""
        with self._engine.reading() as db:
            row = db.execute(f"SELECT MIN(due_at) FROM jobs WHERE {DUE}").fetchone()  # noqa: S608  constant
        return row[0]

    def expire_leases(self) -> list[str]:
        """Put back to pending every job whose lease has run out; return their keys."""
        now = self._clock()

        def expire(db: Db) -> list[str]:
            keys = [
                k
                for (k,) in db.execute(
                    f"SELECT key FROM jobs WHERE {OUT} AND lease_until < ?"  # noqa: S608  constant
                    + self._engine.skip_locked,
                    (now,),
                )
            ]
            for key in keys:
                db.execute(
                    "UPDATE jobs SET state='pending', due_at=?, lost=lost+1, updated_at=? WHERE key=?", (now, now, key)
                )
                db.execute(
                    "UPDATE attempts SET ended_at=?, outcome='lost', detail='lease expired'"  # noqa: S608  constant
                    f" WHERE job={self._job_of} AND attempt=(SELECT attempts FROM jobs WHERE key=?)",
                    (now, key, key),
                )
            return keys

        return self._write(expire)

    def wake_waiting(self) -> int:
        """Make every job that waits (deferred behind a breaker, Hold, a slot or a proxy) due
        now: after a restart, what it waited for may no longer exist. Returns how many."""
        now = self._clock()

        def wake(db: Db) -> int:
            woken = db.execute(
                f"UPDATE jobs SET due_at=? WHERE {DUE} AND state='pending' AND due_at > ?"  # noqa: S608  constant
                " AND reason LIKE 'waiting: %'",
                (now, now),
            ).rowcount
            if woken:
                self._engine.notify_jobs(db)
            return woken

        return self._write(wake)

    # --- reports from an attempt (each quotes its lease token) -------------------------------

    def extracting(self, key: str, token: int) -> bool:
        """The page was fetched; extraction starts. False if the lease is no longer current."""
        now = self._clock()
        return self._write(
            lambda db: (
                db.execute(
                    "UPDATE jobs SET state='extracting', updated_at=?"
                    " WHERE key=? AND lease_token=? AND state='fetching'",
                    (now, key, token),
                ).rowcount
                == 1
            )
        )

    def store(
        self,
        key: str,
        token: int,
        fields: dict[str, Any],
        content_hash: str,
        *,
        captured: bool = False,
        page_url: str = "",
    ) -> bool:
        """Store the result (once per key, ever) and mark the job stored, atomically; with
        `captured`, the attempt records that its page was captured under `content_hash`, and
        the attempt and the result that it came from `page_url` (after redirects). False if the
        lease is no longer current (the report is stale) — nothing changes then."""
        now = self._clock()

        def put(db: Db) -> bool:
            row = db.execute(
                "SELECT url, rules, attempts, client FROM jobs WHERE key=? AND lease_token=?"  # noqa: S608  constant
                f" AND {OUT}" + self._engine.for_update,
                (key, token),
            ).fetchone()
            if row is None:
                return False
            url, rules, attempts, client = row
            db.execute(
                "INSERT INTO results (key, url, rules, fields, content_hash, attempts, stored_at, client, page_url)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    key,
                    url,
                    rules,
                    json.dumps(fields, sort_keys=True),
                    content_hash,
                    attempts,
                    now,
                    client,
                    page_url or None,
                ),
            )
            db.execute(
                "UPDATE jobs SET state='stored', lease_until=NULL, reason=NULL, updated_at=? WHERE key=?", (now, key)
            )
            db.execute(
                "UPDATE attempts SET ended_at=?, outcome='stored', page_hash=?, page_url=?"  # noqa: S608  constant
                f" WHERE job={self._job_of} AND attempt=?",
                (now, content_hash if captured else None, (page_url or None) if captured else None, key, attempts),
            )
            return True

        return self._write(put)

    def fail(
        self,
        key: str,
        token: int,
        outcome: str,
        detail: str,
        *,
        evidence: str = "",
        retry_at: float | None = None,
        dead: bool = False,
        park: bool = False,
        page_hash: str = "",
        page_url: str = "",
    ) -> bool:
        """Record a failed attempt (with its `evidence` in the attempt history, and the
        content hash of the page it captured and the URL that page came from, if any) and decide the job's next state:
        retrying at `retry_at`, dead (the dead-letter queue), or parked. False if the lease is
        no longer current."""
        now = self._clock()
        if sum((retry_at is not None, dead, park)) != 1:
            raise ValueError("exactly one of retry_at, dead, park")
        state = "retrying" if retry_at is not None else "dead" if dead else "parked"

        def record(db: Db) -> bool:
            row = db.execute(
                "SELECT attempts FROM jobs WHERE key=? AND lease_token=? AND state IN ('fetching', 'extracting')"  # noqa: S608  constant
                + self._engine.for_update,
                (key, token),
            ).fetchone()
            if row is None:
                return False
            reason = f"{outcome}: {detail}"[:2000]
            db.execute(
                "UPDATE jobs SET state=?, due_at=?, lease_until=NULL, reason=?, updated_at=? WHERE key=?",
                (state, retry_at if retry_at is not None else now, reason, now, key),
            )
            record_detail = f"{detail} | {evidence}" if evidence else detail
            db.execute(
                "UPDATE attempts SET ended_at=?, outcome=?, detail=?, page_hash=?, page_url=?"  # noqa: S608  constant
                f" WHERE job={self._job_of} AND attempt=?",
                (now, outcome, record_detail[:3000], page_hash or None, page_url or None, key, row[0]),
            )
            after = f"due in {max(0.0, retry_at - now):.1f} s" if retry_at is not None else reason
            _event(db, key, now, state, row[0], after)
            return True

        return self._write(record)

    def defer(
        self, key: str, token: int, until: float, reason: str, budget: float | None = None
    ) -> Literal["deferred", "dead", ""]:
        """Lease `token` was handed back unused (its target may not be asked now): the job
        waits, pending, until `until`, with `reason` as its status; the attempt is not
        counted. With a wait `budget` (seconds), the wait counts against it: the budget runs
        from the job's first such wait (until it is replayed), a wait never reaches past its
        end, and once it is spent the job ends dead instead, the `reason` in its own. Returns
        "deferred", "dead", or "" if the lease is no longer current."""
        now = self._clock()

        def put_back(db: Db) -> Literal["deferred", "dead", ""]:
            row = db.execute(
                "SELECT attempts, waiting_since FROM jobs WHERE key=? AND lease_token=? AND state='fetching'"  # noqa: S608  constant
                + self._engine.for_update,
                (key, token),
            ).fetchone()
            if row is None:
                return ""
            attempt, since = row
            db.execute(f"DELETE FROM attempts WHERE job={self._job_of} AND attempt=?", (key, attempt))  # noqa: S608  constant
            uncount = f"attempts=attempts-1, tries={self._engine.greatest('0', 'tries-1')}, lease_until=NULL"
            if budget is None:
                db.execute(
                    f"UPDATE jobs SET state='pending', due_at=?, {uncount}, reason=?, updated_at=? WHERE key=?",  # noqa: S608  constant
                    (until, f"waiting: {reason}"[:2000], now, key),
                )
                _event(db, key, now, "deferred", None, f"{reason} (due in {max(0.0, until - now):.1f} s)")
                return "deferred"
            since = now if since is None else since
            if now - since >= budget:
                why = f"WAITED: wait budget spent ({now - since:.0f} s of {budget:g} s); last: {reason}"[:2000]
                db.execute(
                    f"UPDATE jobs SET state='dead', {uncount}, reason=?, updated_at=? WHERE key=?",  # noqa: S608  constant
                    (why, now, key),
                )
                _event(db, key, now, "dead", None, why)
                return "dead"
            due = min(until, since + budget)
            db.execute(
                f"UPDATE jobs SET state='pending', due_at=?, {uncount}, waiting_since=?, reason=?,"  # noqa: S608  constant
                " updated_at=? WHERE key=?",
                (due, since, f"waiting: {reason}"[:2000], now, key),
            )
            _event(
                db,
                key,
                now,
                "deferred",
                None,
                f"{reason} (due in {max(0.0, due - now):.1f} s; waited {now - since:.0f} of {budget:g} s)",
            )
            return "deferred"

        return self._write(put_back)

    def returned(self, key: str, token: int, reason: str, delay: float = 0.0) -> bool:
        """Lease `token` never reached a fetcher that could take it (no live fetcher, its node
        went down): the job is due again after `delay` seconds, the attempt is not counted and
        no wait budget is spent. False if the lease is no longer current."""
        now = self._clock()

        def put_back(db: Db) -> bool:
            row = db.execute(
                "SELECT attempts FROM jobs WHERE key=? AND lease_token=? AND state IN ('fetching', 'extracting')"  # noqa: S608  constant
                + self._engine.for_update,
                (key, token),
            ).fetchone()
            if row is None:
                return False
            db.execute(f"DELETE FROM attempts WHERE job={self._job_of} AND attempt=?", (key, row[0]))  # noqa: S608  constant
            db.execute(
                "UPDATE jobs SET state='pending', due_at=?, attempts=attempts-1,"  # noqa: S608  constant
                f" tries={self._engine.greatest('0', 'tries-1')}, lease_token=?, lease_until=NULL, updated_at=?"
                " WHERE key=?",
                (now + delay, secrets.randbits(63), now, key),
            )  # a late report of it is stale
            _event(db, key, now, "returned", None, reason)
            return True

        return self._write(put_back)

    def bury(self, key: str, reason: str) -> bool:
        """Send a job that is not leased to the dead-letter queue (e.g. poison: it was lost
        too many times)."""
        now = self._clock()

        def kill(db: Db) -> bool:
            changed = (
                db.execute(
                    "UPDATE jobs SET state='dead', reason=?, lease_until=NULL, updated_at=? WHERE key=?"
                    " AND state IN ('pending', 'retrying')",
                    (reason[:2000], now, key),
                ).rowcount
                == 1
            )
            if changed:
                _event(db, key, now, "dead", None, reason)
            return changed

        return self._write(kill)

    def replay(
        self,
        keys: Iterable[str] | None = None,
        states: Sequence[JobState] = ("dead", "parked"),
        *,
        strict: bool = False,
    ) -> int:
        """Put jobs in `states` (dead or parked) back to pending — all of them, or those in
        `keys` — with a fresh attempt count and wait budget (their history is kept). With
        `strict`, a named key that is not in one of `states` raises `NotReplayable` and no job
        is replayed."""
        now = self._clock()
        wanted = tuple(state for state in ("dead", "parked") if state in states)
        if not wanted:
            raise ValueError(f"replay takes dead or parked jobs, not {', '.join(states)}")
        among = "state IN (" + ", ".join(f"'{state}'" for state in wanted) + ")"

        def revive(db: Db) -> int:
            chosen = (
                db.execute(f"SELECT key FROM jobs WHERE {ENDED} AND {among}").fetchall()  # noqa: S608  constants
                if keys is None
                else [(key,) for key in dict.fromkeys(keys)]
            )
            if strict and keys is not None:
                found = {
                    key: row[0] if row else None
                    for (key,) in chosen
                    for row in [db.execute("SELECT state FROM jobs WHERE key=?", (key,)).fetchone()]
                }
                wrong = {key: state for key, state in found.items() if state not in wanted}
                if wrong:
                    raise NotReplayable(wrong, wanted)
            total = 0
            for (key,) in chosen:
                if db.execute(
                    "UPDATE jobs SET state='pending', due_at=?, lost=0, tries=0, waiting_since=NULL,"  # noqa: S608  constants
                    f" reason=NULL, updated_at=? WHERE key=? AND {among}",
                    (now, now, key),
                ).rowcount:
                    total += 1
                    _event(db, key, now, "replayed", None, "")
            if total:
                self._engine.notify_jobs(db)  # routers on other nodes: replayed jobs are due
            return total

        return self._write(revive)

    def cancel(self, keys: Iterable[str] | None = None, batch: str | None = None) -> int:
        """End the jobs named by `keys` or `batch` that are not terminal yet: dead, with the
        reason `CANCELLED` (replayable from the dead-letter queue); an attempt in flight is
        ended and its report will be stale. Returns how many were cancelled."""
        now = self._clock()

        def end(db: Db) -> int:
            chosen = list(keys or ())
            if batch is not None:
                chosen += [
                    k
                    for (k,) in db.execute(
                        f"SELECT j.key FROM batches b JOIN jobs j ON j.{self._engine.row_id} = b.job WHERE b.batch=?",  # noqa: S608  constant
                        (batch,),
                    )
                ]
            total = 0
            for key in dict.fromkeys(chosen):
                row = db.execute(
                    "SELECT state, attempts FROM jobs WHERE key=?" + self._engine.for_update,  # noqa: S608  constant
                    (key,),
                ).fetchone()
                if row is None or row[0] in TERMINAL:
                    continue
                if row[0] in ("fetching", "extracting"):
                    db.execute(
                        "UPDATE attempts SET ended_at=?, outcome='cancelled', detail=?"  # noqa: S608  constant
                        f" WHERE job={self._job_of} AND attempt=?",
                        (now, CANCELLED, key, row[1]),
                    )
                db.execute(
                    "UPDATE jobs SET state='dead', reason=?, lease_until=NULL, lease_token=?, updated_at=? WHERE key=?",
                    (CANCELLED, secrets.randbits(63), now, key),
                )
                _event(db, key, now, "cancelled", None, CANCELLED)
                total += 1
            return total

        return self._write(end)

    # --- retention --------------------------------------------------------------------------

    def prune(self, ended_before: dict[str, float], results_before: float | None, limit: int) -> Pruned:
        """Delete, in one transaction, up to `limit` jobs that ended (by state: ``stored``,
        ``dead``, ``parked``) before the time `ended_before` gives for their state — with their
        attempts, events and batch memberships — and up to `limit` results stored before
        `results_before` (None: results are kept). Oldest first; what another pruner is
        deleting meanwhile is passed over."""
        engine = self._engine

        def delete(db: Db) -> Pruned:
            chosen: list[tuple[str, int]] = []
            for state, before in ended_before.items():
                if state not in TERMINAL:
                    raise ValueError(f"only ended jobs are pruned, not {state!r}")
                # The jobs go first, in one statement: a submission of the same key meanwhile
                # waits for this transaction (on PostgreSQL) and then records a new job; were
                # they only locked, it would take them for its duplicates.
                chosen += db.execute(
                    f"DELETE FROM jobs WHERE {engine.row_id} IN (SELECT {engine.row_id} FROM jobs"  # noqa: S608  checked literal
                    f" WHERE {ENDED} AND state = '{state}' AND updated_at < ?"
                    f" ORDER BY updated_at LIMIT ?{engine.skip_locked}) RETURNING key, {engine.row_id}",
                    (before, limit - len(chosen)),
                ).fetchall()
                if len(chosen) >= limit:
                    break
            db.executemany("DELETE FROM events WHERE key=?", [(key,) for key, _ in chosen])
            ids = [(job_id,) for _, job_id in chosen]
            db.executemany("DELETE FROM attempts WHERE job=?", ids)
            db.executemany("DELETE FROM batches WHERE job=?", ids)
            results = 0
            if results_before is not None:
                old = db.execute(
                    f"SELECT key FROM results WHERE stored_at < ? ORDER BY stored_at LIMIT ?{engine.skip_locked}",  # noqa: S608  constant
                    (results_before, limit),
                ).fetchall()
                db.executemany("DELETE FROM results WHERE key=?", old)
                results = len(old)
            return Pruned(len(chosen), results)

        return self._write(delete)

    def fold_counts(self) -> int:
        """Fold the counting rows of connections that are gone into one row per client and
        state (PostgreSQL counts in a row per connection); returns how many rows were folded."""
        if self.backend != "postgresql":
            return 0

        def fold(db: Db) -> int:
            gone = db.execute(
                "DELETE FROM job_counts WHERE slot <> 0 AND slot NOT IN (SELECT pid FROM pg_stat_activity)"
                " RETURNING client, state, n"
            ).fetchall()
            totals: Counter[tuple[str, str]] = Counter()
            for client, state, n in gone:
                totals[(client, state)] += n
            db.executemany(
                "INSERT INTO job_counts (client, state, slot, n) VALUES (?, ?, 0, ?)"
                " ON CONFLICT (client, state, slot) DO UPDATE SET n = job_counts.n + excluded.n",
                [(client, state, n) for (client, state), n in sorted(totals.items())],
            )
            return len(gone)

        return self._write(fold)

    # --- queries ----------------------------------------------------------------------------

    def job(self, key: str, client: str | None = None) -> JobRow | None:
        """The job `key` (None if there is none, or it is not `client`'s when given)."""
        with self._engine.reading() as db:
            row = db.execute(
                "SELECT key, url, rules, state, attempts, due_at, reason, updated_at"
                " FROM jobs WHERE key=? AND (CAST(? AS TEXT) IS NULL OR client=?)",
                (key, client, client),
            ).fetchone()
        return JobRow(*row) if row else None

    def jobs(
        self, state: JobState | None = None, limit: int = 100, after: str = "", client: str | None = None
    ) -> list[JobRow]:
        """Jobs ordered by key, optionally in one state and of one client, after key `after`
        (for paging)."""
        sql = "SELECT key, url, rules, state, attempts, due_at, reason, updated_at FROM jobs WHERE key > ?"
        params: list[Any] = [after]
        if client is not None:
            sql += " AND client = ?"
            params.append(client)
        if state is not None:
            if state not in STATES:
                raise ValueError(f"no job state {state!r}")
            sql += f" AND state = '{state}'"  # a literal (checked above): it lets a partial index serve
            if state in ("dead", "parked"):  # few among many: found through the index of ended jobs
                sql += f" AND {ENDED}"
        sql += " ORDER BY key LIMIT ?"
        params.append(limit)
        with self._engine.reading() as db:
            return [JobRow(*row) for row in db.execute(sql, params)]

    def counts(self, client: str | None = None) -> dict[str, int]:
        """How many jobs (of `client`, if given) are in each state (every state listed): read
        from the counts the journal keeps as jobs move, not by counting jobs."""
        found = self._counted(client)
        return {state: found.get(state, 0) for state in STATES}

    def _counted(self, client: str | None) -> dict[str, int]:
        with self._engine.reading() as db:
            return {
                state: int(n)
                for state, n in db.execute(
                    "SELECT state, SUM(n) FROM job_counts WHERE CAST(? AS TEXT) IS NULL OR client = ? GROUP BY state",
                    (client, client),
                ).fetchall()
            }

    def history(self, key: str) -> list[JobEvent]:
        """The story of job `key`, oldest first: its submission, every attempt (leased, then
        the page it captured, if any, then stored, failed with the evidence, lost or
        cancelled), and every change of course (retrying, deferred with the reason, returned,
        dead, parked, replayed, cancelled, reextracted)."""
        with self._engine.reading() as db:
            job = db.execute("SELECT url, rules, created_at FROM jobs WHERE key=?", (key,)).fetchone()
            if job is None:
                return []
            attempts = db.execute(
                "SELECT attempt, started_at, ended_at, outcome, detail, page_hash"  # noqa: S608  constant
                f" FROM attempts WHERE job={self._job_of}",
                (key,),
            ).fetchall()
            events = db.execute("SELECT at, event, attempt, detail FROM events WHERE key=?", (key,)).fetchall()
        story = [(job[2], 0, JobEvent(job[2], "submitted", None, f"{job[0]} (rules {job[1]})"))]
        for attempt, started, ended, outcome, detail, page_hash in attempts:
            story.append((started, 1, JobEvent(started, "leased", attempt, "")))
            if ended is not None and page_hash:
                story.append((ended, 2, JobEvent(ended, "captured", attempt, f"page sha256:{page_hash}")))
            if ended is not None:
                name = outcome if outcome in ("stored", "lost", "cancelled") else "failed"
                text = f"{outcome}: {detail or ''}" if name == "failed" else detail or ""
                story.append((ended, 2, JobEvent(ended, name, attempt, text)))
        story += [(at, 3, JobEvent(at, event, attempt, detail)) for at, event, attempt, detail in events]
        return [entry for _, _, entry in sorted(story, key=lambda item: (item[0], item[1]))]

    def result(self, key: str) -> dict[str, Any] | None:
        """The stored result of job `key` (as `results` lists them), or None."""
        with self._engine.reading() as db:
            row = db.execute(
                "SELECT key, url, rules, fields, content_hash, attempts, stored_at, revision, extracted_at"
                " FROM results WHERE key=?",
                (key,),
            ).fetchone()
        return None if row is None else _result_row(row)

    def batch_report(self, batch: str, client: str | None = None) -> BatchReport | None:
        """Where the jobs of `batch` (those of `client`, if given) stand (None if no such job
        was submitted in it)."""
        with self._engine.reading() as db:
            rows = db.execute(
                "SELECT j.state, j.reason, j.attempts, j.updated_at, b.added_at FROM batches b"  # noqa: S608  constant
                f" JOIN jobs j ON j.{self._engine.row_id} = b.job"
                " WHERE b.batch=? AND (CAST(? AS TEXT) IS NULL OR j.client=?)",
                (batch, client, client),
            ).fetchall()
        if not rows:
            return None
        states: dict[str, int] = dict.fromkeys(STATES, 0)
        reasons: Counter[str] = Counter()
        for state, reason, _, _, _ in rows:
            states[state] += 1
            if state in ("dead", "parked"):
                reasons[f"{state} {_reason_kind(reason or '')}"] += 1
        return BatchReport(
            batch,
            len(rows),
            states,
            dict(reasons.most_common()),
            min(r[4] for r in rows),
            max(r[3] for r in rows),
            sum(r[2] for r in rows),
        )

    def tries(self, key: str) -> int:
        """Attempts since the job was submitted or last replayed (what the policy counts)."""
        with self._engine.reading() as db:
            row = db.execute("SELECT tries FROM jobs WHERE key=?", (key,)).fetchone()
        return row[0] if row else 0

    def lost_count(self, key: str) -> int:
        with self._engine.reading() as db:
            row = db.execute("SELECT lost FROM jobs WHERE key=?", (key,)).fetchone()
        return row[0] if row else 0

    def attempts(self, key: str) -> list[tuple[int, float, float | None, str | None, str | None]]:
        """The attempt history of a job: (attempt, started, ended, outcome, detail)."""
        with self._engine.reading() as db:
            return db.execute(
                "SELECT attempt, started_at, ended_at, outcome, detail FROM attempts"  # noqa: S608  constant
                f" WHERE job={self._job_of} ORDER BY attempt",
                (key,),
            ).fetchall()

    def results(self, limit: int = 100, after: str = "", client: str | None = None) -> list[dict[str, Any]]:
        """Stored results (of `client`'s jobs, if given) ordered by key, after key `after`
        (for paging)."""
        with self._engine.reading() as db:
            if client is None:
                rows = db.execute(
                    "SELECT key, url, rules, fields, content_hash, attempts, stored_at, revision, extracted_at"
                    " FROM results WHERE key > ? ORDER BY key LIMIT ?",
                    (after, limit),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT key, url, rules, fields, content_hash, attempts, stored_at, revision, extracted_at"
                    " FROM results WHERE key > ? AND client = ? ORDER BY key LIMIT ?",
                    (after, client, limit),
                ).fetchall()
        return [_result_row(row) for row in rows]

    def stored_pages(
        self, rules: str, keys: Sequence[str] | None = None, after: str = "", limit: int = 100
    ) -> list[StoredPage]:
        """The results of rule set `rules` with the page each was extracted from, by key: those
        of `keys` (each looked up; a key without such a result is left out), or every one after
        key `after`, at most `limit`."""
        columns = "SELECT key, url, content_hash, fields, revision, page_url FROM results"
        with self._engine.reading() as db:
            if keys is not None:
                rows = [
                    row
                    for key in keys
                    if (row := db.execute(f"{columns} WHERE key=? AND rules=?", (key, rules)).fetchone()) is not None  # noqa: S608  constant
                ]
            else:
                rows = db.execute(
                    f"{columns} WHERE key > ? AND rules=? ORDER BY key LIMIT ?",  # noqa: S608  constant
                    (after, rules, limit),
                ).fetchall()
        return [
            StoredPage(key, url, digest, json.loads(fields), revision, page_url or "")
            for key, url, digest, fields, revision, page_url in rows
        ]

    def reextracted(self, key: str, content_hash: str, fields: dict[str, Any]) -> int | None:
        """Replace the fields of result `key` by `fields` extracted again from its page
        (`content_hash`, which the result must still have), in one transaction that changes
        the row only if the fields differ: its `revision` goes up by one and the job's story
        gets a ``reextracted`` event. Returns the new revision, or None if nothing changed (the
        same fields: a retried request changes nothing twice)."""
        now = self._clock()
        encoded = json.dumps(fields, sort_keys=True)

        def update(db: Db) -> int | None:
            row = db.execute(
                "UPDATE results SET fields=?, revision=revision+1, extracted_at=?"
                " WHERE key=? AND content_hash=? AND fields<>? RETURNING revision",
                (encoded, now, key, content_hash, encoded),
            ).fetchone()
            if row is None:
                return None
            if db.execute("SELECT 1 FROM jobs WHERE key=?", (key,)).fetchone() is not None:
                _event(db, key, now, "reextracted", None, f"revision {row[0]}: fields from page sha256:{content_hash}")
            return int(row[0])

        return self._write(update)

    def results_in_store_order(
        self,
        after: tuple[float, str],
        until: float,
        limit: int = 100,
        client: str | None = None,
        rules: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored results (of `client`'s jobs and rule set `rules`, if given) in the order they
        were stored — by ``(stored_at, key)`` — after the cursor `after`, stored no later than
        `until` (for exporting: a result stored later is left for the next page)."""
        with self._engine.reading() as db:
            rows = db.execute(
                "SELECT key, url, rules, fields, content_hash, attempts, stored_at, revision, extracted_at FROM results"
                # One range of the stored_at index (results_by_age): the cursor's own time is
                # the range's start, and only its ties are then compared by key.
                " WHERE stored_at >= ? AND stored_at <= ? AND (stored_at > ? OR key > ?)"
                " AND (CAST(? AS TEXT) IS NULL OR client = ?) AND (CAST(? AS TEXT) IS NULL OR rules = ?)"
                " ORDER BY stored_at, key LIMIT ?",
                (after[0], until, after[0], after[1], client, client, rules, rules, limit),
            ).fetchall()
        return [_result_row(row) for row in rows]

    def result_count(self, client: str | None = None) -> int:
        """How many results are stored (for `client`'s jobs, if given)."""
        return self._counted(client).get(RESULTS_COUNTED, 0)


def open_engine(where: Path | str | JournalTarget, *, durable: bool) -> JournalEngine:
    """The engine of `where`: a SQLite path, or a `JournalTarget` of either backend (its
    password read now). Raises `JournalUnavailable` when PostgreSQL cannot be reached and
    `JournalConfigError` when its password cannot be had."""
    target = where if isinstance(where, JournalTarget) else JournalTarget.parse(where)
    if target.path is not None:
        return SqliteEngine(target.path, durable=durable)
    from flotilla.actors.pipeline.journal_postgres import PostgresEngine  # psycopg only where it is used

    url = target.url or ""
    return PostgresEngine(url, where=target.where, password=target.password(), durable=durable)


def open_journal(where: Path | str | JournalTarget, *, durable: bool = True, clock: Any = time.time) -> Journal:
    """The journal at `where` (a SQLite path, a ``postgresql://`` URL without a password, or a
    `JournalTarget`), its schema created or migrated."""
    return Journal(open_engine(where, durable=durable), clock=clock)


def open_journal_patiently(
    target: JournalTarget,
    *,
    durable: bool,
    stop: threading.Event,
    on_retry: Callable[[JournalUnavailable, float], None],
    cap: float = 30.0,
) -> Journal | None:
    """`open_journal(target)`, retried with backoff while its database cannot be reached
    (`on_retry(error, delay)` before each wait) until it opens or `stop` is set (None)."""
    failures = 0
    while not stop.is_set():
        try:
            return open_journal(target, durable=durable)
        except JournalUnavailable as exc:
            delay = backoff_delay(0.5, cap, failures)
            failures += 1
            on_retry(exc, delay)
            stop.wait(delay)
    return None


def _result_row(row: Sequence[Any]) -> dict[str, Any]:
    """A result as `results` and `results_in_store_order` return it, from the columns
    ``key, url, rules, fields, content_hash, attempts, stored_at, revision, extracted_at``
    (a result never re-extracted was extracted when it was stored)."""
    key, url, rules, fields, content_hash, attempts, stored_at, revision, extracted_at = row
    return {
        "key": key,
        "url": url,
        "rules": rules,
        "fields": json.loads(fields),
        "content_hash": content_hash,
        "attempts": attempts,
        "stored_at": stored_at,
        "revision": revision,
        "extracted_at": extracted_at if extracted_at is not None else stored_at,
    }
