"""Extraction rules: which fields to take from a page, with CSS selectors (selectolax).

A rule set names fields; each field has a CSS selector, optionally an attribute to read
instead of the text, whether all matches are wanted (a list) or the first, and whether it is
required. Applying a rule set to a 200 page gives the fields, or `Drift` listing the required
fields that are missing (the page's layout changed), or `Blocked` if the page carries one of
the rule set's block markers (a CAPTCHA wall served with 200).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selectolax.lexbor import LexborHTMLParser

DEFAULT_BLOCK_MARKERS = ("captcha", "are you a robot", "unusual traffic")
"""Text that marks a challenge page (compared in lower case)."""


@dataclass(frozen=True)
class FieldRule:
    """How to take one field from a page."""

    css: str
    attr: str | None = None
    all: bool = False
    required: bool = False


@dataclass(frozen=True)
class RuleSet:
    """The fields of one kind of page."""

    name: str
    fields: dict[str, FieldRule]
    block_markers: tuple[str, ...] = DEFAULT_BLOCK_MARKERS
    wait_budget: float | None = None
    """Seconds its jobs may wait behind open breakers, Hold or missing proxies (None: the
    router's `wait_budget`)."""
    credentials: bool = False
    """Whether its jobs' URLs may carry credentials (``user:password@``; sealed in the journal)."""


@dataclass(frozen=True)
class Drift:
    """A 200 page without the required fields `missing`."""

    missing: tuple[str, ...]


@dataclass(frozen=True)
class Blocked:
    """A 200 page that is a challenge (it contains `marker`)."""

    marker: str


@dataclass
class Extracted:
    """The fields taken from a page."""

    fields: dict[str, Any] = field(default_factory=dict)


def _value(node: Any, rule: FieldRule) -> str | None:
    if rule.attr is not None:
        value = node.attributes.get(rule.attr)
        return value.strip() if isinstance(value, str) else None
    text = node.text(deep=True, separator=" ", strip=True)
    return " ".join(text.split()) or None


def apply_rules(html: str | bytes, rules: RuleSet) -> Extracted | Drift | Blocked:
    """Apply `rules` to a page."""
    tree = LexborHTMLParser(html)
    body_text = (tree.body.text(separator=" ") if tree.body is not None else "").lower()
    for marker in rules.block_markers:
        if marker in body_text:
            return Blocked(marker)
    fields: dict[str, Any] = {}
    missing = []
    for name, rule in rules.fields.items():
        if rule.all:
            values = [v for v in (_value(n, rule) for n in tree.css(rule.css)) if v is not None]
            value: Any = values or None
        else:
            node = tree.css_first(rule.css)
            value = _value(node, rule) if node is not None else None
        if value is None:
            if rule.required:
                missing.append(name)
            continue
        fields[name] = value
    if missing:
        return Drift(tuple(missing))
    return Extracted(fields)
