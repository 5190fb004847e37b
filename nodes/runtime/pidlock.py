"""The pid file of `flotilla up`, locked for the launcher's whole life.

The launcher holds an exclusive `flock` on ``<data_dir>/up.pid`` (which holds its pid) from
before its first node starts until it exits; the kernel drops the lock however the process
ends. So the lock, not the file, says whether a launcher runs: a second `flotilla up` on the
same data directory is refused with the holder's pid, and a file left by a killed launcher
(no lock on it) is stale and taken over.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

PROBE_GRACE = 0.5
"""Seconds a launcher keeps trying to take the lock before it is refused: a reader
(`status`, `down`) may hold it for an instant to see that nobody else does."""


class AlreadyRunning(Exception):
    """Another launcher holds the pid file's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"'flotilla up' is already running for this data directory ({who}, holds {path})")


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 64, 0).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


class PidLock:
    """The launcher's hold on its pid file: taken by `acquire`, given up by `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, pid: int | None = None) -> PidLock:
        """Lock `path` (created 0600 if missing) and write `pid` (default: this process's)
        into it; raise `AlreadyRunning` if another process holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + PROBE_GRACE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise AlreadyRunning(path, holder) from None
                time.sleep(0.05)
                continue
            if _same_file(fd, path):
                break
            os.close(fd)  # the holder removed it as we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid if pid is not None else os.getpid()}\n".encode("ascii"), 0)
        os.fchmod(fd, 0o600)
        return cls(path, fd)

    def release(self) -> None:
        """Remove the pid file (if it is still this lock's file) and drop the lock."""
        fd = self._fd
        if fd is None:
            return
        self._fd = None
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """`fd` is the file now at `path` (not one removed or replaced since it was opened)."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (mine.st_dev, mine.st_ino)


def holder(path: Path) -> int | None:
    """The pid of the launcher that holds `path`'s lock (0 if it wrote none), or None when
    none does (no file, or a stale one). Takes a shared lock for an instant when it is free."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            deadline = time.monotonic() + PROBE_GRACE
            pid = _read_pid(fd)
            while pid is None and time.monotonic() < deadline:  # locked an instant before it is written
                time.sleep(0.01)
                pid = _read_pid(fd)
            return pid if pid is not None else 0
        return None
    finally:
        os.close(fd)


def remove_stale(path: Path) -> bool:
    """Remove `path` if no launcher holds it; True if removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        if _same_file(fd, path):
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        os.close(fd)
