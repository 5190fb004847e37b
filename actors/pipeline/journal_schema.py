"""The journal's schema, versioned: an ordered list of migrations, applied by whoever opens
the journal (the intake's node, every router), each once, in one transaction.

`schema_version` holds a row per applied migration. A SQLite journal written before versions
existed (its `jobs` table but no `schema_version`) is brought to version 1 by adding the
columns it lacks. A journal whose version is newer than the code's is refused
(`JournalTooNew`): an older node must not write a schema it does not know.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from flotilla.actors.pipeline.journal_engine import Db, JournalEngine

Step = str | Callable[[Db], None]
"""A statement, or a function of the transaction's connection."""


class JournalTooNew(RuntimeError):
    """The journal was migrated by a newer version of Flotilla than this one."""


@dataclass(frozen=True)
class Migration:
    version: int
    does: str
    sqlite: tuple[Step, ...]
    postgresql: tuple[Step, ...]

    def steps(self, backend: str) -> tuple[Step, ...]:
        return self.sqlite if backend == "sqlite" else self.postgresql


def _tables_v1(real: str, bigint: str, key: str, sequence: str, ready: str) -> tuple[str, ...]:
    """Version 1's tables in an engine's words: its floating-point and 64-bit integer types,
    how keys compare, and the column and index that order jobs as they were submitted."""
    return (
        f"""CREATE TABLE IF NOT EXISTS jobs (
    key          TEXT{key} PRIMARY KEY,{sequence}
    url          TEXT NOT NULL,
    rules        TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    tries        INTEGER NOT NULL DEFAULT 0,
    lost         INTEGER NOT NULL DEFAULT 0,
    due_at       {real} NOT NULL,
    lease_until  {real},
    lease_token  {bigint} NOT NULL DEFAULT 0,
    reason       TEXT,
    origin       TEXT NOT NULL DEFAULT '',
    waiting_since {real},
    created_at   {real} NOT NULL,
    updated_at   {real} NOT NULL,
    client       TEXT NOT NULL DEFAULT ''
)""",
        f"CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, due_at{ready})",
        "CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (state, lease_until)",
        f"""CREATE TABLE IF NOT EXISTS attempts (
    key         TEXT{key} NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  {real} NOT NULL,
    ended_at    {real},
    outcome     TEXT,
    detail      TEXT,
    PRIMARY KEY (key, attempt)
)""",
        f"""CREATE TABLE IF NOT EXISTS events (
    key      TEXT{key} NOT NULL,
    at       {real} NOT NULL,
    event    TEXT NOT NULL,
    attempt  INTEGER,
    detail   TEXT NOT NULL DEFAULT ''
)""",
        "CREATE INDEX IF NOT EXISTS events_by_job ON events (key, at)",
        f"""CREATE TABLE IF NOT EXISTS batches (
    batch       TEXT{key} NOT NULL,
    key         TEXT{key} NOT NULL,
    added_at    {real} NOT NULL,
    PRIMARY KEY (batch, key)
)""",
        f"""CREATE TABLE IF NOT EXISTS results (
    key           TEXT{key} PRIMARY KEY,
    url           TEXT NOT NULL,
    rules         TEXT NOT NULL,
    fields        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    stored_at     {real} NOT NULL
)""",
    )


_SQLITE_V1 = _tables_v1("REAL", "INTEGER", "", "", "")  # as the journal was before versions (rowid orders jobs)
# Keys compare byte by byte (COLLATE "C"), as in SQLite, whatever the database's locale.
_POSTGRES_V1 = _tables_v1(
    "DOUBLE PRECISION", "BIGINT", ' COLLATE "C"', "\n    seq          BIGINT GENERATED ALWAYS AS IDENTITY,", ", seq"
)

_OWNERS = """CREATE TABLE IF NOT EXISTS owners (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       {bigint} NOT NULL,
    expires_at  {real} NOT NULL
)"""

UNVERSIONED_ADDITIONS = (
    ("tries", "INTEGER NOT NULL DEFAULT 0"),
    ("origin", "TEXT NOT NULL DEFAULT ''"),
    ("waiting_since", "REAL"),
    ("client", "TEXT NOT NULL DEFAULT ''"),
)
"""Columns of `jobs` added before the schema had versions: an unversioned SQLite journal may
lack some of them."""


DUE = "state IN ('pending', 'retrying')"
"""Jobs waiting to be leased. Statements that look for them repeat this text word for word:
SQLite uses a partial index only for a query whose WHERE holds the index's own terms."""
OUT = "state IN ('fetching', 'extracting')"
"""Jobs leased to an attempt (whose lease may run out)."""
ENDED = "state IN ('stored', 'dead', 'parked')"
"""Jobs that stay where they are until an operator replays them (or retention prunes them)."""
RESULTS_COUNTED = "_results"
"""The `job_counts` row that counts stored results (no job state has this name)."""


_JOB_COLUMNS = (
    "key, url, rules, state, attempts, tries, lost, due_at, lease_until, lease_token, reason, origin,"
    " waiting_since, created_at, updated_at, client"
)


def _sqlite_jobs_with_ids(db: Db) -> None:
    """Give SQLite's jobs an explicit integer id (their rowid until now, which VACUUM may
    renumber; an INTEGER PRIMARY KEY it keeps), the natural key a unique index beside it."""
    jobs = _tables_v1("REAL", "INTEGER", "", "\n    id           INTEGER PRIMARY KEY,", "")[0]
    db.execute(
        jobs.replace("TABLE IF NOT EXISTS jobs", "TABLE jobs_v3", 1).replace(
            "TEXT PRIMARY KEY,", "TEXT NOT NULL UNIQUE,", 1
        )
    )
    db.execute(f"INSERT INTO jobs_v3 (id, {_JOB_COLUMNS}) SELECT rowid, {_JOB_COLUMNS} FROM jobs")  # noqa: S608  constant
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v3 RENAME TO jobs")


def _batches_by_job_id(real: str, bigint: str, key: str, job_id: str) -> tuple[str, ...]:
    """Batch memberships name a job by its integer id: new jobs of a batch append to its
    index instead of landing at random places in it (their keys are hashes)."""
    return (
        f"""CREATE TABLE batches_v3 (
    batch       TEXT{key} NOT NULL,
    job         {bigint} NOT NULL,
    added_at    {real} NOT NULL,
    PRIMARY KEY (batch, job)
)""",
        f"INSERT INTO batches_v3 (batch, job, added_at) SELECT b.batch, j.{job_id}, b.added_at"  # noqa: S608  constant
        " FROM batches b JOIN jobs j ON j.key = b.key",
        "DROP TABLE batches",
        "ALTER TABLE batches_v3 RENAME TO batches",
        "CREATE INDEX IF NOT EXISTS batches_by_job ON batches (job)",
    )


def _attempts_by_job_id(real: str, bigint: str, job_id: str) -> tuple[str, ...]:
    """Attempts name a job by its integer id: a lease's attempts append to their index (jobs
    are leased about in id order) instead of landing at random places in it."""
    return (
        f"""CREATE TABLE attempts_v3 (
    job         {bigint} NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  {real} NOT NULL,
    ended_at    {real},
    outcome     TEXT,
    detail      TEXT,
    PRIMARY KEY (job, attempt)
)""",
        "INSERT INTO attempts_v3 (job, attempt, started_at, ended_at, outcome, detail)"  # noqa: S608  constant
        f" SELECT j.{job_id}, a.attempt, a.started_at, a.ended_at, a.outcome, a.detail"
        " FROM attempts a JOIN jobs j ON j.key = a.key",
        "DROP TABLE attempts",
        "ALTER TABLE attempts_v3 RENAME TO attempts",
    )


def _scale_indexes(order: str) -> tuple[str, ...]:
    """Indexes on the few rows each question needs, so that their cost stays flat as the
    journal grows: due jobs in lease order, leased jobs by deadline, ended jobs by age (for
    pruning; an operator's listing of dead or parked jobs reads it too), batch membership and results
    by job and age. Each index costs every write that touches its rows: there are no others."""
    return (
        "DROP INDEX IF EXISTS jobs_ready",
        "DROP INDEX IF EXISTS jobs_leased",
        f"CREATE INDEX IF NOT EXISTS jobs_due ON jobs (due_at{order}) WHERE {DUE}",
        f"CREATE INDEX IF NOT EXISTS jobs_out ON jobs (lease_until) WHERE {OUT}",
        f"CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (state, updated_at) WHERE {ENDED}",
        "CREATE INDEX IF NOT EXISTS results_by_age ON results (stored_at)",
    )


_COUNTS_TABLE = """CREATE TABLE IF NOT EXISTS job_counts (
    client  TEXT{key} NOT NULL,
    state   TEXT{key} NOT NULL,
    slot    {bigint} NOT NULL,
    n       {bigint} NOT NULL,
    PRIMARY KEY (client, state, slot)
)"""
_COUNTS_FILLED = (
    "INSERT INTO job_counts (client, state, slot, n) SELECT client, state, 0, COUNT(*) FROM jobs"
    " GROUP BY client, state",
    f"INSERT INTO job_counts (client, state, slot, n) SELECT client, '{RESULTS_COUNTED}', 0, COUNT(*)"  # noqa: S608  constant
    " FROM results GROUP BY client",
)
_RESULTS_CLIENT = (
    "ALTER TABLE results ADD COLUMN client TEXT NOT NULL DEFAULT ''",
    "UPDATE results SET client = COALESCE((SELECT j.client FROM jobs j WHERE j.key = results.key), '')",
)


def _sqlite_count(sign: str, row: str, state: str) -> str:
    return (
        f"INSERT INTO job_counts (client, state, slot, n) VALUES ({row}.client, {state}, 0, {sign}1)"  # noqa: S608  constant
        f" ON CONFLICT (client, state, slot) DO UPDATE SET n = n {sign} 1;"
    )


_SQLITE_COUNTING = (
    "CREATE TRIGGER IF NOT EXISTS jobs_counted_in AFTER INSERT ON jobs BEGIN "
    + _sqlite_count("+", "new", "new.state")
    + " END",
    "CREATE TRIGGER IF NOT EXISTS jobs_counted_moved AFTER UPDATE OF state, client ON jobs"
    " WHEN old.state IS NOT new.state OR old.client IS NOT new.client BEGIN "
    + _sqlite_count("-", "old", "old.state")
    + " "
    + _sqlite_count("+", "new", "new.state")
    + " END",
    "CREATE TRIGGER IF NOT EXISTS jobs_counted_out AFTER DELETE ON jobs BEGIN "
    + _sqlite_count("-", "old", "old.state")
    + " END",
    "CREATE TRIGGER IF NOT EXISTS results_counted_in AFTER INSERT ON results BEGIN "
    + _sqlite_count("+", "new", f"'{RESULTS_COUNTED}'")
    + " END",
    "CREATE TRIGGER IF NOT EXISTS results_counted_out AFTER DELETE ON results BEGIN "
    + _sqlite_count("-", "old", f"'{RESULTS_COUNTED}'")
    + " END",
)


# On PostgreSQL each connection counts in rows of its own (`slot` = its backend's pid), so that
# writers never wait for one another on a shared counter row; the pruner folds the rows of
# connections that are gone into slot 0 (`Journal.fold_counts`).
def _postgres_count_function(name: str, state: str) -> str:
    """A trigger function that counts a row of its table under `state` (an expression of the
    row, ``{row}.state``), in the counting rows of the connection that writes it."""

    def counted(sign: str, row: str) -> str:
        return (
            f"INSERT INTO job_counts (client, state, slot, n) VALUES ({row}.client, {state.format(row=row)},"  # noqa: S608  constant
            f" pg_backend_pid(), {sign}1) ON CONFLICT (client, state, slot) DO UPDATE SET n = job_counts.n {sign} 1;"
        )

    return f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        {counted("-", "OLD")}
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        {counted("+", "NEW")}
    END IF;
    RETURN NULL;
END
$$"""


_POSTGRES_COUNTING = (
    _postgres_count_function("flotilla_count_jobs", "{row}.state"),
    _postgres_count_function("flotilla_count_results", f"'{RESULTS_COUNTED}'"),
    "CREATE TRIGGER jobs_counted AFTER INSERT OR DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION flotilla_count_jobs()",
    "CREATE TRIGGER jobs_counted_moved AFTER UPDATE OF state, client ON jobs FOR EACH ROW"
    " WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.client IS DISTINCT FROM NEW.client)"
    " EXECUTE FUNCTION flotilla_count_jobs()",
    "CREATE TRIGGER results_counted AFTER INSERT OR DELETE ON results FOR EACH ROW"
    " EXECUTE FUNCTION flotilla_count_results()",
)


def _captures_and_revisions(real: str) -> tuple[str, ...]:
    """Which page an attempt captured (its content hash; NULL: none) and the URL it came from
    after redirects (`page_url`, which a result keeps too: relative URLs in its fields are
    joined to it, also when they are extracted again after the attempt was pruned; NULL: none
    recorded), and how often a result's fields were changed by re-extraction from its captured
    page (`revision`, 0: as first stored) and when last (`extracted_at`, NULL: never since it
    was stored)."""
    return (
        "ALTER TABLE attempts ADD COLUMN page_hash TEXT",
        "ALTER TABLE attempts ADD COLUMN page_url TEXT",
        "ALTER TABLE results ADD COLUMN page_url TEXT",
        "ALTER TABLE results ADD COLUMN revision INTEGER NOT NULL DEFAULT 0",
        f"ALTER TABLE results ADD COLUMN extracted_at {real}",
    )


def _add_unversioned_columns(db: Db) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    for column, declaration in UNVERSIONED_ADDITIONS:
        if column not in columns:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {declaration}")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs, attempts, events, batches and results",
        (*_SQLITE_V1, _add_unversioned_columns),
        _POSTGRES_V1,
    ),
    Migration(
        2,
        "owners: the leases of singletons and their fencing tokens",
        (_OWNERS.format(real="REAL", bigint="INTEGER"),),
        (_OWNERS.format(real="DOUBLE PRECISION", bigint="BIGINT"),),
    ),
    Migration(
        3,
        "flat costs: partial indexes, counts kept by triggers, results by client, pruning indexes",
        (
            *_RESULTS_CLIENT,
            _sqlite_jobs_with_ids,
            *_batches_by_job_id("REAL", "INTEGER", "", "id"),
            *_attempts_by_job_id("REAL", "INTEGER", "id"),
            *_scale_indexes(""),  # the id (the insertion order) ends every index entry
            _COUNTS_TABLE.format(key="", bigint="INTEGER"),
            *_COUNTS_FILLED,
            *_SQLITE_COUNTING,
        ),
        (
            # every table at once, first: a node of the previous version still writing (jobs, then
            # results) cannot deadlock with this migration
            "LOCK TABLE jobs, attempts, events, batches, results IN ACCESS EXCLUSIVE MODE",
            *_RESULTS_CLIENT,
            "CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_seq ON jobs (seq)",  # a job's integer id
            *_batches_by_job_id("DOUBLE PRECISION", "BIGINT", ' COLLATE "C"', "seq"),
            *_attempts_by_job_id("DOUBLE PRECISION", "BIGINT", "seq"),
            *_scale_indexes(", seq"),
            _COUNTS_TABLE.format(key=' COLLATE "C"', bigint="BIGINT"),
            *_COUNTS_FILLED,
            *_POSTGRES_COUNTING,
        ),
    ),
    Migration(
        4,
        "page capture: the page an attempt captured, results' revisions by re-extraction",
        _captures_and_revisions("REAL"),
        (
            # jobs first: every writer's transaction touches jobs before attempts or results, so a
            # node of the previous version still writing waits here instead of deadlocking
            "LOCK TABLE jobs, attempts, results IN ACCESS EXCLUSIVE MODE",
            *_captures_and_revisions("DOUBLE PRECISION"),
        ),
    ),
)
"""Every migration, in order; append, never edit one that was released."""


def latest_version(migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    return migrations[-1].version if migrations else 0


def migrate(engine: JournalEngine, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the journal's schema to the latest version (creating it if empty) and return
    that version; raise `JournalTooNew` if it is newer than `migrations` know."""
    latest = latest_version(migrations)
    with engine.transaction() as db:
        engine.lock_schema(db)
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL, does TEXT NOT NULL)"
        )
        current = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        if current > latest:
            raise JournalTooNew(
                f"the journal at {engine.where} has schema version {current}, newer than this Flotilla knows "
                f"(up to {latest}): run a Flotilla at least as new as the one that migrated it"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            for step in migration.steps(engine.backend):
                if isinstance(step, str):
                    db.execute(step)
                else:
                    step(db)
            db.execute(
                "INSERT INTO schema_version (version, applied_at, does) VALUES (?, ?, ?)",
                (migration.version, time.time(), migration.does),
            )
    return latest
