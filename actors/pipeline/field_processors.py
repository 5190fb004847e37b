"""Field processors: what an extraction rule does to a value after reading it from the page.

In this order, each on the value the step before gave (with ``all: true``, on each item):

1. ``strip``: ``true`` (the default) trims whitespace at both ends and, for text, collapses each
   run of whitespace to one space; a string does that and then also strips those characters
   from both ends (``strip: "€$ "``); ``false`` keeps the value exactly as the page has it
   (an attribute verbatim, an element's text as its text content).
2. ``regex``: the first match of a Python regular expression anywhere in the value; its first
   group (or the whole match if it has none) becomes the value. No match: no value.
3. ``urljoin``: the value made an absolute URL against the page's base URL (its ``<base
   href>`` if it has one, else the URL it was fetched from, after redirects). On by default
   for ``attr: href`` and ``attr: src`` (`URL_ATTRIBUTES`). A value `urljoin` cannot split
   (``http://[oops/``) is refused: "not a URL".
4. ``type``: ``string`` (the default) keeps the text; ``int``, ``float`` and ``price`` make it
   a JSON number (`to_int`, `to_float`, `to_price` say what each accepts). A value that does
   not convert: no value.

A value that comes out empty, or that a step refuses, is missing, with the reason; a
required field that is missing makes the page DRIFT, as when its element is not there.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

FieldType = Literal["string", "int", "float", "price"]
FIELD_TYPES: tuple[FieldType, ...] = ("string", "int", "float", "price")
"""The values of a field's `type`."""

URL_ATTRIBUTES = frozenset({"href", "src"})
"""Attributes whose values are made absolute URLs unless the field says ``urljoin: false``.
`srcset` is not one: it lists candidates with sizes, not one URL (take one with ``regex:
'^\\s*(\\S+)'`` and ``urljoin: true``)."""

_SHOWN_CHARS = 40
"""Characters of a refused value quoted in the reason."""

_GROUP_SPACES = " \u00a0\u2009\u202f'\u2019"
"""Characters that only ever group thousands in a price: spaces (plain, no-break, thin,
narrow no-break) and apostrophes (Swiss ``1'299.00``)."""

_PRICE_NUMBER = re.compile(rf"[-+]?(?:[.,](?=\d))?\d+(?:(?:[.,]|[{_GROUP_SPACES}](?=\d{{3}}(?!\d)))\d+)*")
"""The first number of a price text: digits with ``.`` and ``,`` between them (and possibly
before them: ``.99``), and spaces or apostrophes followed by a group of exactly three digits."""

_THOUSANDS = re.compile(r"\d+(?:(?:[.,]\d{2,3})*[.,]\d{3})?")
"""The whole part of an amount once its grouping separators are known: digits, then groups of
three digits (or of two before the last group of three, as in India: ``1,29,999``)."""

_MAX_NUMBER_CHARS = 100
"""A value longer than this is not an `int` (Python refuses to read more than 4,300 digits,
and no count on a page needs a hundred)."""

_INT64 = range(-(2**63), 2**63)
"""The integers a result may hold (MessagePack, between nodes, has no larger ones)."""

_INT = re.compile(r"[-+]?(?:\d{1,3}([,. \u00a0\u2009\u202f'\u2019])\d{3}(?:\1\d{3})*|\d+)", re.ASCII)
"""An integer: digits, or groups of three digits after the first, all with one separator."""


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 3] + "...")


def to_int(value: str) -> int | None:
    """An integer: ASCII digits with an optional sign, possibly grouped by thousands with one
    kind of separator (``,``, ``.``, a space or an apostrophe: ``1,299`` and ``1.299.000``);
    surrounding spaces are ignored. Anything else (``1.5``, ``12 apples``), and a number outside
    the signed 64-bit range, is None."""
    text = value.strip()
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    match = _INT.fullmatch(text)
    if match is None:
        return None
    number = int(match.group().translate({ord(c): None for c in ",." + _GROUP_SPACES}))
    return number if number in _INT64 else None


def to_float(value: str) -> float | None:
    """A finite number written as Python and JSON write one (``.`` as the decimal point, an
    optional sign and exponent: ``12.5``, ``-3``, ``1e3``); surrounding spaces are ignored.
    Thousands separators, ``nan`` and ``inf`` are not numbers (use ``price`` for formatted
    amounts)."""
    text = value.strip()
    if not text.isascii() or "_" in text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def to_price(value: str) -> float | None:
    """The amount of a price text, as a float: the first number in it, whatever currency
    symbol, code or words surround it. Spaces and apostrophes between digit groups are
    thousands separators. Of ``.`` and ``,``: when both appear, the last one is the decimal
    separator (``€1.299,00`` and ``$1,299.00`` are 1299.0); when one of them appears more than
    once it groups thousands (``1.299.000``); when it appears once it is the decimal separator
    (``12,50 zł`` is 12.5), unless exactly three digits follow it and the digits before it are
    not ``0``: then it groups thousands (``€1.299`` and ``$1,299`` are 1299.0; for a site that
    writes three decimals, take the number with ``regex`` and use ``float``). A number may
    start with its decimal separator (``.99`` is 0.99). Groups of thousands have three digits
    (two before the last, as in India: ``1,29,999``): ``12,5,0`` is None. What follows the
    number is ignored (``5,-`` is 5.0). A text without digits (``call us``), and an amount too
    large for a float, is None."""
    match = _PRICE_NUMBER.search(value)
    if match is None:
        return None
    text = match.group().translate({ord(c): None for c in _GROUP_SPACES})
    sign = ""
    if text[0] in "+-":
        sign, text = text[0], text[1:]
    dots, commas = text.count("."), text.count(",")
    if dots and commas:
        decimal = "." if text.rfind(".") > text.rfind(",") else ","
    elif dots + commas == 1:
        separator = "." if dots else ","
        whole, _, fraction = text.partition(separator)
        decimal = "" if len(fraction) == 3 and whole not in ("0", "") else separator
    else:
        decimal = ""  # no separator, or one of them repeated: thousands
    grouping = {",": ".", ".": ","}.get(decimal, ".,")
    whole, _, fraction = text.partition(decimal) if decimal else (text, "", "")
    if decimal and (decimal in fraction or any(g in fraction for g in grouping)):
        return None  # a separator after the decimal one: not one number
    if whole and not _THOUSANDS.fullmatch(whole):
        return None  # digit groups of other sizes (12,5,0): not one number
    digits = whole.translate({ord(c): None for c in grouping})
    amount = float(f"{sign}{digits or '0'}.{fraction or '0'}")
    return amount if math.isfinite(amount) else None


CONVERTERS: dict[FieldType, Callable[[str], Any] | None] = {
    "string": None,
    "int": to_int,
    "float": to_float,
    "price": to_price,
}
"""What each `type` does to a value (None: keeps the text)."""

_NOT_A = {"int": "not an integer", "float": "not a number", "price": "not a price"}


def page_base(url: str | None, base_href: str | None) -> str | None:
    """The URL relative values of a page are relative to: its `<base href>` (itself relative
    to the page's URL) when that gives an http(s) URL, else the page's URL; without user info
    (a sealed password must not end up in results) and fragment. None when neither is known
    (or the page's URL is not one `urllib` can split); a `<base href>` that is not a URL
    (``http://[x``) is ignored."""
    try:
        page = _without_userinfo(url) if url else ""
    except ValueError:
        page = ""
    if base_href:
        try:
            joined = urljoin(page, base_href.strip())
            if urlsplit(joined).scheme in ("http", "https"):
                return _without_userinfo(joined)
        except ValueError:
            pass  # not a URL: the page's URL is the base
    return page or None


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, ""))


_PLAIN_ABSOLUTE = re.compile(
    r"https?://[A-Za-z0-9._~%!$&'()*+,=:@-]+(?:/[^?#\t\r\n\\;]*)?(?:\?[^#\t\r\n]+)?(?:#[^\t\r\n]+)?"
)
"""An http(s) URL that `urljoin` returns exactly as it is, whatever the base: a lower-case
scheme, an ASCII host without brackets, no tab or line break, no ``;`` in its path (path
parameters) and no empty query or fragment (``?`` or ``#`` with nothing after it)."""

_PLAIN_ROOT_RELATIVE = re.compile(
    r"(?:/|(?:/(?!\.\.?(?:[/?#]|\Z))[^/?#\t\r\n\\;]+)+/?)(?:\?[^#\t\r\n]+)?(?:#[^\t\r\n]+)?"
)
"""A path from the root (``/img/9.jpg?s=2``) that `urljoin` appends to the base's origin as it
is: no ``//`` host, empty segment, ``.`` or ``..`` segment, ``;``, backslash, tab or line break,
and no empty query or fragment."""


@functools.lru_cache(maxsize=64)
def _origin(base: str) -> str | None:
    """``scheme://host`` of an http(s) `base`, or None (another scheme, no host)."""
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def join_url(base: str, value: str) -> str:
    """`urljoin(base, value)`, without its cost for the values most links are: absolute http(s)
    URLs and paths from the root, in their plain forms (`_PLAIN_ABSOLUTE`,
    `_PLAIN_ROOT_RELATIVE`). Raises ValueError for a value `urljoin` cannot split."""
    if value.startswith("/"):
        if _PLAIN_ROOT_RELATIVE.fullmatch(value):
            origin = _origin(base)
            if origin is not None:
                return origin + value
    elif value.startswith(("http://", "https://")) and _PLAIN_ABSOLUTE.fullmatch(value):
        return value
    return urljoin(base, value)


@dataclass(frozen=True)
class Processing:
    """The processors of one field, ready to run (patterns compiled once, with the rule)."""

    strip_chars: str | None = None
    pattern: re.Pattern[str] | None = None
    join: bool = False
    type: FieldType = "string"

    def apply(self, value: str, base: str | None) -> tuple[Any, str]:
        """The processed value and "" — or None and why there is no value."""
        if self.strip_chars:
            value = value.strip(self.strip_chars)
            if not value:
                return None, "nothing left after strip"
        if self.pattern is not None:
            match = self.pattern.search(value)
            if match is None:
                return None, f"no match for regex: {_shown(value)}"
            found = match.group(1) if self.pattern.groups else match.group()
            if not found:
                return None, f"regex matched nothing: {_shown(value)}"
            value = found
        if self.join and base is not None:
            try:
                value = join_url(base, value)
            except ValueError:
                return None, f"not a URL: {_shown(value)}"
        convert = CONVERTERS[self.type]
        if convert is None:
            return value, ""
        converted = convert(value)
        if converted is None:
            return None, f"{_NOT_A[self.type]}: {_shown(value)}"
        return converted, ""


def processing_of(
    attr: str | None, strip: bool | str, regex: str | None, join: bool | None, type_: str
) -> Processing | None:
    """The processing a field's keys ask for, or None when the value is used as read (the fast
    path). Raises ValueError for a type not in `FIELD_TYPES` or a pattern that does not compile."""
    if type_ not in FIELD_TYPES:
        raise ValueError(f"{type_!r} is not one of {', '.join(FIELD_TYPES)}")
    try:
        pattern = re.compile(regex) if regex is not None else None
    except re.error as exc:
        raise ValueError(f"bad pattern: {exc}") from None
    joins = join if join is not None else attr in URL_ATTRIBUTES
    strip_chars = strip if isinstance(strip, str) else None
    if not (strip_chars or pattern or joins or type_ != "string"):
        return None
    return Processing(strip_chars, pattern, joins, type_)
