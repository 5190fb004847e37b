"""Raw page capture: the bodies of fetched pages, kept compressed under their content hash.

A rule set with `capture: true` has every 200 page of its jobs written here by the extractor
before the rules are applied, so that a page whose result is stored is always on disk
(`flotilla reextract` applies fixed rules to it later without fetching it again). A page is
named by the SHA-256 of its raw body (the `content_hash` its result and attempt record):
``<directory>/ab/cdef….html.gz`` (the first two hex digits make a subdirectory, so that no
directory grows past a few thousand files per million pages). Pages are gzip files (`zcat`
reads them), written atomically (a temporary file in the same directory, then a rename) with
mode 0600 in directories of mode 0700; a page already there is not written again (the same
body is one file, whichever jobs fetched it). A page is at most the fetcher's
`max_body_bytes` (a larger body is a HARD failure and never reaches the extractor).

Writes are not synced to the disk, as the router's journal writes are not: a page survives a
crash of the process, perhaps not a power cut. Captures are never deleted by Flotilla (the
journal's retention does not reach them).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flotilla.actors.core.system import ActorSystem

SUFFIX = ".html.gz"
"""How every captured page's file name ends."""
COMPRESS_LEVEL = 3
"""gzip's level. Measured on 200 HTML pages of 30 KB to 1.9 MB (16 MB in all) on a shared
2-core machine: level 3 keeps 25 % of the size at about 40 ms per MB; level 6, 23 % at 85 ms;
level 1, 27 % at 26 ms."""

_HASH = re.compile(r"[0-9a-f]{64}")


class CaptureMissing(LookupError):
    """No captured page has that content hash (never captured, or deleted since)."""


class CaptureDamaged(ValueError):
    """A captured page's file does not hold the body its name promises (truncated or altered)."""


def content_hash(body: bytes) -> str:
    """The SHA-256 of a raw body, in hex: what names its capture."""
    return hashlib.sha256(body).hexdigest()


class PageStore:
    """The capture directory of a node (an actor system extension: the node runtime puts it
    there from the topology's `captures` key)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    @classmethod
    def of(cls, system: ActorSystem) -> PageStore | None:
        """The page store `system` holds (None if its node put none there)."""
        return system.extensions.get(cls) if cls in system.extensions else None

    def path_of(self, digest: str) -> Path:
        """Where the page with content hash `digest` is (or would be) kept."""
        if not _HASH.fullmatch(digest):
            raise ValueError(f"not a SHA-256 content hash: {digest[:80]!r}")
        return self.directory / digest[:2] / f"{digest[2:]}{SUFFIX}"

    def put(self, body: bytes, digest: str | None = None) -> tuple[str, bool]:
        """Capture `body`; returns its content hash and whether it was written now (False:
        that page was there already). `digest`, the hash the caller was given for it, is
        checked: a body that does not match it raises ValueError (nothing is written)."""
        actual = content_hash(body)
        if digest is not None and digest != actual:
            raise ValueError(f"the body's SHA-256 is {actual}, not the {digest[:80]!r} it came with")
        digest = actual
        path = self.path_of(digest)
        if path.exists():
            return digest, False
        _private_directory(self.directory)
        _private_directory(path.parent)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")  # mode 0600
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(gzip.compress(body, compresslevel=COMPRESS_LEVEL, mtime=0))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return digest, True

    def get(self, digest: str) -> bytes:
        """The raw body of the page with content hash `digest`; raises `CaptureMissing` if it is
        not kept (or `digest` is no SHA-256, which no page is named by), `CaptureDamaged` if its
        file does not hold that body."""
        if not _HASH.fullmatch(digest):
            raise CaptureMissing(f"no captured page: {digest[:80]!r} is not a SHA-256 content hash")
        path = self.path_of(digest)
        try:
            compressed = path.read_bytes()
        except FileNotFoundError:
            raise CaptureMissing(f"no captured page {path}") from None
        try:
            body = gzip.decompress(compressed)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CaptureDamaged(f"{path}: not a gzip file ({exc})") from None
        if content_hash(body) != digest:
            raise CaptureDamaged(f"{path}: its body's hash is not its name")
        return body


def _private_directory(directory: Path) -> None:
    """Create `directory` (and its parents) with mode 0700 if it is missing; an existing one is
    left as it is (an operator may have shared it on purpose)."""
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # whatever the umask
