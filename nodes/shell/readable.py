"""The shell's answers made readable for people (tables and text; `--json` keeps raw values).

Fields are recognised by name: durations in seconds (`uptime`, `open_for`, `seconds`...) read
``3m 12s``; wall-clock times in epoch seconds (`since`, `at`, `stored_at` and the other
``*_at``, `last_change`) read ``2026-12-02 05:31:07 UTC`` (a trace's and a story's `at` to the
millisecond), a time of 0 (never) reads ``-``; log lines' ISO `timestamp` reads the same way; a
rate that does not apply (None) reads ``-``. Everything else stays as the node sent it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flotilla.actors.core.human import human_duration, human_time

DURATIONS = frozenset({"uptime", "open_for", "slowed_for", "seconds", "held_for", "delay", "tracing_for"})
"""Fields that hold a duration in seconds."""
TIMES = frozenset({"since", "at", "last_change", "lease_until"})
"""Fields that hold a wall-clock time in epoch seconds (besides every ``*_at``)."""
PRECISE_TIMES = frozenset({"at"})
"""Times shown to the millisecond (a trace's messages, a story's events)."""
NOT_APPLICABLE = frozenset({"opened_at_rate", "success_rate"})
"""Fields whose None means "does not apply" (shown as ``-``)."""


def _is_time(key: str) -> bool:
    return key in TIMES or key.endswith("_at")


def readable_value(key: str, value: Any) -> Any:
    """`value` of field `key` as a person reads it (unchanged unless the field is known)."""
    if value is None and key in NOT_APPLICABLE:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return value
    if key == "timestamp" and isinstance(value, str):
        try:
            return human_time(datetime.fromisoformat(value).timestamp(), precise=True)
        except ValueError:
            return value
    if isinstance(value, str):
        return value
    if key in DURATIONS:
        return human_duration(value)
    if _is_time(key):
        if value <= 0:
            return "-"
        try:
            return human_time(value, precise=key in PRECISE_TIMES)
        except (OverflowError, OSError, ValueError):  # not a time this machine can show
            return value
    return value


def readable(data: Any) -> Any:
    """`data` with every known field made readable, however deeply nested."""
    if isinstance(data, dict):
        return {
            key: readable(readable_value(key, value) if isinstance(key, str) else value) for key, value in data.items()
        }
    if isinstance(data, list):
        return [readable(item) for item in data]
    return data
