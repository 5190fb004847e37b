"""Failed authentications of one socket: counted, logged with throttling, alerted past a rate.

A ZAP handler calls `record` for every rejected handshake (from its own thread), and a
socket's monitor for every handshake that failed before ZAP (a client not speaking CURVE). The count
only grows (Prometheus reads `total`). The log gets one line at once for the first failure,
then at most one line per `AUTH_LOG_INTERVAL` with the number of failures since the last
line and the latest key and address, so a flood of attempts cannot flood the log. When more
than `AUTH_ALERT_COUNT` failures fall within `AUTH_ALERT_WINDOW` seconds, `on_alert` is called
(at most once per window): the seeds call that rate an incident.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import structlog

from flotilla.actors.core.throttle import Throttle

AUTH_LOG_INTERVAL = 10.0
"""Seconds between two log lines about failed authentications on one socket."""
AUTH_ALERT_COUNT = 100
"""Failed authentications on one socket within `AUTH_ALERT_WINDOW` past which an alert is raised."""
AUTH_ALERT_WINDOW = 3600.0
"""The window of `AUTH_ALERT_COUNT`, in seconds (and the least time between two such alerts)."""

AlertHandler = Callable[[str, str], None]
"""Called with (title, detail) when failures exceed the rate."""

_log = structlog.get_logger("flotilla.security")


class AuthFailures:
    """The failed authentications of one socket (`socket` names it in logs and metrics)."""

    def __init__(
        self,
        socket: str,
        *,
        event: str = "auth.rejected",
        on_alert: AlertHandler | None = None,
        log_interval: float = AUTH_LOG_INTERVAL,
        alert_count: int = AUTH_ALERT_COUNT,
        alert_window: float = AUTH_ALERT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket = socket
        self.event = event
        self.on_alert = on_alert
        self.alert_count = alert_count
        self.total = 0
        self.alerts = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._log_throttle = Throttle(log_interval)
        self._alert_throttle = Throttle(alert_window)
        self._latest: tuple[str, str] = ("", "")
        self._recent: deque[float] = deque(maxlen=alert_count + 1)

    @property
    def log_interval(self) -> float:
        """Seconds between two log lines."""
        return self._log_throttle.interval

    @log_interval.setter
    def log_interval(self, seconds: float) -> None:
        self._log_throttle.interval = seconds

    @property
    def alert_window(self) -> float:
        """The window of `alert_count`, and the least time between two alerts."""
        return self._alert_throttle.interval

    @alert_window.setter
    def alert_window(self, seconds: float) -> None:
        self._alert_throttle.interval = seconds

    def record(self, key: str, address: str) -> None:
        """One handshake refused: a client with public key `key` (z85) from `address`."""
        now = self._clock()
        with self._lock:
            self.total += 1
            self._log_throttle.hold()
            self._latest = (key, address)
            self._recent.append(now)
        self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Log the failures not logged yet if the interval has passed; alert past the rate.
        Call it now and then (a node calls it on every tick) so that the last ones are seen."""
        now = self._clock() if now is None else now
        with self._lock:
            count = self._log_throttle.due(now=now)
            alert = (
                len(self._recent) > self.alert_count
                and now - self._recent[0] <= self.alert_window
                and self._alert_throttle.hit(now=now) > 0
            )
            if alert:
                self.alerts += 1
            key, address = self._latest
            total = self.total
        if count:
            _log.warning(self.event, socket=self.socket, count=count, total=total, key=key, address=address)
        if alert:
            title = f"failed authentications on the {self.socket} socket"
            detail = (
                f"more than {self.alert_count} refused handshakes within {self.alert_window:g} s "
                f"({total} in all; latest key {key} from {address})"
            )
            _log.critical("auth.alert", socket=self.socket, title=title, detail=detail)
            if self.on_alert is not None:
                try:
                    self.on_alert(title, detail)
                except Exception:  # noqa: BLE001 - alerting must never stop the caller
                    _log.exception("auth.alert_failed", socket=self.socket)
