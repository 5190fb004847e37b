"""The node's audit log: one JSON line per operator command, before it runs and after."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import structlog

_log = structlog.get_logger("flotilla.audit")


def audit_entry(path: Path, entry: dict[str, Any], *, failed_event: str) -> dict[str, Any]:
    """Append `entry` (stamped with the time) to the audit log at `path` and return it. A
    line that says a command *started* must be written, else OSError is raised and the
    command must not run; any later line that cannot be written is logged as `failed_event`."""
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry}
    if entry.get("error"):
        entry["error"] = str(entry["error"])[:500]
    try:
        with open(path, "a", encoding="utf-8") as audit:
            audit.write(json.dumps(entry) + "\n")
    except OSError:
        if entry.get("outcome") == "started":
            raise
        _log.error(failed_event, path=str(path), **entry)
    return entry
