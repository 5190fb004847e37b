"""Extraction rules on the demo site's real pages, and the site's fault modes over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from actors.rules import Blocked, Drift, Extracted, FieldRule, RuleSet, apply_rules
from tests.demo_site import DemoSiteProcess

PRODUCT = RuleSet("product", {
    "title": FieldRule("h1.title", required=True),
    "price": FieldRule(".price", required=True),
    "sku": FieldRule("[data-sku]", attr="data-sku"),
    "tags": FieldRule(".tag", all=True),
    "missing_optional": FieldRule(".nope"),
})


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--flaky-failures", "2", "--limited-rate", "5", "--huge-bytes", "100000")
    yield process
    process.stop()


def get(site: DemoSiteProcess, path: str) -> tuple[int, str, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(f"{site.url}{path}", timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def test_a_product_page_gives_its_fields(site: DemoSiteProcess) -> None:
    status, html, _ = get(site, "/product/42")
    assert status == 200
    result = apply_rules(html, PRODUCT)
    assert isinstance(result, Extracted)
    assert result.fields == {"title": "Product 42", "price": "$56.40", "sku": "SKU-000042",
                             "tags": ["tools", "series-0"]}


def test_a_drifted_page_is_drift_naming_the_missing_fields(site: DemoSiteProcess) -> None:
    _, html, _ = get(site, "/drift/7")
    assert apply_rules(html, PRODUCT) == Drift(("title", "price"))


def test_a_challenge_page_is_blocked_not_drift(site: DemoSiteProcess) -> None:
    _, html, _ = get(site, "/captcha/1")
    assert apply_rules(html, PRODUCT) == Blocked("captcha")


def test_the_fault_modes_answer_as_documented(site: DemoSiteProcess) -> None:
    assert [get(site, "/flaky/9")[0] for _ in range(3)] == [503, 503, 200]
    limited = [get(site, "/limited/1") for _ in range(7)]
    assert [s for s, _, _ in limited].count(429) >= 2
    assert next(h for s, _, h in limited if s == 429)["Retry-After"] == "1"
    assert get(site, "/blocked/1")[0] == 403
    assert get(site, "/gone/1")[0] == 404
    assert get(site, "/removed/1")[0] == 410
    assert get(site, "/private/1")[0] == 401
    assert get(site, "/loop/1")[0] == 302
    status, _, headers = get(site, "/moved/3")
    assert status == 301 and headers["Location"] == "/product/3"
    assert len(get(site, "/huge/1")[1]) > 100_000
    assert get(site, "/slow/1?ms=50")[0] == 200
    stats = site.stats()
    assert stats["by_path"]["/flaky/9"] == 3
