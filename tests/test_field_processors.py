"""Field processors of extraction rules (strip, regex, urljoin, type): on pages in memory, in
the parse sandbox's worker, through `flotilla check`, and end to end through real nodes
fetching the demo site, whose pages have relative links."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from urllib.parse import urljoin

import msgspec
import pytest

from flotilla.actors.pipeline.captures import PageStore
from flotilla.actors.pipeline.field_processors import join_url, page_base, to_float, to_int, to_price
from flotilla.actors.pipeline.journal import NewJob, open_journal
from flotilla.actors.pipeline.parse_sandbox import ParseSandbox, Unparseable
from flotilla.actors.pipeline.rules import Drift, Extracted, FieldRule, RuleSet, apply_rules
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import Reextract, Reextracted, answer_decoder
from flotilla.nodes.intake.server import Intake
from flotilla.nodes.serving.router_server import Later
from scripts.demo_site import product
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, start_with_intake
from tests.processes import run_flotilla
from tests.test_intake import make_access

PAGE = """<html><head><title>Shop</title></head><body>
<h1 class="title">  Lamp
   deluxe </h1>
<a class="next" href="/p/2">next</a> <a class="up" href="../">up</a>
<a class="mail" href="mailto:shop@shop.test">mail</a>
<img class="photo" src="/img/99.jpg" srcset="/img/99-2x.jpg 2x, /img/99-3x.jpg 3x">
<span class="price">€1.299,00</span> <span class="call">call us</span>
<span class="stock">12 in stock</span> <span class="weight">2.5</span>
<ul><li class="size">S: 10,00 €</li><li class="size">M: ask</li><li class="size">L: 14,50 €</li></ul>
<span class="code">**SKU-42**</span>
</body></html>"""

URL = "https://shop.test/p/1"


def extract(**fields: FieldRule) -> dict[str, object]:
    result = apply_rules(PAGE, RuleSet("r", fields), url=URL)
    assert isinstance(result, Extracted), result
    return result.fields


def test_href_and_src_become_absolute_against_the_pages_url() -> None:
    assert extract(
        next=FieldRule("a.next", attr="href"),
        up=FieldRule("a.up", attr="href"),
        photo=FieldRule("img.photo", attr="src"),
        mail=FieldRule("a.mail", attr="href"),
    ) == {
        "next": "https://shop.test/p/2",
        "up": "https://shop.test/",
        "photo": "https://shop.test/img/99.jpg",
        "mail": "mailto:shop@shop.test",
    }


def test_urljoin_can_be_turned_off_and_on_for_any_value() -> None:
    assert extract(
        photo=FieldRule("img.photo", attr="src", urljoin=False),
        first=FieldRule("img.photo", attr="srcset", regex=r"^\s*(\S+)", urljoin=True),
        whole_srcset=FieldRule("img.photo", attr="srcset"),
    ) == {
        "photo": "/img/99.jpg",
        "first": "https://shop.test/img/99-2x.jpg",
        "whole_srcset": "/img/99-2x.jpg 2x, /img/99-3x.jpg 3x",
    }


def test_a_base_element_is_the_base_and_user_info_never_reaches_a_value() -> None:
    page = '<html><head><base href="/catalogue/"></head><body><a href="p/2">x</a></body></html>'
    rules = RuleSet("r", {"link": FieldRule("a", attr="href")})
    assert apply_rules(page, rules, url="https://user:sealed@shop.test/p/1") == Extracted(
        {"link": "https://shop.test/catalogue/p/2"}
    )
    bare = '<html><body><a href="p/2">x</a></body></html>'
    assert apply_rules(bare, rules, url="https://user:sealed@shop.test/a/b#top") == Extracted(
        {"link": "https://shop.test/a/p/2"}
    )
    assert apply_rules(bare, rules) == Extracted({"link": "p/2"})  # no URL known: left as it is


def test_strip_trims_by_default_strips_characters_or_keeps_the_value_as_is() -> None:
    fields = extract(
        title=FieldRule("h1.title"),
        code=FieldRule(".code", strip="*"),
        raw=FieldRule("h1.title", strip=False),
    )
    assert fields == {"title": "Lamp deluxe", "code": "SKU-42", "raw": "  Lamp\n   deluxe "}


def test_regex_takes_the_first_group_or_the_whole_match_and_no_match_is_no_value() -> None:
    assert extract(
        count=FieldRule(".stock", regex=r"(\d+) in stock", type="int"),
        word=FieldRule(".stock", regex=r"[a-z]+"),
        absent=FieldRule(".stock", regex=r"sold out"),
    ) == {"count": 12, "word": "in"}


def test_a_required_field_a_processor_refuses_is_drift_with_the_reason() -> None:
    rules = RuleSet(
        "r",
        {
            "title": FieldRule("h1.title", required=True),
            "price": FieldRule(".call", type="price", required=True),
            "gone": FieldRule(".nowhere", required=True),
            "stock": FieldRule(".stock", regex=r"sold out", required=True),
        },
    )
    result = apply_rules(PAGE, rules, url=URL)
    assert isinstance(result, Drift)
    assert result.missing == ("price", "gone", "stock")
    assert result.describe() == ("price (not a price: 'call us'), gone, stock (no match for regex: '12 in stock')")


def test_with_all_each_item_is_processed_and_refused_items_are_left_out() -> None:
    assert extract(sizes=FieldRule(".size", all=True, type="price")) == {"sizes": [10.0, 14.5]}
    rules = RuleSet("r", {"sizes": FieldRule(".size", all=True, regex=r"XL", required=True)})
    assert apply_rules(PAGE, rules) == Drift(("sizes",), (("sizes", "no match for regex: 'S: 10,00 €'"),))


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("€1.299,00", 1299.0),
        ("$1,299.00", 1299.0),
        ("1 299,50 zł", 1299.5),
        ("1\u00a0299,50\u00a0€", 1299.5),
        ("CHF 1'299.50", 1299.5),
        ("12,50 €", 12.5),
        ("$56.40", 56.4),
        ("€1.299", 1299.0),
        ("0,999 BTC", 0.999),
        ("1.299.000 Ft", 1299000.0),
        ("₹1,29,999.00", 129999.0),
        ("12,- €", 12.0),
        ("from $9.99 to $19.99", 9.99),
        ("-5.00", -5.0),
        ("call us", None),
        ("1.234,5,6", None),
        (".99", 0.99),
        ("€ .99", 0.99),
        ("-,50 €", -0.5),
        (".999", 0.999),
        ("12,5,0", None),
        ("1,29,99.00", None),
        ("5-", 5.0),
        ("9" * 400, None),
        ("9" * 400 + ".00 €", None),
    ],
)
def test_price_reads_the_first_amount_with_either_decimal_separator(text: str, amount: float | None) -> None:
    assert to_price(text) == amount


@pytest.mark.parametrize(
    ("text", "number"),
    [("42", 42), (" -3 ", -3), ("1,299", 1299), ("1.299.000", 1299000), ("1 299", 1299), ("1.5", None)]
    + [("12 apples", None), ("1,29", None), ("1,299.000", None), ("", None)]
    + [("9223372036854775807", 2**63 - 1), ("-9223372036854775808", -(2**63)), ("9223372036854775808", None)]
    + [("9" * 5000, None), ("1,000" * 2000, None)],
)
def test_int_accepts_digits_grouped_by_thousands_only(text: str, number: int | None) -> None:
    assert to_int(text) == number


@pytest.mark.parametrize(
    ("text", "number"),
    [("2.5", 2.5), ("-3", -3.0), ("1e3", 1000.0), ("nan", None), ("inf", None), ("1,5", None), ("1_000", None)]
    + [("-inf", None), ("NaN", None), ("1e999", None), ("-1e999", None), ("9" * 400, None)],
)
def test_float_accepts_what_json_writes(text: str, number: float | None) -> None:
    assert to_float(text) == number


def test_a_bad_type_or_pattern_is_refused_when_the_rule_is_made() -> None:
    with pytest.raises(ValueError, match="'decimal' is not one of string, int, float, price"):
        FieldRule(".price", type="decimal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad pattern: missing \\), unterminated subpattern"):
        FieldRule(".price", regex="(\\d+")


def test_a_small_page_whose_rules_have_a_regex_is_parsed_under_the_time_limit() -> None:
    """A pattern that backtracks catastrophically would hang the extractor's own thread on a
    small page; with a regex in the rules every page goes to the worker, which is killed."""
    page = "<p>" + "a" * 40 + "!</p>"
    rules = RuleSet("r", {"f": FieldRule("p", regex=r"^(a+)+$")})
    sandbox = ParseSandbox(timeout=1.0)
    try:
        sandbox.start()
        assert sandbox.apply(b"<p>aaa</p>", rules) == Extracted({"f": "aaa"})  # the worker is up
        started = time.monotonic()
        result = sandbox.apply(page.encode(), rules)
        assert isinstance(result, Unparseable) and result.reason == "parsing took longer than 1 s"
        assert time.monotonic() - started < 5
        assert sandbox.killed == 1
    finally:
        sandbox.close()


def test_a_value_that_is_not_a_url_is_refused_and_a_base_that_is_not_one_ignored() -> None:
    rules = RuleSet(
        "r", {"link": FieldRule("a", attr="href", required=True), "all": FieldRule("a", attr="href", all=True)}
    )
    page = '<a href="http://[oops/">x</a><a href="https://[::1/x">y</a><a href="/p/2">z</a>'
    assert apply_rules(page, rules, url=URL) == Drift(("link",), (("link", "not a URL: 'http://[oops/'"),))
    assert apply_rules(page.replace("[oops/", "ok/"), rules, url=URL) == Extracted(
        {"link": "http://ok/", "all": ["http://ok/", "https://shop.test/p/2"]}
    )
    based = '<html><head><base href="http://[x"></head><body><a href="p/2">x</a></body></html>'
    assert apply_rules(based, rules, url=URL) == Extracted(
        {"link": "https://shop.test/p/p/2", "all": ["https://shop.test/p/p/2"]}
    )
    assert page_base("http://[bad/", "p/2") is None
    assert page_base("http://[bad/", "https://shop.test/c/") == "https://shop.test/c/"


def test_a_small_hostile_page_parsed_in_the_extractors_thread_does_not_raise() -> None:
    """Pages up to 4 KiB without a regex in the rules are parsed in the extractor's own thread:
    a value that is not a URL is a refused value there too, and anything `apply_rules` raises
    is an unparseable page, as in the worker process, never an exception out of `apply`."""
    sandbox = ParseSandbox()
    try:
        links = RuleSet("r", {"link": FieldRule("a", attr="href", required=True)})
        page = b'<html><head><base href="http://[x"></head><body><a href="http://[oops/">x</a></body></html>'
        assert sandbox.apply(page, links, url=URL) == Drift(("link",), (("link", "not a URL: 'http://[oops/'"),))
        broken = RuleSet("r", {"link": FieldRule("a[", attr="href")})  # a selector the parser refuses
        result = sandbox.apply(b"<a href='/x'>x</a>", broken, url=URL)
        assert isinstance(result, Unparseable), result
        assert result.reason.startswith("the parser failed: SelectolaxError")
        assert sandbox.killed == 0  # parsed in process: no worker was started
    finally:
        sandbox.close()


JOIN_BASES = [
    "https://shop.test/p/1",
    "http://shop.test:8080/a/b/?q=1",
    "https://shop.test",
    "HTTPS://Shop.Test/x/y",
    "https://user@shop.test/a",
    "ftp://files.test/a/b",
]
JOIN_HEADS = ["http://h.test", "https://h.test", "HTTP://h.test", "Https://h.test", "https:", "http:/", "//h.test", ""]
JOIN_HEADS += ["http://", "https://", "http://[::1]", "http://u:p@h.test:81", "http://h\u00e9.test", "http://h.test\t"]
JOIN_PATHS = ["", "/", "/a", "/a/", "/a/b.html", "/../a", "/./a", "/a/..", "/a/.", "/a//b", "//a", "/a;p", "/a;"]
JOIN_PATHS += ["a", "a/b", "./a", "../a", ".", "..", "/a b", "/a\tb", "/a\nb", "/a\\b", "/\u00e9", "/...", "/.a"]
JOIN_TAILS = ["", "?", "?x=1", "?x=/../y", "?a//b", "#", "#f", "?#", "?x#", "?#f", "?x#f", " ", "\r"]


def test_join_url_is_exactly_urljoin() -> None:
    """The fast paths for plain absolute and root-relative values give what `urljoin` gives,
    over every combination of scheme, host, path and tail forms, odd ones included."""
    values = {head + path + tail for head, path, tail in itertools.product(JOIN_HEADS, JOIN_PATHS, JOIN_TAILS)}
    values |= {" /a", "\t/a", "?x", "#x", "mailto:a@b.test", "javascript:void(0)", "/p/2?page=3#top", "data:,x"}
    compared = 0
    for base, value in itertools.product(JOIN_BASES, sorted(values)):
        try:
            expected = urljoin(base, value)
        except ValueError:
            with pytest.raises(ValueError):
                join_url(base, value)
            continue
        assert join_url(base, value) == expected, (base, value)
        compared += 1
    assert compared > 20_000


# --- flotilla check ------------------------------------------------------------------------

CHECKED = """nodes: {alpha: {}}
tree: {}
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: %s
"""


def check(tmp_path: Path, price_rule: str) -> tuple[int, list[str], str]:
    path = tmp_path / "tree.yaml"
    path.write_text(CHECKED % price_rule, encoding="utf-8")
    result = run_flotilla("check", str(path))
    return result.returncode, result.stderr.splitlines(), str(path)


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (
            '{css: .price, regex: "(\\\\d+"}',
            "rules.product.fields.price.regex: bad pattern: missing ), unterminated subpattern at position 0",
        ),
        (
            "{css: .price, type: decimal}",
            "rules.product.fields.price.type: 'decimal' is not one of string, int, float, price",
        ),
        (
            "{css: .price, regexp: x}",
            "rules.product.fields.price.regexp: unknown key; did you mean 'regex'? "
            "(allowed: css, attr, all, required, strip, regex, urljoin, type)",
        ),
        (
            '{css: .price, strip: ""}',
            "rules.product.fields.price.strip: '' must be true, false or the characters to strip (a non-empty string)",
        ),
        (
            "{css: .price, urljoin: yes please}",
            "rules.product.fields.price.urljoin: 'yes please' must be true or false",
        ),
    ],
)
def test_check_locates_a_bad_processor(tmp_path: Path, rule: str, problem: str) -> None:
    code, lines, path = check(tmp_path, rule)
    assert code == 2
    assert lines[0] == f"{path}:7: {problem}"


def test_check_accepts_every_processor_and_urljoin_on_text(tmp_path: Path) -> None:
    code, lines, _ = check(tmp_path, "{css: .price, strip: \"€$ \", regex: '([\\d.,]+)', urljoin: true, type: price}")
    assert code == 0, lines


# --- end to end ------------------------------------------------------------------------------

TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_attempts: 2, transient_base: 0.05, transient_cap: 0.2}
  - id: fetching
    node: beta
    supervisor:
      children:
        - id: extractors
          pool: {actor: extractor, size: 1}
        - id: fetchers
          pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/fetching/extractors, timeout: 5.0}}
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true, type: price}
      photo: {css: img.photo, attr: src}
      reviews: {css: a.reviews, attr: href}
      photo_as_written: {css: img.photo, attr: src, urljoin: false}
      sku: {css: "[data-sku]", attr: data-sku, regex: "SKU-0*(\\\\d+)", type: int}
  strict:
    fields:
      price: {css: .price, required: true, type: int}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
"""


def test_relative_links_are_stored_absolute_against_the_url_after_redirects(
    tmp_path: Path, clusters: list[LiveCluster]
) -> None:
    site = DemoSiteProcess()
    try:
        cluster = start_with_intake(tmp_path, clusters, TREE, EXTRA, ("alpha", "beta"))
        topology = str(cluster.topology_path)
        urls = [f"{site.url}/product/5", f"{site.url}/moved/6"]
        assert run_flotilla("submit", *urls, "--rules", "product", "--topology", topology).returncode == 0
        assert (
            run_flotilla("submit", f"{site.url}/product/7", "--rules", "strict", "--topology", topology).returncode == 0
        )
        with IntakeClient.for_topology(cluster.topology) as client:
            wait_until(
                lambda: client.counts().states["stored"] == 2 and client.counts().states["parked"] == 1,
                timeout=60,
                what="two jobs stored and one parked",
            )
        results = run_flotilla("results", "--topology", topology)
        by_url = {row["url"]: row["fields"] for row in map(json.loads, results.stdout.splitlines())}
        assert by_url[urls[0]] == {
            "title": "Product 5",
            "price": 19.5,
            "photo": f"{site.url}/img/5.jpg",
            "reviews": f"{site.url}/product/reviews/5",
            "photo_as_written": "/img/5.jpg",
            "sku": 5,
        }
        moved = by_url[urls[1]]  # 301 to /product/6: its links are relative to that page
        assert moved["reviews"] == f"{site.url}/product/reviews/6" and moved["photo"] == f"{site.url}/img/6.jpg"
        parked = run_flotilla("jobs", "--state", "parked", "--topology", topology)
        assert "DRIFT: missing required fields: price (not an integer: '$26.90')" in parked.stdout
    finally:
        site.stop()


def test_reextraction_joins_relative_urls_to_the_jobs_url(tmp_path: Path) -> None:
    """The intake in-process, with a real journal file and a real captured page: re-extracted
    fields are processed as the extractor processes them, with the job's URL as the base."""
    pages = PageStore(tmp_path / "pages")
    digest, _ = pages.put(product(5).encode())
    journal = open_journal(tmp_path / "journal.sqlite")
    journal.submit([NewJob("local:k", "http://shop.test/product/5", "product")])
    lease = journal.lease(1, 30)[0]
    assert journal.store("local:k", lease.token, {"title": "Product 5"}, digest, captured=True)
    journal.close()
    fields = {
        "title": FieldRule("h1.title", required=True),
        "photo": FieldRule("img.photo", attr="src"),
        "reviews": FieldRule("a.reviews", attr="href"),
        "price": FieldRule(".price", type="price"),
    }
    rules = {"product": RuleSet("product", fields)}
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
        later = intake.handle(msgspec.msgpack.encode(Reextract(1, "product", session="s")), "local")
        assert isinstance(later, Later)
        answers: list[bytes] = []
        later.bind(answers.append)
        wait_until(lambda: bool(answers), timeout=20, what="the re-extraction's answer")
        answer = answer_decoder.decode(answers[0])
        assert isinstance(answer, Reextracted), answer
        assert [(k.key, k.outcome) for k in answer.keys] == [("local:k", "changed")]
        result = intake.journal.result("local:k")
        assert result is not None
        assert result["fields"] == {
            "title": "Product 5",
            "photo": "http://shop.test/img/5.jpg",
            "reviews": "http://shop.test/product/reviews/5",
            "price": 19.5,
        }
    finally:
        intake.close()
