"""Canonical URLs: the spellings of one page give one natural key."""

from __future__ import annotations

import pytest

from flotilla.actors.pipeline.urls import canonical_url, natural_key

SAME_PAGE = [
    ("http://example.com/list?a=1&b=2", "http://example.com/list?b=2&a=1"),
    ("http://example.com/a%2fb", "http://example.com/a%2Fb"),
    ("http://bücher.example/katalog", "http://xn--bcher-kva.example/katalog"),
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com/a#reviews", "http://example.com/a"),
    ("HTTP://Example.COM/a", "http://example.com/a"),
    ("http://example.com/%7Euser", "http://example.com/~user"),
    ("http://example.com/caf%c3%a9", "http://example.com/café"),
    ("https://example.com", "https://example.com/"),
    ("http://example.com/s?q=a%20b&flag", "http://example.com/s?flag=&q=a+b"),
]
"""Pairs that name the same page."""


@pytest.mark.parametrize(("one", "other"), SAME_PAGE)
def test_spellings_of_one_page_have_one_key(one: str, other: str) -> None:
    assert canonical_url(one) == canonical_url(other)
    assert natural_key(one, "product") == natural_key(other, "product")


def test_the_canonical_form_is_sorted_punycoded_and_without_defaults() -> None:
    assert canonical_url("HTTP://Bücher.Example:80/a%2fb?b=2&a=1#x") == "http://xn--bcher-kva.example/a%2Fb?a=1&b=2"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://example.com/a", "https://example.com/a"),
        ("http://example.com:8080/a", "http://example.com/a"),
        ("http://example.com/a?x=1", "http://example.com/a?x=2"),
        ("http://example.com/a", "http://example.com/A"),
        ("http://u:p1@example.com/x", "http://u:p2@example.com/x"),
    ],
)
def test_different_pages_keep_different_keys(one: str, other: str) -> None:
    assert natural_key(one, "product") != natural_key(other, "product")


def test_the_rule_set_is_part_of_the_key() -> None:
    assert natural_key("http://example.com/a", "product") != natural_key("http://example.com/a", "article")


def test_user_info_is_kept_as_written_and_ipv6_hosts_keep_their_brackets() -> None:
    assert canonical_url("http://User:Secret@Example.com:80/x") == "http://User:Secret@example.com/x"
    assert canonical_url("http://[::1]:8080/x") == "http://[::1]:8080/x"
    assert canonical_url("http://[::1]:80/x") == "http://[::1]/x"
    assert canonical_url("http://[2001:DB8::1]/x") == "http://[2001:db8::1]/x"


@pytest.mark.parametrize("url", ["http://[::1/x", "http://example.com:99999/"])
def test_a_malformed_url_raises_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        canonical_url(url)
