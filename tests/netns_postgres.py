"""A PostgreSQL server inside one host of a `Network` (tests/netns.py), so that cutting a
node off cuts it from the database too.

`initdb` and `postgres` (the binaries of the shared test server, scripts/harness/postgres.py)
run as `nobody` (PostgreSQL refuses root) in a temporary directory handed to that user. Unlike
the shared server, this one runs inside a network namespace: it listens on its host's address,
port 5432, and trusts the superuser from the network's /24 (which exists only inside the
namespaces); its unix socket is in its data directory, where the test process reaches it with
`psql` whatever the network does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from scripts.harness.postgres import SUPERUSER, server_binaries
from tests.netns import Network
from tests.processes import FlotillaProcess

PORT = 5432
START_TIMEOUT = 60.0
SERVER_USER = "nobody"


def postgres_unavailable() -> str | None:
    """Why no PostgreSQL server can be started here (None: it can)."""
    if server_binaries() is None:
        return "PostgreSQL server binaries not found (Debian package 'postgresql'; .ci/run installs it)"
    if shutil.which("setpriv") is None:
        return "no `setpriv` (util-linux) to run the server as an unprivileged user"
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        return f"no user {SERVER_USER!r} to run the server as"
    return None


class NamespacedPostgres:
    """One server in `host` of `network`, with the database `database` made empty."""

    def __init__(self, network: Network, host: str, database: str = "journal") -> None:
        binaries = server_binaries()
        assert binaries is not None, postgres_unavailable()
        self.binaries = binaries
        self.network = network
        self.host = host
        self.database = database
        self.base = Path(tempfile.mkdtemp(prefix="flotilla-netns-pg-"))
        self.data = self.base / "data"
        self.process: FlotillaProcess | None = None
        network.at_close(self.stop)
        try:
            self._init()
            self._start()
            self.psql(f'CREATE DATABASE "{database}"', database="postgres")
        except BaseException:
            self.stop()
            raise

    def _init(self) -> None:
        user = pwd.getpwnam(SERVER_USER)
        self.base.chmod(0o711)  # the server's user passes through, without listing it
        self.data.mkdir(mode=0o700)
        os.chown(self.data, user.pw_uid, user.pw_gid)
        subprocess.run(
            [
                str(self.binaries / "initdb"),
                *("-D", str(self.data), "-U", SUPERUSER),
                *("--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--no-locale", "--no-sync"),
            ],
            check=True,
            capture_output=True,
            cwd=self.base,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            timeout=START_TIMEOUT,
        )
        (self.data / "pg_hba.conf").write_text(
            f"local all all trust\nhost all {SUPERUSER} {self.network.cidr} trust\n", encoding="utf-8"
        )

    def _start(self) -> None:
        user = pwd.getpwnam(SERVER_USER)
        self.process = self.network.start(
            self.host,
            *("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"),
            str(self.binaries / "postgres"),
            *("-D", str(self.data), "-p", str(PORT)),
            *("-c", f"listen_addresses={self.network.address(self.host)}"),
            *("-c", f"unix_socket_directories={self.data}"),
            *("-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"),
        )
        self.process.wait_for_event_line("database system is ready to accept connections", timeout=START_TIMEOUT)

    def url(self) -> str:
        """The URL the nodes use (TCP to the server's host, no password: trusted in the /24)."""
        return f"postgresql://{SUPERUSER}@{self.network.address(self.host)}:{PORT}/{self.database}"

    def psql(self, sql: str, database: str | None = None) -> list[list[str]]:
        """Run `sql` over the unix socket; the rows, each a list of column texts."""
        done = subprocess.run(
            [
                str(self.binaries / "psql"),
                *("-h", str(self.data), "-p", str(PORT), "-U", SUPERUSER, "-d", database or self.database),
                *("-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"psql {sql!r}: {done.stderr}"
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected), then the directory removed."""
        if self.process is not None and self.process.proc.poll() is None:
            self.process.signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.base, ignore_errors=True)
