"""The journal on SQLite: one file in WAL mode, one connection per `Journal`, for one node.

A lock serialises the writing connection's use between threads; SQLite serialises writers
across connections (``BEGIN IMMEDIATE``). Threads other than the one in a transaction read
through a second connection (WAL readers never wait for a writer): a metrics scrape or a
query never waits for a router's open batch to commit. With `durable` every commit waits for the disk
(``synchronous=FULL``); otherwise a commit survives a crash of the process but possibly not a
power cut (``synchronous=NORMAL``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flotilla.actors.pipeline.journal_engine import Db, JournalEngine


class SqliteEngine(JournalEngine):
    backend = "sqlite"
    row_id = "id"
    now = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path | str, *, durable: bool) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.where = str(self.path)
        self._lock = threading.RLock()
        self._depth = 0
        self._writer: int | None = None
        """The thread in a transaction (None: none is)."""
        self._db = _connect(self.path)
        _use_wal(self._db)
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._read_lock = threading.Lock()
        self._reader = _connect(self.path)

    def greatest(self, a: str, b: str) -> str:
        return f"MAX({a}, {b})"

    @contextmanager
    def transaction(self) -> Iterator[Db]:
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
                self._writer = threading.get_ident()
            self._depth += 1
            try:
                yield self._connection
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._writer = None
                self._db.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[Db]:
        if self._writer == threading.get_ident():  # it reads what its own transaction wrote
            with self._lock:
                yield self._connection
            return
        with self._read_lock:
            self._reader.execute("BEGIN")  # one snapshot for every statement of the block
            try:
                yield self._reader
            finally:
                self._reader.execute("COMMIT")

    @property
    def _connection(self) -> Any:
        return self._db  # sqlite3 speaks `?` placeholders: it is its own `Db`

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()


CACHE_KIB = 4 * 1024
"""Each connection's page cache (KiB): the hot pages of the indexes; the rest of the file is
in the operating system's cache. A node holds a few connections (its intake's, each router's
and pruner's, each a writer and a reader), so this bounds how much of its memory grows with
the journal."""


WAL_SWITCH_TIMEOUT = 30.0
"""Seconds a new connection keeps trying to switch a fresh file to WAL while others hold it."""


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode (kept in the file: a no-op once it is). SQLite answers "database
    is locked" at once, without its busy handler, when another connection holds the file as
    the mode is switched (several routers opening a fresh journal together), so that is tried
    again until `WAL_SWITCH_TIMEOUT`."""
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA busy_timeout=30000")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return db
