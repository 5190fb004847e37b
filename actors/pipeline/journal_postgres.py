"""The journal on PostgreSQL (psycopg 3 and its pool), shared by the nodes of a cluster.

Each thread's transaction holds one pooled connection for its whole length (the router's
`with journal.batch():` of many writes), so other threads are never blocked by it: they take
their own connection. Reads outside a transaction run on a pooled connection in autocommit.
With `durable` every commit waits for the WAL to be flushed (``synchronous_commit`` on, the
server's default); otherwise the journal's sessions set ``synchronous_commit = off``: a crash
of the server may lose the last moments of transitions (never corrupt anything), which only
replays attempts.

Submissions and replays ``NOTIFY flotilla_jobs`` in their transaction; `listen` keeps a
dedicated connection LISTENing on a thread and calls back on each notification, reconnecting
(and calling back once, for what it may have missed) after a lost connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from flotilla.actors.pipeline.journal_engine import Db, JournalEngine, JournalUnavailable, Rows

CHANNEL = "flotilla_jobs"
"""The channel submissions and replays notify."""
POOL_SIZE = 8
"""Most connections one `Journal` holds at once."""
CONNECT_TIMEOUT = 5
LINK_SETTINGS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}
"""libpq settings of every connection unless the URL sets them: a link that drops every packet
(a partition) fails a call within about 15 s instead of leaving it hanging for the kernel's
default of many minutes."""
"""Seconds a connection attempt may take."""
LISTEN_POLL = 0.25
"""How often a listener looks whether it should stop (seconds)."""
RECONNECT_CAP = 10.0
"""Longest wait between a listener's reconnection attempts (seconds)."""
SCHEMA_LOCK = 0x666C6F74696C6C61  # "flotilla" as a 64-bit advisory lock key
"""The advisory lock held while the schema is checked and migrated."""

_log = structlog.get_logger("flotilla.journal")


@lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """The statement with psycopg's placeholders (``%s``; a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgDb:
    """A psycopg connection speaking ``?`` placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        return self.conn.execute(_placeholders(sql), parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), seq_of_parameters)


class PostgresEngine(JournalEngine):
    backend = "postgresql"
    row_id = "seq"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"

    def __init__(self, url: str, *, where: str, password: str | None = None, durable: bool) -> None:
        """Connect to `url` (`where` names it in errors: never the password); raises
        `JournalUnavailable` with the server's reason when it cannot be reached."""
        self.where = where
        given = psycopg.conninfo.conninfo_to_dict(url)
        link = {name: value for name, value in LINK_SETTINGS.items() if name not in given}  # the URL's own win
        self.conninfo = psycopg.conninfo.make_conninfo(url, **link, **({"password": password} if password else {}))
        self._local = threading.local()
        self._listeners: list[_Listener] = []
        try:
            psycopg.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT).close()  # the reason, if any
        except psycopg.OperationalError as exc:
            raise JournalUnavailable(f"cannot connect to the journal at {where}: {_reason(exc)}") from None

        def configure(conn: psycopg.Connection[Any]) -> None:
            if not durable:
                conn.execute("SET synchronous_commit = off")

        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            configure=configure,
            check=ConnectionPool.check_connection,
            open=False,
            name=f"journal {where}",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        except Exception as exc:  # noqa: BLE001 - PoolTimeout or a connection error
            self._pool.close()
            raise JournalUnavailable(f"cannot connect to the journal at {where}: {exc}") from None

    def transaction(self) -> AbstractContextManager[Db]:
        return self._connection(transaction=True)

    def reading(self) -> AbstractContextManager[Db]:
        return self._connection(transaction=False)

    @contextmanager
    def _connection(self, *, transaction: bool) -> Iterator[Db]:
        """The calling thread's transaction if it has one; else a pooled connection, in a
        transaction of its own (`transaction`) or in autocommit."""
        held: _PgDb | None = getattr(self._local, "db", None)
        if held is not None:
            yield held
            return
        with self._pool.connection() as conn:
            if not transaction:
                yield _PgDb(conn)
                return
            with conn.transaction():
                self._local.db = _PgDb(conn)
                try:
                    yield self._local.db
                finally:
                    self._local.db = None

    def lock_schema(self, db: Db) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))

    def notify_jobs(self, db: Db) -> None:
        db.execute(f"NOTIFY {CHANNEL}")

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Returns once the listener LISTENs (or, if the server cannot be reached now, after
        `CONNECT_TIMEOUT` seconds: it keeps trying)."""
        listener = _Listener(self.conninfo, self.where, callback)
        self._listeners.append(listener)
        listener.start()
        listener.listening.wait(CONNECT_TIMEOUT)
        return listener.stop

    def close(self) -> None:
        for listener in self._listeners:
            listener.stop()
        self._pool.close()


class _Listener:
    """A thread LISTENing on its own connection; `callback()` on each notification."""

    def __init__(self, conninfo: str, where: str, callback: Callable[[], None]) -> None:
        self.conninfo = conninfo
        self.where = where
        self.callback = callback
        self.stopping = threading.Event()
        self.listening = threading.Event()
        """Set while its connection LISTENs."""
        self.thread = threading.Thread(target=self._run, name=f"journal listener {where}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if failures:
                        _log.info("journal.listening_again", where=self.where)
                        self.callback()  # what was notified while it was away
                    failures = 0
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=LISTEN_POLL):
                            self.callback()
            except psycopg.Error as exc:
                self.listening.clear()
                failures += 1
                delay = min(RECONNECT_CAP, 0.5 * 2 ** min(failures - 1, 10))
                if failures == 1:
                    _log.warning("journal.listen_lost", where=self.where, error=_reason(exc), retry_in=delay)
                self.stopping.wait(delay)
        self.listening.clear()


def _reason(exc: BaseException) -> str:
    """The server's or libpq's message, on one line."""
    return " ".join(str(exc).split())
