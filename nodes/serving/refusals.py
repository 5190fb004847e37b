"""Refused input, counted and logged without flooding: one log line per kind per interval.

Every socket a peer can write to (the intake, the node transport, the shell) reports each
frame or connection it refuses here, with a short `reason` kind (``malformed``,
``oversized``, ``unknown_peer``, ``unknown_key``, ``over_limit``...). The count by socket and
reason is exported as the Prometheus counter ``flotilla_refused_frames_total`` (see
`flotilla.nodes.runtime.metrics`); the log gets the first refusal of a kind at once and then at most one line
per `REFUSAL_LOG_INTERVAL` with how many were refused since, so a peer sending garbage as
fast as it can costs the log a line every few seconds, not one per frame.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import structlog

from flotilla.actors.core.throttle import Throttle

REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log lines about refusals of one kind on one socket (the count in
between is in the second line and in the metric)."""

_log = structlog.get_logger("flotilla.refused")


class Refusals:
    """Counts of refused input by (socket, reason), and the throttled log of them."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._throttle = Throttle(interval)
        self._lock = threading.Lock()

    @property
    def interval(self) -> float:
        """Seconds between two log lines about one kind of refusal on one socket."""
        return self._throttle.interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._throttle.interval = seconds

    def refuse(self, socket: str, reason: str, detail: str = "", *, event: str = "refused", **fields: Any) -> bool:
        """Count one refusal on `socket` for `reason`; log it if this kind was not logged in
        the last interval (with the number refused since the last line), as `event` (each
        socket keeps the event names its operators know). True if it was
        logged (a caller with its own record, like the shell's audit log, follows suit)."""
        key = (socket, reason)
        with self._lock:
            self.counts[key] += 1
            total = self.counts[key]
            since = self._throttle.hit(key)
        if not since:
            return False
        _log.warning(event, socket=socket, reason=reason, detail=detail[:200], count=since, total=total, **fields)
        return True

    def total(self, socket: str | None = None) -> int:
        """How many refusals were counted (on `socket`, or on all)."""
        with self._lock:
            return sum(n for (s, _), n in self.counts.items() if socket is None or s == socket)


refusals = Refusals()
"""The refusals of this process (one node per process)."""
