"""Extraction rules: which fields to take from a page, with CSS selectors (selectolax).

A rule set names fields; each field has a CSS selector, optionally an attribute to read
instead of the text, whether all matches are wanted (a list) or the first, whether it is
required, and the processors its value goes through (`flotilla.actors.pipeline.field_processors`:
strip, regex, urljoin, type). Applying a rule set to a 200 page gives the fields, or `Drift` listing the required
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

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from selectolax.lexbor import LexborHTMLParser

from flotilla.actors.pipeline.field_processors import FieldType, Processing, page_base, processing_of

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
    """How to take one field from a page, and what to do to its value (the processors of
    `flotilla.actors.pipeline.field_processors`, in that module's order). Raises ValueError for
    a `type` it does not know or a `regex` that does not compile."""

    css: str
    attr: str | None = None
    all: bool = False
    required: bool = False
    strip: bool | str = True
    """True: whitespace trimmed (and collapsed in text); a string: also these characters
    stripped from both ends; False: the value as the page has it."""
    regex: str | None = None
    """A pattern whose first match's first group (or whole match) becomes the value."""
    urljoin: bool | None = None
    """Make the value an absolute URL against the page's (None: only for `href` and `src`)."""
    type: FieldType = "string"
    """``string``, or ``int``, ``float``, ``price`` for a number."""
    processing: Processing | None = field(init=False, repr=False, compare=False)
    """The processors, ready to run (None: the value is used as read)."""

    def __post_init__(self) -> None:
        processing = processing_of(self.attr, self.strip, self.regex, self.urljoin, self.type)
        object.__setattr__(self, "processing", processing)


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

    @functools.cached_property
    def has_regex(self) -> bool:
        """Whether a field has a `regex` (its pages are parsed under the parse time limit);
        worked out once, on first use."""
        return any(rule.regex is not None for rule in self.fields.values())


class ExtractionRules(dict[str, RuleSet]):
    """The topology's rule sets by name, as one actor system holds them (an extension the
    node runtime puts there; jobs name their rule set)."""

    @classmethod
    def of(cls, system: ActorSystem) -> ExtractionRules:
        """The rule sets `system` holds (none if nobody put any there)."""
        return system.extensions.setdefault(cls, cls)


@dataclass(frozen=True)
class Drift:
    """A 200 page without the required fields `missing`; `reasons` says, for those whose
    value a processor refused, why (field name, reason)."""

    missing: tuple[str, ...]
    reasons: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """The missing fields, each with its reason if it has one: ``title, price (not a
        price: 'call us')``."""
        why = dict(self.reasons)
        return ", ".join(f"{name} ({why[name]})" if name in why else name for name in self.missing)


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
        if not isinstance(value, str):
            return None
        return (value if rule.strip is False else value.strip()) or None
    if rule.strip is False:
        return node.text(deep=True) or None
    text = node.text(deep=True, separator=" ", strip=True)
    return " ".join(text.split()) or None


def _processed(value: str | None, processing: Processing, base: str | None, why: list[str]) -> Any:
    """`value` through `processing`; None (with the reason appended to `why`) if refused."""
    if value is None:
        return None
    result, reason = processing.apply(value, base)
    if result is None:
        why.append(reason)
    return result


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


def _base_of(tree: LexborHTMLParser, url: str | None) -> str | None:
    """The base URL of the page in `tree`, fetched from `url` (`page_base`)."""
    base = tree.css_first("base[href]")
    return page_base(url, base.attributes.get("href") if base is not None else None)


def apply_rules(
    html: str | bytes, rules: RuleSet, headers: Mapping[str, str] | None = None, url: str | None = None
) -> Extracted | Drift | Blocked:
    """Apply `rules` to a page served with `headers` (those of `challenge_headers`) from `url`
    (the URL after redirects; relative URLs in fields are joined to it, or to the page's
    `<base href>`; without either they stay as they are)."""
    tree = LexborHTMLParser(html)
    fields: dict[str, Any] = {}
    missing = []
    reasons: list[tuple[str, str]] = []
    base: str | None = None
    base_known = False
    for name, rule in rules.fields.items():
        processing = rule.processing
        why: list[str] = []
        if processing is not None and processing.join and not base_known:
            base, base_known = _base_of(tree, url), True
        if rule.all:
            found = (_value(n, rule) for n in tree.css(rule.css))
            if processing is not None:
                found = (_processed(v, processing, base, why) for v in found)
            values = [v for v in found if v is not None]
            value: Any = values or None
        else:
            node = tree.css_first(rule.css)
            value = _value(node, rule) if node is not None else None
            if processing is not None:
                value = _processed(value, processing, base, why)
        if value is None:
            if rule.required:
                missing.append(name)
                if why:
                    reasons.append((name, why[0]))
            continue
        fields[name] = value
    has_required = not missing and any(rule.required for rule in rules.fields.values())
    if not has_required:
        signal = challenge_signal(tree, rules, headers or {})
        if signal is not None:
            return Blocked(signal)
    if missing:
        return Drift(tuple(missing), tuple(reasons))
    return Extracted(fields)
