"""Raw page capture's parts on real files and real databases: the page store (gzip files named
by the body's hash, private modes, atomic, deduplicated), the journal's version 4 (the page an
attempt captured, results' revisions) migrated from version 3 on SQLite and PostgreSQL, and a
re-extraction that updates a result exactly once."""

from __future__ import annotations

import gzip
import hashlib
import os
import queue
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flotilla.actors import Actor, ActorSystem, ChildSpec, SupervisorSpec
from flotilla.actors.pipeline.captures import CaptureDamaged, CaptureMissing, PageStore
from flotilla.actors.pipeline.extractor import Extractor
from flotilla.actors.pipeline.journal import Journal, NewJob, open_engine, open_journal
from flotilla.actors.pipeline.journal_schema import MIGRATIONS, migrate
from flotilla.actors.pipeline.messages import ExtractJob, JobOutcome
from flotilla.actors.pipeline.rules import ExtractionRules, FieldRule, RuleSet
from flotilla.nodes.config.topology import TopologyError, parse_topology

PAGE = b"<html><body><h1 class='title'>Product 7</h1><span class='price'>$3.10</span></body></html>"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_page_is_kept_gzipped_under_its_hash_in_private_directories(tmp_path: Path) -> None:
    os.umask(0o022)  # a permissive umask: the store's modes must not depend on it
    store = PageStore(tmp_path / "pages")
    digest, written = store.put(PAGE)
    assert digest == hashlib.sha256(PAGE).hexdigest() and written
    path = tmp_path / "pages" / digest[:2] / f"{digest[2:]}.html.gz"
    assert store.path_of(digest) == path
    assert gzip.decompress(path.read_bytes()) == PAGE
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(tmp_path / "pages") == 0o700
    assert store.get(digest) == PAGE
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_the_same_body_is_written_once(tmp_path: Path) -> None:
    store = PageStore(tmp_path)
    digest, _ = store.put(PAGE)
    before = store.path_of(digest).stat().st_mtime_ns
    assert store.put(PAGE, digest) == (digest, False)
    assert store.path_of(digest).stat().st_mtime_ns == before


def test_a_missing_or_altered_page_is_told_apart_from_a_good_one(tmp_path: Path) -> None:
    store = PageStore(tmp_path)
    with pytest.raises(CaptureMissing):
        store.get("0" * 64)
    digest, _ = store.put(PAGE)
    store.path_of(digest).write_bytes(gzip.compress(b"something else"))
    with pytest.raises(CaptureDamaged):
        store.get(digest)
    store.path_of(digest).write_bytes(b"not gzip")
    with pytest.raises(CaptureDamaged):
        store.get(digest)
    with pytest.raises(ValueError, match="not a SHA-256"):
        store.path_of("../../etc/passwd")
    with pytest.raises(CaptureMissing, match="not a SHA-256"):
        store.get("../../etc/passwd")


def test_a_body_that_does_not_match_the_hash_it_came_with_is_not_written(tmp_path: Path) -> None:
    store = PageStore(tmp_path / "pages")
    with pytest.raises(ValueError, match="SHA-256"):
        store.put(PAGE, "0" * 64)
    assert not (tmp_path / "pages").exists()


class Inbox(Actor):
    """Stands in for the router: keeps every outcome the extractor reports."""

    outcomes: queue.Queue[Any] = queue.Queue()

    def on_receive(self, message: Any) -> Any:
        Inbox.outcomes.put(message)


def extract(system: ActorSystem, rules: str, body: bytes) -> JobOutcome:
    digest = hashlib.sha256(body).hexdigest()
    job = ExtractJob("k", "http://h/p", rules, 1, 200, body, digest, "t/root/inbox")
    system.ref("t/root/extractor").tell(job)
    outcome = Inbox.outcomes.get(timeout=20)
    assert isinstance(outcome, JobOutcome)
    return outcome


def test_the_extractor_captures_pages_of_capture_rule_sets_before_it_reports(
    system: ActorSystem, tmp_path: Path
) -> None:
    Inbox.outcomes = queue.Queue()
    fields = {"title": FieldRule("h1.title", required=True), "price": FieldRule(".price", required=True)}
    system.extensions.put(
        ExtractionRules({"kept": RuleSet("kept", fields, capture=True), "plain": RuleSet("plain", fields)})
    )
    store = PageStore(tmp_path / "pages")
    system.extensions.put(store)
    system.start(SupervisorSpec("root", children=(ChildSpec("inbox", Inbox), ChildSpec("extractor", Extractor))))

    stored = extract(system, "kept", PAGE)
    assert stored.failure is None and stored.captured and stored.fields == {"title": "Product 7", "price": "$3.10"}
    assert store.get(stored.content_hash) == PAGE  # on disk when the outcome was told
    drifted_page = PAGE.replace(b"price", b"cost")
    drifted = extract(system, "kept", drifted_page)
    assert drifted.failure is not None and drifted.failure.kind == "DRIFT"
    assert drifted.captured and store.get(drifted.content_hash) == drifted_page  # kept for a look at what changed
    plain_page = PAGE + b"<!-- plain -->"
    plain = extract(system, "plain", plain_page)
    assert plain.failure is None and not plain.captured
    with pytest.raises(CaptureMissing):
        store.get(plain.content_hash)

    # A page that cannot be written is retried later, never stored without its page.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory would be")
    system.extensions.put(PageStore(blocked / "pages"))
    failed = extract(system, "kept", PAGE + b"<!-- new -->")
    assert failed.failure is not None and failed.failure.kind == "TRANSIENT" and not failed.captured
    assert failed.failure.detail.startswith("page capture failed: ")


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "journal.sqlite")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def journal(where: str) -> Iterator[Journal]:
    j = open_journal(where)
    yield j
    j.close()


def stored(
    journal: Journal, key: str, fields: dict[str, str], digest: str, *, captured: bool, page_url: str = ""
) -> None:
    journal.submit([NewJob(key, f"http://h/{key}", "r")])
    lease = journal.lease(1, 30)[0]
    assert journal.store(key, lease.token, fields, digest, captured=captured, page_url=page_url)


def test_a_captured_page_is_recorded_with_its_attempt_and_told_in_the_story(journal: Journal) -> None:
    digest = hashlib.sha256(PAGE).hexdigest()
    stored(journal, "k1", {"title": "t"}, digest, captured=True)
    stored(journal, "k2", {"title": "t"}, digest, captured=False)
    captured = [e for e in journal.history("k1") if e.event == "captured"]
    assert [(e.attempt, e.detail) for e in captured] == [(1, f"page sha256:{digest}")]
    assert [e.event for e in journal.history("k1")][-2:] == ["captured", "stored"]
    assert not any(e.event == "captured" for e in journal.history("k2"))
    journal.submit([NewJob("k3", "http://h/k3", "r")])
    lease = journal.lease(1, 30)[0]
    assert journal.fail("k3", lease.token, "DRIFT", "missing required fields: price", park=True, page_hash=digest)
    assert [e.detail for e in journal.history("k3") if e.event == "captured"] == [f"page sha256:{digest}"]


def test_a_result_is_updated_once_per_change_of_its_fields(journal: Journal) -> None:
    stored(journal, "k1", {"title": "t"}, "h1", captured=True)
    first = journal.result("k1")
    assert first is not None and first["revision"] == 0 and first["extracted_at"] == first["stored_at"]
    assert journal.reextracted("k1", "h1", {"title": "t"}) is None  # the same fields: nothing changes
    assert journal.reextracted("k1", "h1", {"title": "t", "price": "1"}) == 1
    assert journal.reextracted("k1", "h1", {"title": "t", "price": "1"}) is None  # a retry changes nothing twice
    assert journal.reextracted("k1", "other page", {"title": "x"}) is None  # not the page it was stored from
    assert journal.reextracted("nope", "h1", {"title": "x"}) is None
    result = journal.result("k1")
    assert result is not None and result["fields"] == {"title": "t", "price": "1"} and result["revision"] == 1
    assert journal.result_count() == 1
    events = [e for e in journal.history("k1") if e.event == "reextracted"]
    assert [e.detail for e in events] == ["revision 1: fields from page sha256:h1"]
    pages = journal.stored_pages("r")
    assert [(p.key, p.content_hash, p.revision) for p in pages] == [("k1", "h1", 1)]
    assert journal.stored_pages("r", ["k1", "nope"]) == pages
    assert journal.stored_pages("other") == []


def test_a_stored_page_keeps_the_url_it_came_from_after_redirects(journal: Journal) -> None:
    """Relative URLs in its fields were joined to the page's URL: re-extraction joins them to it
    again, also once its job (and its attempts) were pruned; a result without one (stored
    before it was recorded) falls back to the job's URL."""
    stored(journal, "k1", {"title": "t"}, "h1", captured=True, page_url="http://h/products/k1/")
    stored(journal, "k2", {"title": "t"}, "h2", captured=True)
    assert [(p.key, p.page_url, p.base) for p in journal.stored_pages("r")] == [
        ("k1", "http://h/products/k1/", "http://h/products/k1/"),
        ("k2", "", "http://h/k2"),
    ]
    assert journal.prune({"stored": float("inf")}, None, 10).jobs == 2  # the jobs and attempts go, results stay
    assert [p.base for p in journal.stored_pages("r", ["k1"])] == ["http://h/products/k1/"]


def test_a_version_3_journal_gains_page_hashes_and_revisions(where: str) -> None:
    engine = open_engine(where, durable=False)
    migrate(engine, MIGRATIONS[:3])
    with engine.transaction() as db:
        db.execute(
            "INSERT INTO jobs (key, url, rules, state, attempts, due_at, created_at, updated_at)"
            " VALUES ('k', 'http://h/', 'r', 'stored', 1, 0, 0, 5)"
        )
        db.execute(
            f"INSERT INTO attempts (job, attempt, started_at, ended_at, outcome)"  # noqa: S608  constant
            f" SELECT {engine.row_id}, 1, 1, 5, 'stored' FROM jobs WHERE key='k'"
        )
        db.execute(
            "INSERT INTO results (key, url, rules, fields, content_hash, attempts, stored_at)"
            " VALUES ('k', 'http://h/', 'r', '{\"title\": \"t\"}', 'h', 1, 5)"
        )
    engine.close()
    journal = open_journal(where)
    try:
        assert journal.schema_version == 4 == MIGRATIONS[-1].version
        result = journal.result("k")
        assert result is not None and result["revision"] == 0 and result["extracted_at"] == 5
        assert [e.event for e in journal.history("k")] == ["submitted", "leased", "stored"]  # no page: none captured
        (page,) = journal.stored_pages("r")
        assert (page.page_url, page.base) == ("", "http://h/")  # none recorded: the job's URL stands for it
        assert journal.reextracted("k", "h", {"title": "fixed"}) == 1
        journal.submit([NewJob("k2", "http://h/p/2", "r")])  # the new columns are written
        lease = journal.lease(1, 30)[0]
        assert journal.store("k2", lease.token, {"title": "t"}, "h2", captured=True, page_url="http://h/products/2/")
        assert [p.page_url for p in journal.stored_pages("r", ["k2"])] == ["http://h/products/2/"]
    finally:
        journal.close()


def test_the_capture_directory_is_the_topologys_captures_key_else_data_dir_pages(tmp_path: Path) -> None:
    body = (
        "nodes: {a: {}}\ntree: {children: [{id: x, actor: flaky}]}\n"
        "rules: {r: {capture: true, fields: {t: {css: h1}}}}\n"
    )
    default = parse_topology(body, base=tmp_path)
    assert default.capture_dir == tmp_path / "data" / "pages" and default.rules["r"].capture
    chosen = parse_topology(body + "captures: store/pages\n", base=tmp_path)
    assert chosen.capture_dir == tmp_path / "store" / "pages"
    (tmp_path / "file").write_text("")
    with pytest.raises(TopologyError) as refused:
        parse_topology(body + "captures: file/pages\n", base=tmp_path)
    assert [p.path for p in refused.value.problems] == ["captures"]
