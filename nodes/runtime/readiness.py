"""A node's ready file: ``<data_dir>/<node>/ready``, present while the node serves.

The node writes it (pid, time, role) once its part of the tree has started and everything it
serves is bound — the intake, the metrics, the shell — and removes it as soon as it starts
to stop. `flotilla status` and `flotilla wait-ready` read it; a file whose pid is not the
node's live process (one killed before it could remove it) counts as not ready.

Roles: ``root`` (the node runs the root: the tree has started), ``owner`` / ``standby`` (a
failover candidate that runs the tree / one that waits, while another holds the lease), and
``host`` (a node that runs only children placed on it: they start as soon as the root's node
hears it).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import structlog

READY_FILE = "ready"


def write_private_json(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` atomically (a temporary file renamed over it), 0600."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None if it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ReadyFile:
    """This process's ready file: marked with a role, cleared for good once the node stops."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._serving = False
        self._role: str | None = None
        self._closed = False

    def remove_stale(self) -> None:
        """Remove a file left by an earlier run of the node."""
        self.path.unlink(missing_ok=True)

    def serving(self) -> None:
        """Everything the node serves is bound: write the file once a role is known."""
        with self._lock:
            self._serving = True
            self._write()

    def role(self, role: str) -> None:
        """The node's part of the tree now: write the file if the node serves already."""
        with self._lock:
            if role != self._role:
                self._role = role
                self._write()

    def clear(self) -> None:
        """The node stops: remove the file; later calls write nothing."""
        with self._lock:
            self._closed = True
            self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        if self._closed or not self._serving or self._role is None:
            return
        try:
            write_private_json(self.path, {"pid": os.getpid(), "since": time.time(), "role": self._role})
        except OSError as exc:  # the node serves all the same; it only looks not ready
            structlog.get_logger("flotilla.node").warning("node.ready_file_failed", path=str(self.path), error=str(exc))
