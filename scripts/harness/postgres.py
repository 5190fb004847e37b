"""A throwaway PostgreSQL server for tests and benchmarks: `initdb` and `postgres` in a
temporary directory, listening on a free loopback port (TCP only; its unix socket stays in
that directory), stopped and removed by `stop()`.

PostgreSQL refuses to run as root: when the caller is root the server runs as `nobody`, the
directory handed to it. The superuser `flotilla` connects without a password from 127.0.0.1;
every other role must give its password (scram-sha-256), so a password can be tested for real.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .ports import free_ports

SUPERUSER = "flotilla"
"""The server's superuser (no password from 127.0.0.1)."""
UNPRIVILEGED_USER = "nobody"
"""Who runs the server when the caller is root."""
START_TIMEOUT = 60.0


class PostgresMissing(RuntimeError):
    """The PostgreSQL server binaries (initdb, postgres) are not installed."""


def server_binaries() -> Path | None:
    """The directory holding `initdb` and `postgres` (the newest of /usr/lib/postgresql/*,
    else one on PATH), or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name or 0)
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found and (Path(found).parent / "postgres").exists() else None


class PostgresServer:
    """One running server; `url(database)` to connect, `create_database()` for a fresh one."""

    def __init__(self) -> None:
        binaries = server_binaries()
        if binaries is None:
            raise PostgresMissing(
                "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): "
                "install the Debian package 'postgresql'"
            )
        self.binaries = binaries
        self.port = free_ports(1)[0]
        self.base = Path(tempfile.mkdtemp(prefix="flotilla-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_root = os.geteuid() == 0
        self._count = 0
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._init()
            self._start()
        except BaseException:
            self.stop()
            raise

    def _user(self) -> dict[str, int]:
        if not self._as_root:
            return {}
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}  # type: ignore[dict-item]

    def _init(self) -> None:
        self.data.mkdir()
        self.log.touch()
        if self._as_root:
            entry = pwd.getpwnam(UNPRIVILEGED_USER)
            self.base.chmod(0o711)  # the server's user may pass through, not list
            for path in (self.data, self.log):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(self.binaries / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            cwd=self.base,
            **self._user(),  # type: ignore[arg-type]
        )
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            f"local all all trust\nhost all {SUPERUSER} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binaries / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.data}",
                    "-c",
                    "fsync=off",  # a test server: nothing in it outlives the session
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                **self._user(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + START_TIMEOUT
        import psycopg

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT}s") from None
                time.sleep(0.05)  # polling the server's readiness, with a deadline

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE...)."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, prefix: str = "journal") -> str:
        """A new empty database's name."""
        self._count += 1
        name = f"{prefix}_{os.getpid()}_{self._count}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown; killed if it lingers) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: fast shutdown, clients disconnected
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)
