"""Node processes on a PostgreSQL journal: the intake on one node, the router on another (they
share the database, not a file), the password from an environment variable; a node that
lacks the variable refuses to start and names it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from flotilla.actors.pipeline.journal_schema import latest_version
from flotilla.nodes.intake.client import IntakeClient
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from scripts.harness.postgres import PostgresServer
from tests.cluster_harness import LiveCluster, make_cluster
from tests.processes import run_flotilla
from tests.test_pipeline_cluster import TREE  # the router on alpha, fetchers and extractors on beta

VARIABLE = "FLOTILLA_TEST_JOURNAL_PASSWORD"

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
intake: {node: beta, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
journal: {url: "%s", password_env: %s}
"""


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess()
    yield process
    process.stop()


@pytest.fixture
def fleet_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A database owned by a role that logs in with a password (the URL has none)."""
    name = postgres_server.create_database("fleet")
    role = f"role_{name}"
    postgres_server.admin(f"CREATE ROLE {role} LOGIN PASSWORD 'correct horse'")
    postgres_server.admin(f'ALTER DATABASE "{name}" OWNER TO {role}')
    yield postgres_server.url(name, user=role)
    postgres_server.drop_database(name)
    postgres_server.admin(f"DROP ROLE {role}")


def test_an_intake_and_a_router_on_different_nodes_share_the_postgresql_journal(
    tmp_path: Path,
    site: DemoSiteProcess,
    clusters: list[LiveCluster],
    fleet_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VARIABLE, "correct horse")  # the nodes inherit it
    cluster = make_cluster(
        tmp_path, TREE, nodes=("alpha", "beta"), extra=EXTRA % (free_ports(1)[0], fleet_database, VARIABLE)
    )
    clusters.append(cluster)
    cluster.start_node("alpha")
    beta = cluster.start_node("beta")
    beta.wait_for_event("intake.listening", timeout=30)
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(f"{site.url}/product/{i}" for i in range(100)) + "\n", encoding="utf-8")
    submitted = run_flotilla("submit", str(urls), "--topology", str(cluster.topology_path))
    assert submitted.returncode == 0, submitted.stderr
    with IntakeClient.for_topology(cluster.topology) as client:
        wait_until(lambda: client.counts().states["stored"] == 100, timeout=60, what="every job stored")
        assert client.counts().results == 100
    with psycopg.connect(fleet_database, password=os.environ[VARIABLE]) as conn:
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone() == (100,)
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (latest_version(),)
    assert not (cluster.topology.node_data_dir("beta") / "journal.sqlite").exists()
    for name in ("alpha", "beta"):
        cluster.processes[name].signal(signal.SIGTERM)
        assert cluster.processes[name].wait(30) == 0


def test_a_node_without_the_password_variable_refuses_to_start_and_names_it(
    tmp_path: Path, clusters: list[LiveCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    url = f"postgresql://fleet@127.0.0.1:{free_ports(1)[0]}/fleet"
    cluster = make_cluster(tmp_path, TREE, nodes=("alpha", "beta"), extra=EXTRA % (free_ports(1)[0], url, VARIABLE))
    clusters.append(cluster)
    beta = cluster.start_node("beta")
    event = beta.wait_for_event("node.bad_journal", timeout=30)
    assert f"the environment variable {VARIABLE} is not set" in event["error"]
    assert beta.wait(30) == 2
