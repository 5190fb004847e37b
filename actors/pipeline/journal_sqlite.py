"""The journal on SQLite: one file in WAL mode, one connection per `Journal`, for one node.

A lock serialises the connection's use between threads; SQLite serialises writers across
connections (``BEGIN IMMEDIATE``). With `durable` every commit waits for the disk
(``synchronous=FULL``); otherwise a commit survives a crash of the process but possibly not a
power cut (``synchronous=NORMAL``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flotilla.actors.pipeline.journal_engine import Db, JournalEngine


class SqliteEngine(JournalEngine):
    backend = "sqlite"
    insertion_order = "rowid"
    now = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path | str, *, durable: bool) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.where = str(self.path)
        self._lock = threading.RLock()
        self._depth = 0
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")

    def greatest(self, a: str, b: str) -> str:
        return f"MAX({a}, {b})"

    @contextmanager
    def transaction(self) -> Iterator[Db]:
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._connection
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[Db]:
        with self._lock:
            yield self._connection

    @property
    def _connection(self) -> Any:
        return self._db  # sqlite3 speaks `?` placeholders: it is its own `Db`

    def close(self) -> None:
        with self._lock:
            self._db.close()
