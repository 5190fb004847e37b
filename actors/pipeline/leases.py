"""Ownership leases in the journal's database: who runs a singleton now, and its fencing token.

A lease names one owner (a node process: its name and boot id) until a deadline. The owner
renews it well before then; anyone may take it once it has run out. Each change of owner
gives a new *fencing token*, larger than every earlier one, so a write that quotes an older
token is refused (`Journal.fence`). Deadlines are read on the database's clock, so the
nodes' clocks do not matter; an owner measures its own lease from *before* it asked, so it
always believes it for less long than the database does.

The table lives beside the jobs (`owners`): one database decides both which jobs are
leased and which node owns the singletons, so no second consensus system is needed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flotilla.actors.pipeline.journal import open_engine
from flotilla.actors.pipeline.journal_engine import JournalEngine, JournalUnavailable
from flotilla.actors.pipeline.journal_schema import migrate
from flotilla.actors.pipeline.journal_target import JournalTarget

if TYPE_CHECKING:
    from flotilla.actors.core.system import ActorSystem


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
    """The `owners` table of a journal (its own connection to the journal's database)."""

    def __init__(self, where: Path | str | JournalTarget) -> None:
        """The table in the journal at `where`, opened (and its schema migrated) on first use,
        so that a database out of reach now fails a call, to be tried again, not the node."""
        self._target = where
        self._lock = threading.Lock()
        self._opened: JournalEngine | None = None
        self._closed = False

    @property
    def _engine(self) -> JournalEngine:
        with self._lock:
            if self._closed:
                raise JournalUnavailable("the lease table is closed")
            if self._opened is None:
                engine = open_engine(self._target, durable=True)
                try:
                    migrate(engine)
                except BaseException:
                    engine.close()
                    raise
                self._opened = engine
            return self._opened

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._opened is not None:
                self._opened.close()

    def claim(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew lease `name` for `holder` for `ttl` seconds. Returns its fencing
        token (unchanged on a renewal, a new one when it changes hands or had run out), or
        None if another holder's lease is still running."""
        engine = self._engine
        with engine.transaction() as db:
            db.execute(
                "INSERT INTO owners (name, holder, token, expires_at) VALUES (?, '', 0, 0) ON CONFLICT DO NOTHING",
                (name,),
            )
            row = db.execute(
                f"SELECT holder, token, expires_at > {engine.now} FROM owners WHERE name=?{engine.for_update}",  # noqa: S608  constant
                (name,),
            ).fetchone()
            current_holder, token, running = row[0], int(row[1]), bool(row[2])
            if running and current_holder != holder:
                return None
            if not running:
                token += 1  # a new owner, or the same one after its lease ran out: a new token
            db.execute(
                f"UPDATE owners SET holder=?, token=?, expires_at={engine.now} + ? WHERE name=?",  # noqa: S608  constant
                (holder, token, ttl, name),
            )
            return token

    def release(self, name: str, holder: str, token: int) -> bool:
        """End lease `name` now if `holder` holds it under `token` (a stepping-down owner
        lets the next one in at once). False if it did not hold it."""
        with self._engine.transaction() as db:
            cursor = db.execute(
                "UPDATE owners SET expires_at=0 WHERE name=? AND holder=? AND token=?", (name, holder, token)
            )
            return cursor.rowcount == 1

    def holder(self, name: str) -> Holder | None:
        """Who holds lease `name` (or held it last), or None if nobody ever did."""
        engine = self._engine
        with engine.reading() as db:
            row = db.execute(
                f"SELECT holder, token, expires_at - {engine.now} FROM owners WHERE name=?",  # noqa: S608  constant
                (name,),
            ).fetchone()
        return None if row is None or not row[0] else Holder(row[0], int(row[1]), float(row[2]))
