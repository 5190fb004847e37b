"""Logging for node processes: structlog JSON lines, or console rendering on a TTY.

Every event carries the node's name; actors bind their path. Supervisor reports become
their own events (``supervisor.child_exited`` and so on) through `report_logger`.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict

from flotilla.actors.core.messages import (
    Crash,
    StartFailed,
    SupervisorReport,
    describe_reason,
    is_clean_exit,
)

LogFormat = Literal["auto", "json", "console"]

RECENT_EVENTS = 2000
"""Log events a node keeps in memory for shells (`logs`, `logs --follow`)."""


class RecentEvents:
    """The node's last log events, numbered, for shells to read and follow."""

    def __init__(self, size: int = RECENT_EVENTS) -> None:
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._seq = 0

    def __call__(self, _logger: Any, _name: str, event: EventDict) -> EventDict:
        """A structlog processor: keep a copy of every event that passes the level filter."""
        with self._lock:
            self._seq += 1
            self._events.append(
                (
                    self._seq,
                    {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in event.items()},
                )
            )
        return event

    def newest(self, count: int) -> tuple[int, list[dict[str, Any]]]:
        """The last `count` events, and the number of the last event logged."""
        with self._lock:
            return self._seq, [e for _, e in self._events][-count:] if count > 0 else []

    def since(self, seq: int, limit: int = 200) -> tuple[int, list[dict[str, Any]], int]:
        """The oldest `limit` events numbered above `seq`, the number of the last of them
        (to ask from next), and how many after `seq` are gone from memory (a gap)."""
        with self._lock:
            oldest = self._events[0][0] if self._events else self._seq + 1
            found = [(n, e) for n, e in self._events if n > seq][:limit]
            last = found[-1][0] if found else seq
            return last, [e for _, e in found], max(0, oldest - seq - 1)


recent_events = RecentEvents()

_LEVELS = {
    "child_started": logging.INFO,
    "restart_scheduled": logging.INFO,
    "waiting_for_node": logging.WARNING,
    "child_exited": logging.WARNING,
    "start_failed": logging.ERROR,
    "shutdown_timeout": logging.ERROR,
    "gave_up": logging.ERROR,
}


def configure_logging(
    node: str,
    *,
    level: str = "info",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    color: bool | None = None,
) -> None:
    """Send structlog events for this process to `stream` (default stdout). Console lines
    are coloured if `color` says so, by default if `stream` is a terminal (under `flotilla up`
    a node's stream is a pipe: the launcher decides for it)."""
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    if color is None:
        color = stream.isatty()

    def add_node(_logger: Any, _name: str, event: EventDict) -> EventDict:
        event.setdefault("node", node)
        return event

    renderer: Any = structlog.dev.ConsoleRenderer(colors=color) if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_node,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            recent_events,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def report_logger(*, tracebacks: bool) -> Callable[[SupervisorReport], None]:
    """A report listener that logs each supervisor report as its own event."""
    log = structlog.get_logger("flotilla.supervisor")

    def log_report(report: SupervisorReport) -> None:
        fields: dict[str, Any] = {"supervisor": report.supervisor, "child": report.child}
        level = _LEVELS[report.event]
        reason = report.reason
        if reason is not None:
            fields["reason"] = describe_reason(reason)
            if tracebacks and isinstance(reason, (Crash, StartFailed)) and reason.traceback:
                fields["traceback"] = reason.traceback
            if report.event == "child_exited" and is_clean_exit(reason):
                level = logging.INFO
        if report.event == "restart_scheduled":
            fields["delay"] = report.delay
        if report.restarts:
            fields["restarts"] = report.restarts
        if report.waiting_for:
            fields["waiting_for"] = report.waiting_for
        log.log(level, f"supervisor.{report.event}", **fields)

    return log_report
