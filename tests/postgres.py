"""A real PostgreSQL server for the tests: started once per session (in a temporary directory,
on a free loopback port, as `nobody` when the tests run as root), stopped at the end, with a
database of its own for each test that asks (`postgres_url`).

Tests that need it skip, saying why, where the server binaries are not installed (`.ci/run`
installs them where it can).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.harness.postgres import PostgresMissing, PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server."""
    try:
        server = PostgresServer()
    except PostgresMissing as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database (dropped after the test)."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
