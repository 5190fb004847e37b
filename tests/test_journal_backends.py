"""What differs between the journal's engines: several nodes leasing from one PostgreSQL table at
once, NOTIFY waking another node's router, passwords kept out of the topology, and the
versioned schema (an old SQLite journal migrated; a newer one refused) — on real servers."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from flotilla.actors.pipeline.journal import Journal, NewJob, natural_key, open_journal
from flotilla.actors.pipeline.journal_engine import JournalUnavailable
from flotilla.actors.pipeline.journal_schema import MIGRATIONS, JournalTooNew, Migration, latest_version, migrate
from flotilla.actors.pipeline.journal_target import JournalConfigError, JournalTarget
from flotilla.nodes.config.topology import TopologyError, parse_topology
from scripts.harness import free_ports
from scripts.harness.postgres import PostgresServer
from tests.processes import run_flotilla


def job(n: int) -> NewJob:
    url = f"http://127.0.0.1:8000/product/{n}"
    return NewJob(natural_key(url, "product"), url, "product")


def test_two_nodes_leasing_from_one_table_at_once_never_get_the_same_job(postgres_url: str) -> None:
    setup = open_journal(postgres_url)
    total = 2000
    for start in range(0, total, 500):
        setup.submit([job(n) for n in range(start, start + 500)])
    nodes = [open_journal(postgres_url, durable=False) for _ in range(2)]  # two pools, as two nodes have
    leased: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def lease_until_empty(journal: Journal, into: list[str]) -> None:
        try:
            while True:
                leases = journal.lease(limit=7, visibility=60)
                if not leases and journal.counts()["pending"] == 0:
                    return
                into.extend(lease.key for lease in leases)
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=lease_until_empty, args=(nodes[i % 2], leased[i]), name=f"leaser {i}") for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    counted = Counter(key for keys in leased for key in keys)
    assert len(counted) == total and set(counted.values()) == {1}  # each job leased once, by one of them
    assert all(keys for keys in leased)  # every leaser got some: they ran side by side
    assert setup.counts()["fetching"] == total
    for journal in (*nodes, setup):
        journal.close()


def test_a_submission_through_one_node_wakes_a_listener_on_another(postgres_url: str) -> None:
    router_node = open_journal(postgres_url, durable=False)
    intake_node = open_journal(postgres_url)
    woken = threading.Event()
    stop = router_node.listen(woken.set)  # returns once it listens
    intake_node.submit([job(1)])
    assert woken.wait(10), "no notification reached the other journal"
    woken.clear()
    intake_node.submit([job(1)])  # a duplicate: nothing new, nothing notified
    lease = intake_node.lease(1, 30)[0]
    intake_node.fail(lease.key, lease.token, "HARD", "HTTP 404", dead=True)
    assert not woken.wait(0.5)
    assert intake_node.replay() == 1  # a replayed job is due again: routers hear it
    assert woken.wait(10)
    stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("journal listener")]
    router_node.close()
    intake_node.close()


def test_sqlite_listens_to_nothing(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "journal.sqlite")
    called = []
    stop = journal.listen(lambda: called.append(1))
    journal.submit([job(1)])
    stop()
    journal.close()
    assert called == []


def test_an_unversioned_sqlite_journal_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    old = sqlite3.connect(path)  # the first journal's jobs table: before tries, origin, waiting_since, client
    old.execute(
        "CREATE TABLE jobs (key TEXT PRIMARY KEY, url TEXT NOT NULL, rules TEXT NOT NULL, state TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, lost INTEGER NOT NULL DEFAULT 0, due_at REAL NOT NULL,"
        " lease_until REAL, lease_token INTEGER NOT NULL DEFAULT 0, reason TEXT, created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL)"
    )
    old.execute(
        "INSERT INTO jobs (key, url, rules, state, due_at, created_at, updated_at)"
        " VALUES ('k', 'http://h/', 'product', 'pending', 0, 0, 0)"
    )
    old.commit()
    old.close()
    journal = open_journal(path)
    assert journal.schema_version == latest_version()
    assert journal.job("k") is not None and journal.job("k").state == "pending"  # type: ignore[union-attr]
    lease = journal.lease(1, 30)[0]
    assert lease.key == "k" and lease.tries == 1
    journal.close()
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(jobs)")}
    assert {"tries", "origin", "waiting_since", "client"} <= columns
    versions = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v in range(1, latest_version() + 1)]  # each migration once
    open_journal(path).close()  # opening again applies nothing twice


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_apply_once_in_order_and_a_newer_journal_is_refused(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where = str(tmp_path / "journal.sqlite") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    journal = open_journal(where)
    journal.submit([job(1)])
    journal.close()
    newer = latest_version() + 1
    second = Migration(
        newer,
        "an index on jobs by client",
        ("CREATE INDEX jobs_by_client ON jobs (client)",),
        ("CREATE INDEX jobs_by_client ON jobs (client)",),
    )
    journal = open_journal(where)
    engine = journal._engine  # noqa: SLF001 - the migration runner on the journal's own engine
    assert migrate(engine, (*MIGRATIONS, second)) == newer
    assert migrate(engine, (*MIGRATIONS, second)) == newer  # applied once: a second CREATE INDEX would fail
    with pytest.raises(JournalTooNew, match=f"schema version {newer}, newer than this Flotilla knows"):
        migrate(engine, MIGRATIONS)
    journal.close()
    with pytest.raises(JournalTooNew):
        open_journal(where)


def test_a_password_is_never_taken_from_the_url() -> None:
    for url in ("postgresql://flotilla:s3cret@db:5432/fleet", "postgresql://flotilla@db/fleet?password=s3cret"):
        with pytest.raises(JournalConfigError, match="use journal: {url: ..., password_env") as caught:
            JournalTarget.parse(url)
        assert "s3cret" not in str(caught.value)


def test_a_password_file_must_be_the_node_users_alone(tmp_path: Path, postgres_server: PostgresServer) -> None:
    postgres_server.admin("CREATE ROLE fleet LOGIN PASSWORD 'right horse battery'")
    name = postgres_server.create_database()
    postgres_server.admin(f'GRANT ALL ON DATABASE "{name}" TO fleet')
    postgres_server.admin(f'ALTER DATABASE "{name}" OWNER TO fleet')
    url = postgres_server.url(name, user="fleet")
    secret = tmp_path / "journal.password"
    secret.write_text("right horse battery\n")
    secret.chmod(0o644)
    target = JournalTarget(url=url, password_file=secret)
    with pytest.raises(JournalConfigError, match="mode 0644: others could read or change it; chmod 600"):
        open_journal(target)
    secret.chmod(0o600)
    journal = open_journal(target)  # the password authenticates for real (scram-sha-256)
    assert journal.submit([job(1)]) == [True]
    journal.close()
    if os.geteuid() == 0:
        os.chown(secret, 65534, 65534)
        with pytest.raises(JournalConfigError, match="owned by uid 65534, not by the node's user"):
            open_journal(target)
    secret.write_text("wrong\n")
    secret.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(secret, 0, 0)
    with pytest.raises(JournalUnavailable) as refused:
        open_journal(target)
    assert "password authentication failed" in str(refused.value) and "wrong" not in str(refused.value)


VARIABLE = "FLOTILLA_TEST_DB_PASSWORD"
"""The environment variable the password tests name."""


def test_a_missing_password_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    target = JournalTarget(url="postgresql://fleet@127.0.0.1:5432/fleet", password_env=VARIABLE)
    with pytest.raises(JournalConfigError, match="environment variable FLOTILLA_TEST_DB_PASSWORD is not set"):
        open_journal(target)


def test_an_unreachable_server_is_named_by_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_ports(1)[0]  # nothing listens there
    monkeypatch.setenv(VARIABLE, "hunter2")
    target = JournalTarget(url=f"postgresql://fleet@127.0.0.1:{port}/fleet", password_env=VARIABLE)
    with pytest.raises(JournalUnavailable, match=f"cannot connect to the journal at 127.0.0.1:{port}/fleet") as caught:
        open_journal(target)
    assert "hunter2" not in str(caught.value)


def test_a_batch_holds_one_connection_and_leaves_other_threads_free(postgres_url: str) -> None:
    journal = open_journal(postgres_url)
    journal.submit([job(n) for n in range(3)])
    read_meanwhile = threading.Event()
    with journal.batch():
        lease = journal.lease(1, 30)[0]
        journal.store(lease.key, lease.token, {"n": 1}, "h")
        assert journal.result_count() == 1  # the batch's own thread sees its writes

        def count() -> None:
            if journal.result_count() == 0 and journal.counts()["fetching"] == 0:  # not committed yet
                read_meanwhile.set()

        reader = threading.Thread(target=count)
        reader.start()
        reader.join(timeout=10)
        assert read_meanwhile.is_set()
    assert journal.result_count() == 1
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone() == (1,)
    journal.close()


TREE = """
nodes: {alpha: {}, beta: {}}
tree:
  children:
    - {id: extractors, pool: {size: 1, actor: extractor}}
    - {id: fetchers, pool: {size: 1, actor: fetcher, args: {extractor: alpha/root/extractors}}}
    - id: beta_side
      node: beta
      supervisor:
        children:
          - {id: router, actor: router, args: {fetchers: alpha/root/fetchers}}
intake: {node: alpha, address: "tcp://127.0.0.1:7299", router: alpha/root/beta_side/router}
"""


def journal_problems(journal: str) -> list[str]:
    with pytest.raises(TopologyError) as raised:
        parse_topology(TREE + journal, "t.yaml")
    return [p.format("t.yaml") for p in raised.value.problems]


def test_the_topology_names_the_journal_and_never_its_password(tmp_path: Path) -> None:
    on_alpha = TREE.replace("alpha/root/beta_side/router", "alpha/root/fetchers")  # the intake wakes a path on alpha
    default = parse_topology(on_alpha, "t.yaml", tmp_path)
    assert default.journal is None  # the default: each node's own SQLite file
    assert default.journal_of("alpha") == JournalTarget(path=tmp_path / "data" / "alpha" / "journal.sqlite")
    shared = parse_topology(TREE + "journal: postgresql://fleet@db.internal:5433/jobs\n", "t.yaml", tmp_path)
    assert shared.journal == JournalTarget(url="postgresql://fleet@db.internal:5433/jobs")
    assert shared.journal.where == "db.internal:5433/jobs"  # type: ignore[union-attr]
    # with PostgreSQL the intake's router may run on another node: the database is shared
    secret = parse_topology(
        TREE + "journal: {url: 'postgresql://fleet@db/jobs', password_file: secrets/db}\n", "t.yaml", tmp_path
    )
    assert secret.journal == JournalTarget(url="postgresql://fleet@db/jobs", password_file=tmp_path / "secrets" / "db")
    local = parse_topology(on_alpha + "journal: shared/jobs.sqlite\n", "t.yaml", tmp_path)
    assert local.journal == JournalTarget(path=tmp_path / "shared" / "jobs.sqlite")


def test_journal_mistakes_are_reported_with_their_line() -> None:
    line = TREE.count("\n") + 1
    assert journal_problems("journal: postgresql://fleet:hunter2@db/jobs\n") == [
        f"t.yaml:{line}: journal: the URL carries a password: never write it in the topology; "
        "use journal: {url: ..., password_env: NAME} or password_file: PATH"
    ]
    assert journal_problems("journal:\n  url: postgresql://fleet@db/jobs\n  password_env: 2BAD\n") == [
        f"t.yaml:{line + 2}: journal.password_env: '2BAD' must be the name of an environment variable "
        "(letters, digits, _)"
    ]
    assert journal_problems("journal: {url: 'postgresql://fleet@db/', pasword_env: X}\n") == [
        f"t.yaml:{line}: journal.pasword_env: unknown key; did you mean 'password_env'? "
        "(allowed: url, password_env, password_file)",
        f"t.yaml:{line}: journal.url: the URL names no database (postgresql://user@host:port/dbname)",
    ]
    assert journal_problems("journal: {url: jobs.sqlite, password_env: X}\n") == [
        f"t.yaml:{line}: journal: password_env and password_file apply to a PostgreSQL journal only"
    ]
    assert journal_problems("journal: [a]\n") == [
        f"t.yaml:{line}: journal: must be a URL, a path or a mapping {{url, password_env, password_file}}, not a list"
    ]
    # SQLite: the router shares the intake's file, so it must run on the intake's node
    assert any("not on the intake's node alpha" in p for p in journal_problems(""))


def test_flotilla_check_reports_a_password_in_the_url_with_its_line(tmp_path: Path) -> None:
    topology = tmp_path / "tree.yaml"
    topology.write_text(TREE + "journal: postgresql://fleet:hunter2@db/jobs\n", encoding="utf-8")
    result = run_flotilla("check", str(topology))
    assert result.returncode == 2
    assert f"{topology}:{TREE.count(chr(10)) + 1}: journal: the URL carries a password" in result.stderr
    assert "hunter2" not in result.stderr
    topology.write_text(TREE + "journal: {url: 'postgresql://fleet@db/jobs', password_env: DB_PASSWORD}\n")
    result = run_flotilla("check", str(topology))
    assert result.returncode == 0, result.stderr
    assert "journal: PostgreSQL at db:5432/jobs (password from $DB_PASSWORD)" in result.stdout
