"""Canonical URLs and the natural key of a job: one page, one key.

The canonical form is w3lib's `canonicalize_url` (Scrapy's request fingerprinting uses it):
query arguments sorted, percent-encoding normalised (`%2f` and `%2F` are one byte, `%7E` is
`~`), an IDN host in punycode, a lower-case scheme and host, no fragment, `/` for an empty
path. On top of it the default port of the scheme (80 for http, 443 for https) is dropped.
User info is kept as written; an IPv6 host keeps its brackets.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

from w3lib.url import canonicalize_url

DEFAULT_PORTS = {"http": 80, "https": 443}
"""Ports a canonical URL leaves out, by scheme: `http://h:80/` is `http://h/`."""

NATURAL_KEY_CHARS = 32
"""Hex digits of the SHA-256 of canonical URL and rule set kept as a job's natural key."""


def canonical_url(url: str) -> str:
    """The canonical form of `url`; raises ValueError for a malformed one (a port out of
    range, an unclosed IPv6 bracket)."""
    canonical = canonicalize_url(url.strip())
    parts = urlsplit(canonical)
    if parts.port is not None and DEFAULT_PORTS.get(parts.scheme) == parts.port:
        userinfo, at, hostport = parts.netloc.rpartition("@")
        host = hostport[: hostport.rindex(":")]
        canonical = urlunsplit((parts.scheme, f"{userinfo}{at}{host}", parts.path, parts.query, ""))
    return canonical


def natural_key(url: str, rules: str) -> str:
    """The key a job gets when the client gives none: a hash of the canonical URL and rules."""
    digest = hashlib.sha256(f"{canonical_url(url)}\n{rules}".encode()).hexdigest()
    return digest[:NATURAL_KEY_CHARS]
