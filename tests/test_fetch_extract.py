"""Fetcher and extractor actors against the real demo site: every fault mode gives the
right typed outcome, and many requests are in flight at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flotilla.actors import Actor, ActorSystem, ChildSpec, PoolSpec, SupervisorSpec
from flotilla.actors.pipeline.extractor import Extractor
from flotilla.actors.pipeline.fetcher import CUT, Fetcher, retry_after_seconds
from flotilla.actors.pipeline.messages import Fetched, FetchJob, JobOutcome, Returned
from flotilla.actors.pipeline.rules import ExtractionRules, FieldRule, RuleSet
from scripts.harness import DemoSiteProcess

RULES = {
    "product": RuleSet(
        "product", {"title": FieldRule("h1.title", required=True), "price": FieldRule(".price", required=True)}
    )
}


class Inbox(Actor):
    """Collects what the pipeline reports (stands in for the router)."""

    received: list[Any] = []
    changed = threading.Condition()

    def on_receive(self, message: Any) -> Any:
        with Inbox.changed:
            Inbox.received.append(message)
            Inbox.changed.notify_all()


def outcomes(count: int, timeout: float = 20.0) -> dict[str, JobOutcome]:
    with Inbox.changed:
        assert Inbox.changed.wait_for(
            lambda: sum(isinstance(m, JobOutcome) for m in Inbox.received) >= count, timeout
        ), Inbox.received
        return {m.key: m for m in Inbox.received if isinstance(m, JobOutcome)}


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--flaky-failures", "1", "--huge-bytes", "300000", "--limited-rate", "1000")
    yield process
    process.stop()


@pytest.fixture
def pipeline(system: ActorSystem) -> ActorSystem:
    Inbox.received = []
    system.extensions.put(ExtractionRules(RULES))
    children = (
        ChildSpec("inbox", Inbox),
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
    )
    system.start(SupervisorSpec("root", children=children))
    return system


def fetch(system: ActorSystem, site: DemoSiteProcess, paths: list[str], rules: str = "product") -> None:
    for path in paths:
        system.ref("t/root/fetchers").tell(FetchJob(path, f"{site.url}{path}", rules, 1, "t/root/inbox"))


def test_every_fault_mode_gives_its_typed_outcome(pipeline: ActorSystem, site: DemoSiteProcess) -> None:
    paths = [
        "/product/1",
        "/moved/2",
        "/flaky/3",
        "/gone/4",
        "/removed/5",
        "/private/6",
        "/blocked/7",
        "/captcha/8",
        "/drift/9",
        "/huge/10",
        "/loop/11",
        "/slow/12?ms=3000",
    ]
    fetch(pipeline, site, paths)
    got = outcomes(len(paths))
    assert got["/product/1"].fields == {"title": "Product 1", "price": "$4.70"}
    assert len(got["/product/1"].content_hash) == 64
    assert got["/moved/2"].fields["title"] == "Product 2"
    kinds = {path: (o.failure.kind, o.failure.status) for path, o in got.items() if o.failure}
    assert kinds == {
        "/flaky/3": ("TRANSIENT", 503),
        "/gone/4": ("HARD", 404),
        "/removed/5": ("HARD", 410),
        "/private/6": ("HARD", 401),
        "/blocked/7": ("BLOCKED", 403),
        "/captcha/8": ("BLOCKED", 200),
        "/drift/9": ("DRIFT", 200),
        "/huge/10": ("HARD", 200),
        "/loop/11": ("HARD", 0),
        "/slow/12?ms=3000": ("TRANSIENT", 0),
    }
    assert "title, price" in got["/drift/9"].failure.detail
    # one report per job: a fetched page is reported by the extractor only
    assert not [m for m in Inbox.received if isinstance(m, Fetched)]
    assert sorted(m.key for m in Inbox.received) == sorted(paths)


def test_challenge_pages_are_blocked_and_an_article_about_them_is_not(
    pipeline: ActorSystem, site: DemoSiteProcess
) -> None:
    fetch(pipeline, site, ["/prose/1", "/captcha/2", "/challenge/3"])
    got = outcomes(3)
    assert got["/prose/1"].failure is None and got["/prose/1"].fields["title"] == "Product 1"
    captcha, challenge = got["/captcha/2"].failure, got["/challenge/3"].failure
    assert (captcha.kind, captcha.detail) == ("BLOCKED", "challenge page (text 'captcha')")
    # the fetcher passed the header on
    assert (challenge.kind, challenge.detail) == ("BLOCKED", "challenge page (header cf-mitigated: challenge)")


def test_unknown_rules_and_schemes_are_hard_failures(pipeline: ActorSystem, site: DemoSiteProcess) -> None:
    fetch(pipeline, site, ["/product/1"], rules="nope")
    pipeline.ref("t/root/fetchers").tell(FetchJob("ftp", "ftp://127.0.0.1/x", "product", 1, "t/root/inbox"))
    got = outcomes(2)
    assert got["/product/1"].failure.kind == "HARD" and "no rule set named 'nope'" in got["/product/1"].failure.detail
    assert got["ftp"].failure.detail == "only http and https are fetched"


def test_many_requests_are_in_flight_per_fetcher(pipeline: ActorSystem, site: DemoSiteProcess) -> None:
    paths = [f"/slow/{i}?ms=300" for i in range(100)]
    fetch(pipeline, site, paths)
    got = outcomes(100, timeout=10)
    assert all(o.fields for o in got.values())  # 100 x 300 ms done well within the 10 s


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_a_fetcher_that_crashes_hands_its_requests_in_flight_back_uncounted(
    system: ActorSystem, site: DemoSiteProcess
) -> None:
    """A crash of the fetcher (a bug of its own, not of the jobs) cuts its requests: each job
    comes back `Returned` — due again, no attempt spent — instead of failing as TRANSIENT
    (which would count towards its attempts and the target's breaker)."""
    Inbox.received = []
    system.extensions.put(ExtractionRules(RULES))
    children = (
        ChildSpec("inbox", Inbox),
        PoolSpec("extractors", ChildSpec("x", Extractor), size=1),
        ChildSpec("f", Fetcher, {"extractor": "t/root/extractors", "timeout": 30.0}),
    )
    system.start(SupervisorSpec("root", children=children))
    for n in range(10):
        path = f"/slow/{n}?ms=20000"
        system.ref("t/root/f").tell(FetchJob(path, f"{site.url}{path}", "product", n, "t/root/inbox"))
    fetcher = system.ref("t/root/f")
    with Inbox.changed:  # every request is out
        assert Inbox.changed.wait_for(lambda: fetcher.ask("in_flight") == 10, 10)
    fetcher.tell("a message it has no handler for")  # crashes it
    with Inbox.changed:
        assert Inbox.changed.wait_for(lambda: len(Inbox.received) >= 10, 10), Inbox.received
        received = list(Inbox.received)
    assert all(isinstance(m, Returned) and m.reason == CUT for m in received), received
    assert sorted(m.token for m in received) == list(range(10))
