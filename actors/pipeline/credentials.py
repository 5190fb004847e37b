"""Credentials in job URLs (``http://user:password@host/``), for rule sets that opt in
(`credentials: true`; docs/security.md).

The intake seals the password before the job is written: the journal, the results and every
answer hold ``user:flotilla-sealed.<token>@host``, where the token is the password encrypted
and authenticated with Fernet (AES-128-CBC and HMAC-SHA256, from `cryptography`) under the
cluster's credentials key, ``credentials.key`` (0600) in the key directory. Only a fetcher
opens it, in memory, and sends it as Basic auth on the request, never in the URL, so the
egress policy and redirects see a URL without user info (aiohttp drops the Authorization
header on a redirect to another origin). Answers to clients show the password as ``***``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from cryptography.fernet import Fernet, InvalidToken

SEALED_PREFIX = "flotilla-sealed."
"""How a sealed password starts in a stored URL."""

KEY_FILE = "credentials.key"
"""The cluster's credentials key, in the key directory (0600)."""

REDACTED = "***"


class CredentialError(Exception):
    """A credentials key that cannot be read or made, or a sealed password it cannot open."""


def has_userinfo(url: str) -> bool:
    """Whether `url` carries user info (``user@`` or ``user:password@``)."""
    parts = urlsplit(url)
    return parts.username is not None or parts.password is not None


def _with_userinfo(parts: SplitResult, userinfo: str | None) -> str:
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{userinfo}@{host}" if userinfo is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    """`url` with its password (sealed or not) shown as ``***``."""
    if "@" not in url:
        return url
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        return _with_userinfo(parts, f"{quote(parts.username or '', safe='')}:{REDACTED}")
    except ValueError:
        return url


class CredentialSeal:
    """Seals and opens the passwords of job URLs with the cluster's credentials key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def in_directory(cls, directory: Path, *, create: bool = False) -> CredentialSeal:
        """The seal of ``credentials.key`` in `directory`; with `create`, a new key is written
        (0600) if there is none. Raises `CredentialError`."""
        path = directory / KEY_FILE
        if create and not path.exists():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it meanwhile
            except OSError as exc:
                raise CredentialError(f"cannot create {path}: {exc.strerror or exc}") from None
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(Fernet.generate_key())
        try:
            if path.stat().st_mode & 0o077:
                raise CredentialError(f"{path} is readable by others; run chmod 600 on it")
            return cls(path.read_bytes().strip())
        except OSError as exc:
            raise CredentialError(f"cannot read the credentials key {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise CredentialError(f"{path} is not a credentials key: {exc}") from None

    def seal_url(self, url: str) -> str:
        """`url` with its password replaced by a sealed token (unchanged without one)."""
        parts = urlsplit(url)
        if parts.password is None or parts.password.startswith(SEALED_PREFIX):
            return url
        token = self._fernet.encrypt(unquote(parts.password).encode()).decode()
        return _with_userinfo(parts, f"{parts.username or ''}:{SEALED_PREFIX}{token}")

    def open_url(self, url: str) -> tuple[str, tuple[str, str] | None]:
        """`url` without user info, and its (user, password) in clear (None without user
        info). Raises `CredentialError` for a password that was not sealed with this key."""
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url, None
        password = parts.password or ""
        if password:
            if not password.startswith(SEALED_PREFIX):
                raise CredentialError("the password in the url is not sealed")
            try:
                password = self._fernet.decrypt(password.removeprefix(SEALED_PREFIX).encode()).decode()
            except InvalidToken:
                raise CredentialError(
                    "the url's sealed password does not open with this cluster's credentials key"
                ) from None
        return _with_userinfo(parts, None), (unquote(parts.username or ""), password)
