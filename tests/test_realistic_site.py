"""The demo site's realistic mode (/site/N) over real HTTP: a deterministic mix of fault kinds,
requests counted per host and per kind, and a host that is down."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from flotilla.actors.pipeline.rules import Drift, Extracted, FieldRule, RuleSet, apply_rules
from scripts.demo_site import FAULT_KINDS, FAULT_SHARES, HEALTHY_KINDS, fault_of, port_with_nothing_listening
from scripts.harness import DemoSiteProcess, free_ports, wait_until

PRODUCT = RuleSet(
    "product", {"title": FieldRule("h1.title", required=True), "price": FieldRule(".price", required=True)}
)
FIRST_STATUS = {"ok": 200, "gone": 404, "down": 503, "flaky": 503, "drift": 200, "limited": 429, "prose": 200}


@pytest.fixture(scope="module")
def other_port() -> int:
    """A second port the site serves: another host."""
    return free_ports(1)[0]


@pytest.fixture(scope="module")
def site(other_port: int) -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--extra-port", str(other_port), "--site-retry-after", "1")
    yield process
    process.stop()


def get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def first_page(kind: str) -> int:
    return next(n for n in range(1000) if fault_of(n) == kind)


def test_each_fault_kind_has_its_stated_share_of_the_first_thousand_pages() -> None:
    counts = Counter(fault_of(n) for n in range(1000))
    assert counts == {**FAULT_SHARES, "ok": 1000 - sum(FAULT_SHARES.values())}
    assert all(10 <= share <= 20 for share in FAULT_SHARES.values())  # "a few percent" of each
    half = Counter(fault_of(n) for n in range(500))
    for kind, share in FAULT_SHARES.items():  # any 500 pages have about half of each
        assert share // 2 - 2 <= half[kind] <= share // 2 + 2, (kind, half[kind])
    assert Counter(fault_of(n) for n in range(1000, 2000)) == counts


def test_every_page_answers_its_kind_first_and_stats_count_per_host_and_kind(site: DemoSiteProcess) -> None:
    site.reset()
    for n in range(300):
        assert get(f"{site.url}/site/{n}")[0] == FIRST_STATUS[fault_of(n)], (n, fault_of(n))
    stats = site.stats()
    expected = Counter(fault_of(n) for n in range(300))
    assert stats["by_fault"] == expected
    assert stats["by_host_fault"] == {f"127.0.0.1:{site.port}": expected}
    assert stats["by_host"] == {f"127.0.0.1:{site.port}": 300}


def test_each_port_is_a_host_of_its_own_with_its_own_first_requests(site: DemoSiteProcess, other_port: int) -> None:
    site.reset()
    flaky = first_page("flaky")
    other = other_port
    assert [get(f"{site.url}/site/{flaky}")[0] for _ in range(2)] == [503, 200]
    assert [get(f"http://127.0.0.1:{other}/site/{flaky}")[0] for _ in range(2)] == [503, 200]
    stats = site.stats()
    assert stats["by_host"] == {f"127.0.0.1:{site.port}": 2, f"127.0.0.1:{other}": 2}
    assert stats["by_host_fault"][f"127.0.0.1:{other}"] == {"flaky": 2}


def test_the_fault_kinds_behave_as_documented(site: DemoSiteProcess) -> None:
    assert [get(f"{site.url}/site/{first_page('down')}")[0] for _ in range(3)] == [503, 503, 503]
    assert [get(f"{site.url}/site/{first_page('gone')}")[0] for _ in range(2)] == [404, 404]
    _, html, _ = get(f"{site.url}/site/{first_page('drift')}")
    assert apply_rules(html, PRODUCT) == Drift(("title",))


def test_a_limited_page_answers_429_with_retry_after_until_that_time_has_passed(site: DemoSiteProcess) -> None:
    url = f"{site.url}/site/{first_page('limited')}"
    status, _, headers = get(url)
    assert (status, headers["Retry-After"]) == (429, "1")
    wait_until(lambda: get(url)[0] == 200, timeout=5, what="the limited page served")
    _, html, _ = get(url)
    assert isinstance(apply_rules(html, PRODUCT), Extracted)


def test_a_prose_page_mentions_challenge_words_and_has_every_field(site: DemoSiteProcess) -> None:
    status, html, _ = get(f"{site.url}/site/{first_page('prose')}")
    assert status == 200 and "CAPTCHA" in html and "are you a robot" in html.lower()
    n = first_page("prose")
    assert apply_rules(html, RuleSet("product", PRODUCT.fields, block_markers=())) == Extracted(
        {"title": f"Product {n}", "price": f"${(n * 37) % 1000 / 10 + 1:.2f}"}
    )


def test_healthy_kinds_are_those_that_give_the_page() -> None:
    assert HEALTHY_KINDS == {"ok", "flaky", "limited", "prose"} and HEALTHY_KINDS < set(FAULT_KINDS)


def test_a_host_that_is_down_refuses_connections() -> None:
    port = port_with_nothing_listening()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
