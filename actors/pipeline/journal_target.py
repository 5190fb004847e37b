"""Where the journal lives: a SQLite file (the embedded default) or a PostgreSQL database.

The node puts its topology's `JournalTarget` in its actor system's extensions; the router
reads it with `JournalTarget.of(system)` (a bare system gets SQLite in its data directory).
A PostgreSQL URL never carries the password: it comes from an environment variable or a
file only the node's user can read, read when the journal is opened.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from flotilla.actors.core.system import ActorSystem

JOURNAL_FILE = "journal.sqlite"
"""The SQLite journal's file in the node's data directory (shared by the intake and router)."""
POSTGRES_SCHEMES = ("postgresql", "postgres")


class JournalConfigError(ValueError):
    """The journal's settings cannot be used: a password in the URL, a missing environment
    variable, a password file others can read."""


@dataclass(frozen=True)
class JournalTarget:
    """A SQLite file (`path`) or a PostgreSQL database (`url`, without a password, which
    comes from `password_env` or `password_file`)."""

    path: Path | None = None
    url: str | None = None
    password_env: str | None = None
    password_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise JournalConfigError("a journal is either a SQLite path or a PostgreSQL URL")
        if self.url is not None:
            problem = url_problem(self.url)
            if problem:
                raise JournalConfigError(problem)
        elif self.password_env or self.password_file:
            raise JournalConfigError("password_env and password_file apply to a PostgreSQL journal only")
        if self.password_env and self.password_file:
            raise JournalConfigError("give password_env or password_file, not both")

    @classmethod
    def parse(cls, text: str | Path) -> JournalTarget:
        """A PostgreSQL URL (``postgresql://user@host:port/dbname``), else a SQLite path."""
        if is_postgres_url(str(text)):
            return cls(url=str(text))
        return cls(path=Path(text))

    @classmethod
    def of(cls, system: ActorSystem) -> JournalTarget:
        """The system's journal: the node's, else SQLite in its data directory (or here)."""
        base = system.data_dir if system.data_dir is not None else Path.cwd()
        return system.extensions.setdefault(cls, lambda: cls(path=base / JOURNAL_FILE))

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.path is not None else "postgresql"

    @property
    def where(self) -> str:
        """For logs and errors: the file, or ``host:port/dbname`` (never a user or password)."""
        if self.path is not None:
            return str(self.path)
        parts = urlsplit(self.url or "")
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"

    def password(self) -> str | None:
        """The password from the environment or the password file (None: none configured).
        Raises `JournalConfigError` naming the variable or file when it cannot be used."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise JournalConfigError(
                    f"journal.password_env: the environment variable {self.password_env} is not set "
                    f"(it must hold the password of {self.where})"
                )
            return value
        if self.password_file:
            return read_password_file(self.password_file)
        return None


def is_postgres_url(text: str) -> bool:
    return text.split("://", 1)[0].lower() in POSTGRES_SCHEMES and "://" in text


def url_problem(url: str) -> str | None:
    """Why `url` cannot name a PostgreSQL journal (None: it can)."""
    if not is_postgres_url(url):
        return f"{url!r} is not a postgresql:// URL"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.password is not None or any(k.lower() == "password" for k in parse_qs(parts.query)):
        return (
            "the URL carries a password: never write it in the topology; "
            "use journal: {url: ..., password_env: NAME} or password_file: PATH"
        )
    if not parts.path.strip("/"):
        return "the URL names no database (postgresql://user@host:port/dbname)"
    return None


def read_password_file(path: Path) -> str:
    """The password in `path` (its first line), which must be the node's user's alone."""
    try:
        info = path.stat()
    except OSError as exc:
        raise JournalConfigError(f"journal.password_file {path}: {exc.strerror or exc}") from None
    if info.st_uid != os.geteuid():
        raise JournalConfigError(
            f"journal.password_file {path} is owned by uid {info.st_uid}, not by the node's user "
            f"(uid {os.geteuid()}): chown it"
        )
    if stat.S_IMODE(info.st_mode) & 0o177:
        raise JournalConfigError(
            f"journal.password_file {path} has mode {stat.S_IMODE(info.st_mode):04o}: "
            "others could read or change it; chmod 600 (or 400) it"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0]:
        raise JournalConfigError(f"journal.password_file {path} is empty")
    return lines[0]
