"""Checks of single values; each returns the text of the problem, or None when the value is fine.

The texts are what `flotilla check` prints after the YAML path and line.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selectolax.lexbor import LexborHTMLParser

from flotilla.nodes.config.schema import MAX_NAME_CHARS, MAX_SECONDS

FORBIDDEN_DATA_DIRS = ("/proc", "/sys", "/dev")
"""Kernel file systems a data directory must not be under (journals and sockets cannot live
there; writing into them can hang or crash the node)."""


def check_name(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{value!r} must be a non-empty string"
    if len(value) > MAX_NAME_CHARS:
        return f"{value[:20]!r}... is longer than {MAX_NAME_CHARS} characters"
    if "/" in value or value.strip() != value:
        return f"{value!r} must not contain '/' or surrounding spaces"
    return None


def check_text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"{value!r} must be a string"


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        hint = difflib.get_close_matches(str(value), choices, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{value!r} is not one of {', '.join(choices)}{suggestion}"

    return check


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_at_least(low: int, high: int = 1_000_000_000) -> Callable[[Any], str | None]:
    """An integer within low..high (every count has a ceiling the node can use)."""

    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return f"{short(value)} must be an integer >= {low} and <= {high}"

    return check


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_seconds(value: Any) -> str | None:
    return (
        None
        if is_number(value) and 0 < value <= MAX_SECONDS
        else f"{short(value)} must be a number of seconds > 0 and <= {MAX_SECONDS:g}"
    )


AGE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
"""The units an age may be written in (`7d`, `12h`, `30m`, `90s`)."""
MAX_AGE = 100 * 365 * 86400.0


def age_seconds(value: Any) -> float | None:
    """An age as seconds: a number of seconds or a number with a unit of `AGE_UNITS`; None
    for ``keep`` or null (kept forever). Raises ValueError for anything else."""
    if value is None or value == "keep":
        return None
    if is_number(value):
        seconds = float(value)
    elif isinstance(value, str) and value[-1:] in AGE_UNITS:
        try:
            seconds = float(value[:-1]) * AGE_UNITS[value[-1]]
        except ValueError:
            raise ValueError(value) from None
    else:
        raise ValueError(value)
    if not 0 < seconds <= MAX_AGE:
        raise ValueError(value)
    return seconds


def check_age(value: Any) -> str | None:
    try:
        age_seconds(value)
    except ValueError:
        return f"{short(value)} must be an age (seconds, or a number with s, m, h or d: 7d) or keep"
    return None


def check_fraction(value: Any) -> str | None:
    return None if is_number(value) and 0 <= value <= 1 else f"{value!r} must be a number within 0..1"


def check_shutdown(allow_infinity: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value == "brutal_kill" or (is_number(value) and 0 < value <= MAX_SECONDS):
            return None
        if value == "infinity":
            return (
                None
                if allow_infinity
                else (
                    "'infinity' is only allowed for supervisors and "
                    "pools: a worker that never stops would hang shutdown"
                )
            )
        extra = ", infinity" if allow_infinity else ""
        return f"{value!r} must be a number of seconds > 0, brutal_kill{extra}"

    return check


def check_address(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith("tcp://"):
        return f"{value!r} must look like tcp://HOST:PORT"
    host, _, port = value.removeprefix("tcp://").rpartition(":")
    if not host or not is_port(port):
        return f"{value!r} must look like tcp://HOST:PORT with a port in 1..65535"
    if host in ("*", "0.0.0.0", "::", "[::]"):  # noqa: S104  refusing wildcards, not binding
        return f"{value!r}: name the interface to listen on; a wildcard is also where peers would connect"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_port(text: str) -> bool:
    """A port number in ASCII digits within 1..65535 (`int` would also read other digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536


def check_host_port(value: Any) -> str | None:
    if (
        not isinstance(value, str)
        or ":" not in value
        or not value.rpartition(":")[0]
        or not is_port(value.rpartition(":")[2])
    ):
        return f"{short(value)} must be HOST:PORT with a port in 1..65535, e.g. 127.0.0.1:9101"
    return None


def check_egress_entries(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"{value!r} must be a list of CIDRs or host names, e.g. [127.0.0.1, 10.1.0.0/16, intranet.example]"
    for entry in value:
        text = str(entry)
        try:
            ipaddress.ip_network(text, strict=False)
            continue
        except ValueError:
            pass
        if not text or "/" in text or ":" in text or any(c.isspace() for c in text):
            return f"{entry!r} is neither a CIDR (10.1.0.0/16, ::1) nor a host name"
    return None


def check_css(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"{value!r} must be a CSS selector"
    try:
        LexborHTMLParser("<p></p>").css(value)
    except Exception:  # noqa: BLE001 - selectolax raises its own error type
        return f"{value!r} is not a CSS selector selectolax can parse"
    return None


def check_css_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"{value!r} must be a list of CSS selectors"
    return next((error for error in map(check_css, value) if error is not None), None)


def check_strip(value: Any) -> str | None:
    if isinstance(value, bool) or (isinstance(value, str) and value):
        return None
    return f"{short(value)} must be true, false or the characters to strip (a non-empty string)"


def check_regex(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{short(value)} must be a regular expression (a non-empty string)"
    try:
        re.compile(value)
    except re.error as exc:
        return f"bad pattern: {exc}"
    return None


def check_flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{value!r} must be true or false"


def unusable_dir(path: Path) -> str:
    """Why the node could not keep its data under `path`, or ''."""
    if any(path == Path(root) or Path(root) in path.parents for root in FORBIDDEN_DATA_DIRS):
        return f"{path} is under {', '.join(FORBIDDEN_DATA_DIRS)}: a data directory must be on a real file system"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{path} cannot be a directory: {existing} is a file"
    return ""
