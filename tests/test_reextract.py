"""Raw page capture and `flotilla reextract` as an operator uses them: a real node crawls the
real demo site with a rule set that captures its pages, the rules are fixed, the node is
restarted, and re-extraction from the captured pages changes each result by key exactly once —
with not one request reaching the site (counted there)."""

from __future__ import annotations

import gzip
import hashlib
import json
import queue
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flotilla.actors.pipeline.captures import PageStore
from flotilla.actors.pipeline.journal import NewJob, open_journal
from flotilla.actors.pipeline.rules import FieldRule, RuleSet
from flotilla.actors.resilience.messages import HoldMode, HoldStatus
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import Reextract, Reextracted, answer_decoder
from flotilla.nodes.intake.server import REEXTRACT_BUDGET, Intake
from flotilla.nodes.serving.router_server import Later
from scripts.demo_site import product
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, make_cluster
from tests.processes import run_flotilla
from tests.test_intake import key_of, make_access

TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers, max_attempts: 2, transient_base: 0.05, visibility: 10}
  - id: extractors
    pool: {actor: extractor, size: 1}
  - id: fetchers
    pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/extractors, timeout: 5.0}}
"""

BROKEN_RULES = """
rules:
  product:
    capture: true
    fields:
      title: {css: h1, required: true}
      price: {css: .cost}
"""
FIXED_RULES = """
rules:
  product:
    capture: true
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true}
      sku: {css: .sku, attr: data-sku}
"""
INTAKE = """
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
"""


@pytest.fixture
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess()
    yield process
    process.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LiveCluster]:
    live = make_cluster(tmp_path, TREE, nodes=("alpha",), extra=BROKEN_RULES + INTAKE % free_ports(1)[0])
    try:
        live.start_node("alpha").wait_for_event("intake.listening", timeout=30)
        yield live
    finally:
        live.stop()


def flotilla(cluster: LiveCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return run_flotilla(*args, "--topology", str(cluster.topology_path), timeout=60)


def results(cluster: LiveCluster) -> dict[str, dict[str, Any]]:
    listed = flotilla(cluster, "results")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    by_key = {row["key"]: row for row in rows}
    assert len(by_key) == len(rows)  # one result per key
    return by_key


def restart_with(cluster: LiveCluster, old: str, new: str) -> None:
    """Stop the node, change its topology's rules, start it again."""
    node = cluster.processes["alpha"]
    node.signal(signal.SIGTERM)
    assert node.wait(30) == 0
    text = cluster.topology_path.read_text(encoding="utf-8")
    assert old in text
    cluster.topology_path.write_text(text.replace(old, new), encoding="utf-8")
    cluster.start_node("alpha").wait_for_event("intake.listening", timeout=30)


def test_reextract_fixes_results_from_captured_pages_once_without_a_request_to_the_site(
    cluster: LiveCluster, site: DemoSiteProcess
) -> None:
    numbers = [1, 2, 3, 4]
    urls = [f"{site.url}/product/{n}" for n in numbers] + [f"{site.url}/drift/1"]
    submitted = flotilla(cluster, "submit", *urls, "--rules", "product", "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    keys = [line.split()[1] for line in submitted.stdout.splitlines() if line.startswith("accepted ")]
    assert len(keys) == len(urls)
    product_keys, drift_key = keys[:4], keys[4]

    # Every page is captured: gzip of the very body, named by its hash, private.
    pages = cluster.topology_path.parent / "data" / "pages"
    assert stat.S_IMODE(pages.stat().st_mode) == 0o700
    before = results(cluster)
    assert [before[key]["fields"] for key in product_keys] == [{"title": f"Product {n}"} for n in numbers]  # no price
    assert before[drift_key]["fields"] == {"title": "Product 1", "price": "1"}
    for n, key in zip(numbers, product_keys, strict=True):
        body = product(n).encode()
        digest = hashlib.sha256(body).hexdigest()
        assert before[key]["content_hash"] == digest and before[key]["revision"] == 0
        path = pages / digest[:2] / f"{digest[2:]}.html.gz"
        assert gzip.decompress(path.read_bytes()) == body
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    story = flotilla(cluster, "job", product_keys[0])
    assert story.returncode == 0, story.stderr
    assert f"page sha256:{before[product_keys[0]]['content_hash']}" in story.stdout
    assert " captured " in story.stdout

    restart_with(cluster, BROKEN_RULES, FIXED_RULES)
    requests = site.stats()["total"]

    first = flotilla(cluster, "reextract", "--rules", "product")
    assert first.returncode == 3, first.stdout + first.stderr  # the drifted page
    lines = first.stdout.splitlines()
    assert sorted(line for line in lines if line.startswith("changed ")) == sorted(
        f"changed {key} revision 1" for key in product_keys
    )
    assert f"drifted {drift_key}: missing required fields: title, price" in lines
    assert lines[-1] == (
        "reextract rules product: 5 results: 4 changed, 0 unchanged, 0 no capture, 1 drifted now, 0 failed, 0 no result"
    )
    after = results(cluster)
    assert set(after) == set(before)  # updated in place: no result added, none lost
    for n, key in zip(numbers, product_keys, strict=True):
        assert after[key]["fields"] == {
            "title": f"Product {n}",
            "price": f"${(n * 37) % 1000 / 10 + 1:.2f}",
            "sku": f"SKU-{n:06d}",
        }
        assert after[key]["revision"] == 1 and after[key]["content_hash"] == before[key]["content_hash"]
        assert (
            after[key]["stored_at"] == before[key]["stored_at"] and after[key]["extracted_at"] > after[key]["stored_at"]
        )
    assert after[drift_key] == before[drift_key]  # left as it was

    again = flotilla(cluster, "reextract", "--rules", "product")
    assert again.returncode == 3, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1].startswith("reextract rules product: 5 results: 0 changed, 4 unchanged,")
    assert results(cluster) == after  # nothing changed twice

    story = flotilla(cluster, "job", product_keys[0])
    assert "reextracted" in story.stdout and "revision 1 (re-extracted " in story.stdout

    # A page that is gone is reported for its key; the others go on.
    missing = after[product_keys[1]]["content_hash"]
    (pages / missing[:2] / f"{missing[2:]}.html.gz").unlink()
    some = flotilla(cluster, "reextract", "--rules", "product", product_keys[1], product_keys[0], "no-such-key")
    assert some.returncode == 3, some.stdout + some.stderr
    assert f"no capture {product_keys[1]}: no captured page {pages / missing[:2] / missing[2:]}.html.gz" in some.stdout
    assert "no result no-such-key: no stored result of rules 'product'" in some.stdout
    assert some.stdout.splitlines()[-1] == (
        "reextract rules product: 3 results: 0 changed, 1 unchanged, 1 no capture, 0 drifted now, 0 failed, 1 no result"
    )

    assert site.stats()["total"] == requests  # not one request reached the site
    audit = (cluster.topology_path.parent / "data" / "alpha" / "audit.log").read_text(encoding="utf-8")
    entries = [json.loads(line) for line in audit.splitlines()]
    assert [e["outcome"] for e in entries if e["command"] == "reextract"] == ["started", "done"] * 3


def test_reextract_of_an_unknown_rule_set_is_refused(cluster: LiveCluster) -> None:
    refused = flotilla(cluster, "reextract", "--rules", "nope")
    assert refused.returncode == 1
    assert "unknown rules 'nope' on the intake's node (known: product)" in refused.stderr


def test_a_retried_reextract_gets_the_first_answer_and_changes_nothing_twice(tmp_path: Path) -> None:
    """The intake in-process (a real journal file, real pages): the same request sent again —
    its client gave up waiting — is answered as the first was, and runs once."""
    pages = PageStore(tmp_path / "pages")
    digest, _ = pages.put(product(5).encode())
    journal = open_journal(tmp_path / "journal.sqlite")
    journal.submit([NewJob("local:k", "http://h/product/5", "product")])
    lease = journal.lease(1, 30)[0]
    assert journal.store("local:k", lease.token, {"title": "wrong"}, digest, captured=True)
    journal.close()
    rules = {"product": RuleSet("product", {"title": FieldRule("h1.title"), "price": FieldRule(".price")})}
    intake = Intake(
        f"tcp://127.0.0.1:{free_ports(1)[0]}",
        tmp_path / "journal.sqlite",
        set(rules),
        lambda: None,
        access=make_access(tmp_path / "keys"),
        rules=rules,
        pages=pages,
    )
    intake.start()
    try:

        def ask(request: Reextract) -> Reextracted:
            later = intake.handle(msgspec.msgpack.encode(request), "local")
            assert isinstance(later, Later)  # run on a control thread
            frames: queue.Queue[bytes] = queue.Queue()
            later.bind(frames.put)
            answer = answer_decoder.decode(frames.get(timeout=20))
            assert isinstance(answer, Reextracted), answer
            return answer

        first = ask(Reextract(7, "product", session="s"))
        assert [(k.key, k.outcome, k.revision) for k in first.keys] == [("local:k", "changed", 1)]
        assert ask(Reextract(7, "product", session="s")) == first  # the retry: the first answer
        again = ask(Reextract(8, "product", session="s"))  # a new request: runs, finds nothing to change
        assert [(k.outcome, k.revision) for k in again.keys] == [("unchanged", 1)]
        result = intake.journal.result("local:k")
        assert result is not None and result["revision"] == 1
        assert result["fields"] == {"title": "Product 5", "price": "$19.50"}
        audit = [json.loads(line) for line in intake.audit_path.read_text(encoding="utf-8").splitlines()]
        assert [e["outcome"] for e in audit if e["command"] == "reextract"] == ["started", "done"] * 2
    finally:
        intake.close()


LINKED_RULES = """
rules:
  product:
    capture: true
    fields:
      title: {css: h1.title, required: true}
      reviews: {css: a.reviews, attr: href}
"""


def test_a_redirected_pages_relative_links_are_joined_to_where_it_came_from_again(
    tmp_path: Path, site: DemoSiteProcess
) -> None:
    """`/moved/3` redirects to `/product/3`, whose reviews link is relative (``reviews/3``):
    re-extracted with the same rules, it is joined to the page's URL as it was the first time,
    so nothing changes."""
    live = make_cluster(tmp_path, TREE, nodes=("alpha",), extra=LINKED_RULES + INTAKE % free_ports(1)[0])
    try:
        live.start_node("alpha").wait_for_event("intake.listening", timeout=30)
        submitted = flotilla(live, "submit", f"{site.url}/moved/3", "--rules", "product", "--wait")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        (before,) = results(live).values()
        assert before["fields"]["reviews"] == f"{site.url}/product/reviews/3"  # not .../moved/reviews/3
        again = flotilla(live, "reextract", "--rules", "product")
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.splitlines()[-1].startswith("reextract rules product: 1 result: 0 changed, 1 unchanged,")
        assert results(live) == {before["key"]: before}  # revision 0, the same fields
    finally:
        live.stop()


def test_a_long_reextract_holds_up_no_hold_not_even_when_retried(tmp_path: Path) -> None:
    """A re-extraction whose page takes the parse sandbox's whole time limit (a regex that
    backtracks without end) runs on a thread of its own, and its retry waits on no thread: a
    Hold sent meanwhile through a real client is answered at once."""
    pages = PageStore(tmp_path / "pages")
    digest, _ = pages.put(b"<html><h1 class=title>" + b"a" * 40 + b"!</h1></html>")
    journal = open_journal(tmp_path / "journal.sqlite")
    journal.submit([NewJob("local:k", "http://h/product/1", "slow")])
    lease = journal.lease(1, 30)[0]
    assert journal.store("local:k", lease.token, {"title": "a"}, digest, captured=True)
    journal.close()
    rules = {"slow": RuleSet("slow", {"title": FieldRule("h1.title", regex=r"(a+)+$")})}
    holds: list[HoldMode | None] = []

    def hold(mode: HoldMode | None) -> HoldStatus:
        holds.append(mode)
        return HoldStatus(mode == "on", mode or "auto")

    intake = Intake(
        f"tcp://127.0.0.1:{free_ports(1)[0]}",
        tmp_path / "journal.sqlite",
        set(rules),
        lambda: None,
        hold,
        access=make_access(tmp_path / "keys"),
        rules=rules,
        pages=pages,
    )
    intake.start()
    try:
        answers: queue.Queue[bytes] = queue.Queue()
        started = time.monotonic()
        request = msgspec.msgpack.encode(Reextract(3, "slow", session="s"))
        first = intake.handle(request, "local")
        assert isinstance(first, Later)
        first.bind(answers.put)

        def running() -> bool:
            return intake.audit_path.exists() and '"started"' in intake.audit_path.read_text(encoding="utf-8")

        wait_until(running, 10, "the re-extraction to start")
        retry = intake.handle(request, "local")  # its client gave up waiting and sent it again
        assert isinstance(retry, Later)
        retry.bind(answers.put)
        with IntakeClient(intake.address, timeout=2, retries=0, key=key_of(tmp_path / "keys", "local")) as client:
            asked = time.monotonic()
            assert client.hold("on").on
            answered_in = time.monotonic() - asked
        assert holds == ["on"] and answered_in < 1.5
        assert answers.empty()  # the re-extraction still runs
        one, two = answers.get(timeout=30), answers.get(timeout=30)
        assert one == two  # the retry: the first answer
        answer = answer_decoder.decode(one)
        assert isinstance(answer, Reextracted), answer
        assert [(k.key, k.outcome) for k in answer.keys] == [("local:k", "failed")]
        assert "unparseable page" in answer.keys[0].detail
        assert time.monotonic() - started > answered_in + 2  # the parse took its time limit
        audit = [json.loads(line) for line in intake.audit_path.read_text(encoding="utf-8").splitlines()]
        assert [e["outcome"] for e in audit if e["command"] == "reextract"] == ["started", "done"]  # run once
    finally:
        intake.close()


def test_one_reextract_request_stops_taking_results_when_its_time_is_spent(tmp_path: Path) -> None:
    """Two results whose pages each take the parse time limit: a request answers the first
    with a `next` (a page of 2 cut short), and the client's paging goes on to the second."""
    pages = PageStore(tmp_path / "pages")
    journal = open_journal(tmp_path / "journal.sqlite")
    for n in (1, 2):
        digest, _ = pages.put(b"<html><h1 class=title>" + b"a" * (40 + n) + b"!</h1></html>")
        journal.submit([NewJob(f"local:k{n}", f"http://h/product/{n}", "slow")])
        lease = journal.lease(1, 30)[0]
        assert journal.store(f"local:k{n}", lease.token, {"title": "a"}, digest, captured=True)
    journal.close()
    rules = {"slow": RuleSet("slow", {"title": FieldRule("h1.title", regex=r"(a+)+$")})}
    intake = Intake(
        f"tcp://127.0.0.1:{free_ports(1)[0]}",
        tmp_path / "journal.sqlite",
        set(rules),
        lambda: None,
        access=make_access(tmp_path / "keys"),
        rules=rules,
        pages=pages,
    )
    intake.start()
    try:
        with IntakeClient(intake.address, timeout=20, retries=0, key=key_of(tmp_path / "keys", "local")) as client:
            paged = list(client.reextract_all("slow", limit=2))
            assert [[(k.key, k.outcome) for k in page.keys] for page in paged] == [
                [("local:k1", "failed")],
                [("local:k2", "failed")],
            ]
            assert paged[0].next == "local:k1" and paged[1].next == ""
            by_keys = list(client.reextract_all("slow", ["local:k2", "local:k1", "local:k2"]))
            assert [[k.key for k in page.keys] for page in by_keys] == [["local:k2"], ["local:k1"]]
    finally:
        intake.close()
    assert REEXTRACT_BUDGET < 5.0  # the parse time limit: one result spends the budget
