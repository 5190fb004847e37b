"""Routers of several nodes on one PostgreSQL journal, with real fetchers and the real demo
site: jobs submitted elsewhere wake them (NOTIFY, with no other wake-up), each job is leased
by one of them and stored once; a router whose database cannot be reached waits for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.actors import ActorSystem, ChildSpec, PoolSpec, SupervisorFlags, SupervisorSpec
from flotilla.actors.pipeline import router as router_module
from flotilla.actors.pipeline.extractor import Extractor
from flotilla.actors.pipeline.fetcher import Fetcher
from flotilla.actors.pipeline.journal import NewJob, natural_key, open_journal
from flotilla.actors.pipeline.journal_target import JournalTarget
from flotilla.actors.pipeline.router import Router
from flotilla.actors.pipeline.rules import ExtractionRules, FieldRule, RuleSet
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.conftest import TEST_EGRESS
from tests.helpers import Reports

RULES = {
    "product": RuleSet(
        "product", {"title": FieldRule("h1.title", required=True), "price": FieldRule(".price", required=True)}
    )
}


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess()
    yield process
    process.stop()


def start_node(system: ActorSystem, target: JournalTarget) -> None:
    """A node's pipeline: fetchers, extractors and a router on the journal `target`."""
    name = system.node
    system.extensions.put(ExtractionRules(RULES))
    system.extensions.put(TEST_EGRESS)
    system.extensions.put(target)
    children = (
        PoolSpec("extractors", ChildSpec("x", Extractor), size=2),
        PoolSpec("fetchers", ChildSpec("f", Fetcher, {"extractor": f"{name}/root/extractors", "timeout": 5.0}), size=2),
        ChildSpec("router", Router, {"fetchers": f"{name}/root/fetchers", "max_in_flight": 20, "visibility": 30.0}),
    )
    system.start(SupervisorSpec("root", children=children, flags=SupervisorFlags(intensity=10)))


def test_routers_on_two_nodes_share_the_jobs_submitted_on_a_third_each_stored_once(
    system: ActorSystem, site: DemoSiteProcess, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router_module, "MAINTAIN_EVERY", 600.0)  # no periodic look: only NOTIFY wakes them
    target = JournalTarget.parse(postgres_url)
    other = ActorSystem("u")
    try:
        start_node(system, target)
        start_node(other, target)
        for node in (system, other):
            node.wait_started(f"{node.node}/root/router")
        intake = open_journal(target)  # a third node's intake: it tells neither router anything
        urls = [f"{site.url}/product/{i}" for i in range(200)]
        intake.submit([NewJob(natural_key(url, "product"), url, "product") for url in urls])
        wait_until(lambda: intake.counts()["stored"] == 200, timeout=60, what="every job stored")
        assert intake.result_count() == 200
        attempts = [len(intake.attempts(natural_key(url, "product"))) for url in urls]
        assert set(attempts) == {1}  # each leased once, by one router
        routers = [node.registry.lookup(f"{node.node}/root/router").actor for node in (system, other)]
        assert all(r.counts["stored"] > 0 for r in routers)  # both took part
        assert sum(r.counts["stored"] for r in routers) == 200
        intake.close()
    finally:
        other.stop(timeout=10)


def test_a_router_whose_database_is_unreachable_waits_instead_of_crashing(
    system: ActorSystem, reports: Reports, tmp_path: Path
) -> None:
    port = free_ports(1)[0]  # nothing listens there
    system.data_dir = tmp_path
    system.extensions.put(JournalTarget.parse(f"postgresql://fleet@127.0.0.1:{port}/fleet"))
    children = (ChildSpec("router", Router, {"fetchers": "t/root/fetchers"}),)
    system.start(SupervisorSpec("root", children=children))
    router = system.registry.lookup("t/root/router").actor
    wait_until(lambda: router._open_failures >= 2, timeout=20, what="two attempts to open")  # noqa: SLF001
    assert not router.journal_open
    assert reports.of("child_exited") == []
    assert router.inspect().jobs == {}
