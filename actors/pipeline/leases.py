"""Ownership leases in the journal's database: who runs a singleton now, and its fencing token.

A lease names one owner (a node process: its name and boot id) until a deadline. The owner
renews it well before then; anyone may take it once it has run out. Each change of owner
gives a new *fencing token*, larger than every earlier one, so a write or a claim that
quotes an older token can be told apart and refused (`current`). Deadlines are read on the
database's clock where it has one (PostgreSQL), so nodes' clocks do not matter; an owner
measures its own lease from *before* it asked, so it always believes it less long than the
database does.

The table lives beside the jobs (`owners`): one database decides both which jobs are
leased and which node owns the singletons, so no second consensus system is needed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flotilla.actors.core.system import ActorSystem

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS owners (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_at  REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease now (`LeaseTable.holder`)."""

    holder: str
    token: int
    remaining: float
    """Seconds until it runs out (≤ 0: it has, and anyone may take it)."""


@dataclass
class OwnerLease:
    """The newest lease on the tree this node knows of (an extension the node runtime keeps
    current, from its own claims and its peers' heartbeats). Actors of the tree quote `token`
    in their writes, so that those of a tree started under an older lease are refused."""

    name: str
    token: int = 0
    """0 until a lease is known (or without failover)."""

    @classmethod
    def of(cls, system: ActorSystem) -> OwnerLease | None:
        """This node's lease, if the node runs with failover."""
        return system.extensions.get(cls) if cls in system.extensions else None


class LeaseTable:
    """The `owners` table of a SQLite journal (one machine: only nodes that share the file)."""

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SQLITE_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew lease `name` for `holder` for `ttl` seconds. Returns its fencing
        token (unchanged on a renewal, new when it changes hands or had run out), or None
        if another holder's lease is still running."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                row = self._db.execute("SELECT holder, token, expires_at FROM owners WHERE name=?", (name,)).fetchone()
                if row is None:
                    token = 1
                    self._db.execute(
                        "INSERT INTO owners (name, holder, token, expires_at) VALUES (?, ?, ?, ?)",
                        (name, holder, token, now + ttl),
                    )
                elif row[0] == holder and row[2] > now:
                    token = row[1]
                    self._db.execute("UPDATE owners SET expires_at=? WHERE name=?", (now + ttl, name))
                elif row[2] <= now:
                    token = row[1] + 1
                    self._db.execute(
                        "UPDATE owners SET holder=?, token=?, expires_at=? WHERE name=?",
                        (holder, token, now + ttl, name),
                    )
                else:
                    self._db.execute("COMMIT")
                    return None
                self._db.execute("COMMIT")
                return token
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def release(self, name: str, holder: str, token: int) -> bool:
        """End lease `name` now if `holder` holds it under `token` (a stepping-down owner
        lets the next one in at once). False if it did not."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE owners SET expires_at=0 WHERE name=? AND holder=? AND token=?", (name, holder, token)
            )
            return cursor.rowcount == 1

    def holder(self, name: str) -> Holder | None:
        """Who holds lease `name` (or held it last), or None if nobody ever did."""
        with self._lock:
            row = self._db.execute("SELECT holder, token, expires_at FROM owners WHERE name=?", (name,)).fetchone()
        return None if row is None else Holder(row[0], row[1], row[2] - time.time())
