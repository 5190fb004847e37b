"""Extraction rules on the demo site's real pages, and the site's fault modes over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from flotilla.actors.pipeline.rules import (
    CHALLENGE_MAX_WORDS,
    Blocked,
    Drift,
    Extracted,
    FieldRule,
    RuleSet,
    apply_rules,
    challenge_headers,
)
from scripts.harness import DemoSiteProcess

PRODUCT = RuleSet(
    "product",
    {
        "title": FieldRule("h1.title", required=True),
        "price": FieldRule(".price", required=True),
        "sku": FieldRule("[data-sku]", attr="data-sku"),
        "tags": FieldRule(".tag", all=True),
        "missing_optional": FieldRule(".nope"),
    },
)


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--flaky-failures", "2", "--limited-rate", "5", "--huge-bytes", "100000")
    yield process
    process.stop()


def get(site: DemoSiteProcess, path: str) -> tuple[int, str, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
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
    assert result.fields == {
        "title": "Product 42",
        "price": "$56.40",
        "sku": "SKU-000042",
        "tags": ["tools", "series-0"],
    }


def test_a_drifted_page_is_drift_naming_the_missing_fields(site: DemoSiteProcess) -> None:
    _, html, _ = get(site, "/drift/7")
    assert apply_rules(html, PRODUCT) == Drift(("title", "price"))


def test_a_challenge_page_is_blocked_not_drift(site: DemoSiteProcess) -> None:
    _, html, _ = get(site, "/captcha/1")
    assert apply_rules(html, PRODUCT) == Blocked("text 'captcha'")


def test_a_product_page_whose_article_mentions_captcha_gives_its_fields(site: DemoSiteProcess) -> None:
    status, html, _ = get(site, "/prose/3")
    assert status == 200 and "CAPTCHA" in html and "Are you a robot?" in html
    result = apply_rules(html, PRODUCT)
    assert isinstance(result, Extracted) and result.fields["title"] == "Product 3"


def test_a_cloudflare_like_challenge_page_is_blocked_by_its_header_or_its_elements(site: DemoSiteProcess) -> None:
    status, html, headers = get(site, "/challenge/1")
    assert status == 200
    assert apply_rules(html, PRODUCT, challenge_headers(headers)) == Blocked("header cf-mitigated: challenge")
    assert apply_rules(html, PRODUCT) == Blocked('element iframe[src^="https://challenges.cloudflare.com"]')
    no_widget = RuleSet("product", PRODUCT.fields, block_selectors=())
    assert apply_rules(html, no_widget) == Blocked("title 'just a moment'")


INCAPSULA = """<html><head><meta name="robots" content="noindex,nofollow"></head><body>
<iframe id="main-iframe" src="/_Incapsula_Resource?CWUDNSAI=24&xinfo=8-1234-0%200NNN&incident_id=77-1"
 frameborder=0 width="100%" height="100%">Request unsuccessful. Incapsula incident ID: 77-1</iframe></body></html>"""

RECAPTCHA_WALL = """<html><head><title>Security check</title></head><body><form method="post">
<div class="g-recaptcha" data-sitekey="6Lc"></div><button>Continue</button></form></body></html>"""


@pytest.mark.parametrize(
    ("html", "signal"),
    [
        (INCAPSULA, 'element iframe[src*="_Incapsula_Resource"]'),
        (RECAPTCHA_WALL, "element .g-recaptcha"),
    ],
)
def test_short_pages_with_challenge_widgets_are_blocked(html: str, signal: str) -> None:
    assert apply_rules(html, PRODUCT) == Blocked(signal)


def article(words: int, extra: str = "") -> str:
    """An article without the product fields: `words` words of prose that mention CAPTCHAs."""
    prose = ("Why do sites ask are you a robot? A CAPTCHA appears after unusual traffic. " * words).split()[:words]
    return (
        f"<html><head><title>On CAPTCHAs</title></head><body><article><p>{' '.join(prose)}</p></article>{extra}"
        "<script>var captcha = 'widget';</script></body></html>"
    )


def test_a_long_article_about_captchas_without_the_fields_is_drift_not_blocked() -> None:
    comment_form = '<form class="comments"><div class="g-recaptcha" data-sitekey="6Lc"></div></form>'
    assert apply_rules(article(CHALLENGE_MAX_WORDS + 1, comment_form), PRODUCT) == Drift(("title", "price"))


def test_a_challenge_page_is_at_most_challenge_max_words_of_visible_text() -> None:
    assert isinstance(apply_rules(article(CHALLENGE_MAX_WORDS), PRODUCT), Blocked)
    assert apply_rules(article(CHALLENGE_MAX_WORDS + 1), PRODUCT) == Drift(("title", "price"))


def test_a_page_with_its_required_fields_is_never_a_challenge_page(site: DemoSiteProcess) -> None:
    _, html, _ = get(site, "/product/5")
    result = apply_rules(html.replace("</body>", RECAPTCHA_WALL + "</body>"), PRODUCT, {"cf-mitigated": "challenge"})
    assert isinstance(result, Extracted)


def test_block_markers_and_selectors_are_the_rule_sets_own() -> None:
    own = RuleSet("product", PRODUCT.fields, block_markers=("access denied",), block_selectors=("#px-captcha",))
    assert apply_rules("<html><body><h1>Access Denied</h1></body></html>", own) == Blocked("text 'access denied'")
    assert apply_rules('<html><body><div id="px-captcha"></div></body></html>', own) == Blocked("element #px-captcha")
    assert apply_rules(RECAPTCHA_WALL, own) == Drift(("title", "price"))


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
