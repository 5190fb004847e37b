"""The router over a real journal, real fetchers and the real demo site (one node): every
fault mode ends in the right state, and a router crash mid-run loses and duplicates nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.actors import ActorSystem, ChildSpec, PoolSpec, SupervisorFlags, SupervisorSpec
from flotilla.actors.pipeline.extractor import Extractor
from flotilla.actors.pipeline.fetcher import Fetcher
from flotilla.actors.pipeline.journal import Journal, NewJob, natural_key
from flotilla.actors.pipeline.pruning import Retention
from flotilla.actors.pipeline.router import Router, Wake
from flotilla.actors.pipeline.rules import ExtractionRules, FieldRule, RuleSet
from flotilla.actors.resilience.alerts import AlertSink
from flotilla.nodes.runtime.metrics import PipelineObserver
from scripts.harness import DemoSiteProcess, wait_until

RULES = {
    "product": RuleSet(
        "product", {"title": FieldRule("h1.title", required=True), "price": FieldRule(".price", required=True)}
    )
}
POLICY = {
    "max_attempts": 3,
    "transient_base": 0.05,
    "transient_cap": 0.2,
    "blocked_delay": 0.1,
    "visibility": 5.0,
    "poison_limit": 2,
}


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--flaky-failures", "1", "--huge-bytes", "300000", "--limited-rate", "1000")
    yield process
    process.stop()


def start_pipeline(system: ActorSystem, data: Path, **router_args: object) -> Journal:
    system.extensions.put(ExtractionRules(RULES))
    system.data_dir = data
    children = (
        ChildSpec("alerts", AlertSink),
        PoolSpec("extractors", ChildSpec("x", Extractor), size=2),
        PoolSpec(
            "fetchers",
            ChildSpec(
                "f",
                Fetcher,
                {"extractor": "t/root/extractors", "timeout": 1.0, "max_body_bytes": 200_000, "max_redirects": 3},
            ),
            size=2,
        ),
        ChildSpec(
            "router", Router, {"fetchers": "t/root/fetchers", "alerts": "t/root/alerts", **POLICY, **router_args}
        ),
    )
    system.start(SupervisorSpec("root", children=children, flags=SupervisorFlags(intensity=10)))
    return Journal(data / "journal.sqlite")


def submit(journal: Journal, system: ActorSystem, site: DemoSiteProcess, paths: list[str]) -> dict[str, str]:
    keys = {}
    jobs = []
    for path in paths:
        url = f"{site.url}{path}"
        keys[path] = natural_key(url, "product")
        jobs.append(NewJob(keys[path], url, "product"))
    journal.submit(jobs)
    system.ref("t/root/router").tell(Wake())
    return keys


def settled(journal: Journal) -> bool:
    counts = journal.counts()
    return counts["pending"] + counts["fetching"] + counts["extracting"] + counts["retrying"] == 0


def test_every_fault_mode_ends_in_the_right_state(system: ActorSystem, site: DemoSiteProcess, tmp_path: Path) -> None:
    observed = PipelineObserver(system.observers)  # what the metrics endpoint keeps
    journal = start_pipeline(system, tmp_path)
    keys = submit(
        journal,
        system,
        site,
        [
            "/product/1",
            "/moved/2",
            "/flaky/3",
            "/gone/4",
            "/private/5",
            "/blocked/6",
            "/captcha/7",
            "/drift/8",
            "/huge/9",
            "/loop/10",
            "/slow/11?ms=3000",
        ],
    )
    wait_until(lambda: settled(journal), timeout=30, what="every job to settle")
    state = {path: journal.job(key).state for path, key in keys.items()}
    assert state == {
        "/product/1": "stored",
        "/moved/2": "stored",
        "/flaky/3": "stored",  # flaky: 503, then stored
        "/gone/4": "dead",
        "/private/5": "dead",
        "/huge/9": "dead",
        "/loop/10": "dead",
        "/blocked/6": "dead",
        "/captcha/7": "dead",
        "/slow/11?ms=3000": "dead",  # out of attempts
        "/drift/8": "parked",
    }
    assert journal.job(keys["/gone/4"]).reason == "HARD: HTTP 404"
    evidence = journal.attempts(keys["/gone/4"])[0][4]
    assert evidence.startswith("HTTP 404 | HTTP 404 {'Content-Type': 'text/plain") and "body: 'Not Found'" in evidence
    assert "gave up after 3 attempts" in journal.job(keys["/blocked/6"]).reason
    assert [a[3] for a in journal.attempts(keys["/flaky/3"])] == ["TRANSIENT", "stored"]
    assert journal.result_count() == 3
    router = observed.router("t/root/router")
    assert router is not None
    assert router.jobs.count == 3 and router.jobs.sum > 0
    assert router.failures["HARD"] >= 4 and router.failures["DRIFT"] == 1 and router.failures["BLOCKED"] >= 6
    assert router.attempts.count >= 3 + router.failures.total() - 1
    sink = system.registry.lookup("t/root/alerts").actor
    assert sink.counts == {}  # one parked page is not an incident: breaker shards judge drift per target
    journal.close()


def test_a_router_crash_mid_run_loses_and_duplicates_nothing(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    journal = start_pipeline(system, tmp_path, max_in_flight=20)
    paths = [f"/slow/{i}?ms=50" for i in range(300)]
    keys = submit(journal, system, site, paths)
    wait_until(lambda: journal.counts()["stored"] >= 50, timeout=30, what="some jobs stored")
    old = system.wait_started("t/root/router")
    system.ref("t/root/router").tell("not a message the router knows")  # crashes it
    system.wait_started("t/root/router", other_than=old)
    wait_until(lambda: settled(journal), timeout=60, what="every job to settle after the crash")
    assert journal.counts()["stored"] == 300
    assert journal.result_count() == 300
    assert len({journal.job(k).key for k in keys.values()}) == 300
    journal.close()


def test_a_job_that_keeps_crashing_its_fetcher_is_dead_as_poison(system: ActorSystem, tmp_path: Path) -> None:
    from tests.helpers import CrashingFetcher

    system.data_dir = tmp_path
    children = (
        PoolSpec("fetchers", ChildSpec("f", CrashingFetcher), size=2, flags=SupervisorFlags(intensity=50)),
        ChildSpec("router", Router, {"fetchers": "t/root/fetchers", **POLICY, "visibility": 0.5}),
    )
    system.start(SupervisorSpec("root", children=children, flags=SupervisorFlags(intensity=10)))
    journal = Journal(tmp_path / "journal.sqlite")
    jobs = [
        NewJob(natural_key(f"http://127.0.0.1:1/{kind}/{i}", "product"), f"http://127.0.0.1:1/{kind}/{i}", "product")
        for kind, i in (("poison", 1), ("product", 2), ("product", 3))
    ]
    journal.submit(jobs)
    system.ref("t/root/router").tell(Wake())
    wait_until(lambda: settled(journal), timeout=30, what="the poison job to be buried")
    poison = journal.job(jobs[0].key)
    assert poison.state == "dead" and poison.reason.startswith("poison: its attempt was lost 2 times")
    assert [journal.job(j.key).state for j in jobs[1:]] == ["stored", "stored"]
    assert [a[3] for a in journal.attempts(jobs[0].key)] == ["lost", "lost"]
    journal.close()


def test_an_article_mentioning_captcha_is_stored_and_a_challenge_page_is_not(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    journal = start_pipeline(system, tmp_path)
    keys = submit(journal, system, site, ["/prose/1", "/captcha/2", "/challenge/3"])
    wait_until(lambda: settled(journal), timeout=30, what="every job to settle")
    assert {path: journal.job(key).state for path, key in keys.items()} == {
        "/prose/1": "stored",
        "/captcha/2": "dead",
        "/challenge/3": "dead",
    }
    assert [a[3] for a in journal.attempts(keys["/captcha/2"])] == ["BLOCKED"] * 3
    assert journal.result_count() == 1
    journal.close()


def test_the_routers_pruner_deletes_stored_jobs_by_the_retention_and_keeps_results(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    observed = PipelineObserver(system.observers)  # what the metrics endpoint keeps
    system.extensions.put(Retention(stored=0.2, dead=None, every=0.1, batch=2))
    journal = start_pipeline(system, tmp_path)
    keys = submit(journal, system, site, [f"/product/{n}" for n in range(5)] + ["/gone/9"])
    wait_until(lambda: journal.result_count() == 5, timeout=30, what="five results")
    wait_until(lambda: journal.counts()["stored"] == 0, timeout=30, what="the stored jobs pruned")
    assert journal.counts()["dead"] == 1  # dead letters are kept (dead: keep)
    assert journal.job(keys["/product/0"]) is None and journal.result(keys["/product/0"]) is not None

    def tallied() -> bool:  # a pass is published once it is over
        routers, _ = observed.routers_and_fetchers()
        return routers[0].pruned["jobs"] == 5

    wait_until(tallied, timeout=10, what="the pruned jobs in the metrics' tallies")
    assert observed.routers_and_fetchers()[0][0].pruned["results"] == 0
    journal.close()
