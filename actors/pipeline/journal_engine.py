"""What the journal needs of a database engine: transactions, reads, a few dialect words and
a way to hear that jobs arrived. `Journal` (actors/pipeline/journal.py) holds the state
machine once; SQLite (`journal_sqlite`) and PostgreSQL (`journal_postgres`) implement this.

Statements are written once, with ``?`` placeholders and SQL both engines speak
(``INSERT ... ON CONFLICT DO NOTHING``, upserts with ``excluded``); the engine's `Db` adapts
the placeholders, and the few words that differ come from the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol


class Rows(Protocol):
    """A statement's result (a DB-API cursor)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """A connection inside a transaction (or reading): statements with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...


class JournalUnavailable(ConnectionError):
    """The journal's database cannot be reached (now): worth retrying later."""


class JournalEngine(ABC):
    """One database holding a journal, shared by the threads of one process."""

    backend: ClassVar[str]
    """``sqlite`` or ``postgresql``."""
    row_id: ClassVar[str]
    """The column of a job's integer id, which also orders jobs as they were submitted (ties
    of `due_at`); batch memberships name jobs by it."""
    skip_locked: ClassVar[str] = ""
    """Appended to the SELECT that picks jobs to lease: rows another transaction is leasing
    are passed over (PostgreSQL), where several writers can lease at once."""
    for_update: ClassVar[str] = ""
    """Appended to a SELECT whose row the transaction then changes (PostgreSQL locks it)."""
    now: ClassVar[str] = "EXTRACT(EPOCH FROM clock_timestamp())"
    """The SQL of the database's clock, in seconds since the epoch (leases are timed by it,
    so the nodes' own clocks do not matter)."""
    where: str
    """The file or ``host:port/dbname``, for logs and errors."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Db]:
        """A transaction, committed at the end of the block (rolled back on an exception).
        Inside one on the same thread, the enclosing transaction is joined."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Db]:
        """A connection to read with: the calling thread's transaction if it has one."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection (and stop every listener)."""

    def greatest(self, a: str, b: str) -> str:
        """The SQL of the larger of two values."""
        return f"GREATEST({a}, {b})"

    def lock_schema(self, db: Db) -> None:
        """Serialise schema changes among the processes opening the journal at once."""
        return None

    def notify_jobs(self, db: Db) -> None:
        """Tell every listener (on any node) that jobs may be due, when `db` commits."""
        return None

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` (on a thread of the engine's) whenever jobs were submitted or
        replayed through any connection; returns a function that stops listening. An engine
        that only one node opens has nothing to hear and never calls it."""
        return lambda: None
