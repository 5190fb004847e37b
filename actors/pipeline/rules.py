"""Extraction rules: which fields to take from a page, with CSS selectors (selectolax).

A rule set names fields; each field has a CSS selector, optionally an attribute to read
instead of the text, whether all matches are wanted (a list) or the first, and whether it is
required. Applying a rule set to a 200 page gives the fields, or `Drift` listing the required
fields that are missing (the page's layout changed), or `Blocked` if the page is a challenge
(a CAPTCHA wall or bot check served with 200).

A challenge is told by the signals a challenge page has, never by a word somewhere in an
article: a response header that marks one (`cf-mitigated: challenge`), or, on a *short* page
(at most `CHALLENGE_MAX_WORDS` words of visible text), one of the rule set's block selectors
(challenge forms, Turnstile, hCaptcha and reCAPTCHA widgets, the Incapsula iframe) or one of its
block markers in the title or the visible text. A page that has every required field of the
rule set is never a challenge page: it is the page that was asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from selectolax.lexbor import LexborHTMLParser

if TYPE_CHECKING:
    from flotilla.actors.core.system import ActorSystem

DEFAULT_BLOCK_MARKERS = (
    "captcha",
    "are you a robot",
    "unusual traffic",
    "just a moment",
    "checking your browser",
    "verify you are human",
    "attention required",
)
"""Text that marks a short page as a challenge, in its title or visible text (compared in
lower case): the words of CAPTCHA walls, Cloudflare's interstitial ("Just a moment...",
"Attention Required!") and Google's unusual-traffic page."""

DEFAULT_BLOCK_SELECTORS = (
    "form#challenge-form",
    'iframe[src^="https://challenges.cloudflare.com"]',
    ".cf-turnstile",
    'iframe[src*="_Incapsula_Resource"]',
    'div#infoDiv0 a[href*="//www.google.com/policies/terms/"]',
    ".g-recaptcha",
    ".h-captcha",
    'iframe[src*="hcaptcha.com"]',
    'iframe[src*="/recaptcha/"]',
)
"""Elements that mark a short page as a challenge: Cloudflare's challenge form and its
challenge-platform iframe, the Turnstile widget, Imperva Incapsula's resource iframe, the terms
link of Google's unusual-traffic page (Crawlee's blocked selectors), hCaptcha and reCAPTCHA
widgets."""

CHALLENGE_MAX_WORDS = 300
"""Most words of visible text (title, scripts and styles left out) a page may have and still be
judged a challenge by its markers or selectors. Challenge pages carry a sentence or two of
instructions (tens of words, rarely past 150); an article, with its navigation and footer, has
more. So an article that discusses CAPTCHAs, or has a reCAPTCHA on its comment form, is not one."""

CHALLENGE_HEADERS = {"cf-mitigated": "challenge"}
"""Response headers (lower-case name → value) that mark any page as a challenge: Cloudflare
sets `cf-mitigated: challenge` on the challenge pages it serves. The fetcher passes these
headers of a 200 answer on to the extractor."""


DEFAULT_WAIT_BUDGET = 300.0
"""Seconds a job may spend waiting behind an open breaker, Hold or a missing proxy before
it ends dead (docs/resilience.md: one open-time cap's worth, so a job sees at least one trial
round after the longest opening; a rule set or the router's `wait_budget` overrides it)."""


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
    block_selectors: tuple[str, ...] = DEFAULT_BLOCK_SELECTORS
    credentials: bool = False
    """Whether its jobs' URLs may carry credentials (``user:password@``; sealed in the journal)."""
    capture: bool = False
    """Whether its pages are captured (kept compressed under their content hash, for
    `flotilla reextract`: actors/pipeline/captures.py)."""


class ExtractionRules(dict[str, RuleSet]):
    """The topology's rule sets by name, as one actor system holds them (an extension the
    node runtime puts there; jobs name their rule set)."""

    @classmethod
    def of(cls, system: ActorSystem) -> ExtractionRules:
        """The rule sets `system` holds (none if nobody put any there)."""
        return system.extensions.setdefault(cls, cls)


@dataclass(frozen=True)
class Drift:
    """A 200 page without the required fields `missing`."""

    missing: tuple[str, ...]


@dataclass(frozen=True)
class Blocked:
    """A 200 page that is a challenge; `signal` says what gave it away."""

    signal: str


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


def challenge_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of `CHALLENGE_HEADERS` that a response has (names in lower case)."""
    return {name: headers[name] for name in CHALLENGE_HEADERS if name in headers}


def challenge_signal(tree: LexborHTMLParser, rules: RuleSet, headers: Mapping[str, str]) -> str | None:
    """What marks the page in `tree` as a challenge, or None. Strips its scripts and styles."""
    for name, value in CHALLENGE_HEADERS.items():
        if headers.get(name, "").strip().lower() == value:
            return f"header {name}: {value}"
    tree.strip_tags(["script", "style", "template"])
    words = (tree.body.text(separator=" ") if tree.body is not None else "").split()
    if len(words) > CHALLENGE_MAX_WORDS:
        return None
    for selector in rules.block_selectors:
        if tree.css_first(selector) is not None:
            return f"element {selector}"
    title_node = tree.css_first("title")
    title = title_node.text().lower() if title_node is not None else ""
    for marker in rules.block_markers:
        if marker in title:
            return f"title {marker!r}"
    text = " ".join(words).lower()
    for marker in rules.block_markers:
        if marker in text:
            return f"text {marker!r}"
    return None


def apply_rules(
    html: str | bytes, rules: RuleSet, headers: Mapping[str, str] | None = None
) -> Extracted | Drift | Blocked:
    """Apply `rules` to a page served with `headers` (those of `challenge_headers`)."""
    tree = LexborHTMLParser(html)
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
    has_required = not missing and any(rule.required for rule in rules.fields.values())
    if not has_required:
        signal = challenge_signal(tree, rules, headers or {})
        if signal is not None:
            return Blocked(signal)
    if missing:
        return Drift(tuple(missing))
    return Extracted(fields)
