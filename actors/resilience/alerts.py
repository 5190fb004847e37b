"""The alert sink: logs, counts and (optionally) forwards every `Alert` to a webhook.

Each alert is logged once, as an `alert` event at its severity's level (info, warning,
critical) with its source, title and detail: by the sink, or by the part that raised it when
the part has no sink or its sink is not alive (restarting, or on a node that is down).

Forwarding is a JSON POST on a thread of the sink's own, with a time limit; a webhook that
fails or is slow is logged and counted, and never slows the sender or crashes the sink.
Forwards wait in a bounded queue (`max_pending`); past it the oldest are dropped, counted.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from typing import Any

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.resilience.messages import Alert, AlertSeverity

LOG_LEVELS: dict[str, int] = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}
"""The level an alert is logged at, by its severity."""


def log_alert(log: Any, alert: Alert) -> None:
    """Log `alert` as one `alert` event at its severity's level, with its source, title and detail."""
    log.log(LOG_LEVELS[alert.severity], "alert", source=alert.source, title=alert.title, detail=alert.detail)


def raise_alert(actor: Actor, alerts: str | None, severity: AlertSeverity, title: str, detail: str) -> None:
    """Tell an alert from `actor` to the alert sink at path `alerts`, which logs it; without
    a sink, or while it is not alive (restarting, or its node down), log it here. Either way
    it is logged once (`log_alert`)."""
    alert = Alert(severity, actor.path, title, detail, time.time())
    sink = actor.system.ref(alerts) if alerts is not None else None
    if sink is None or not sink.is_alive():
        log_alert(actor.log, alert)
    else:
        sink.tell(alert)


RECENT_ALERTS = 100
"""Alerts kept for operators (all are counted)."""


class AlertsSnapshot(msgspec.Struct, frozen=True):
    """The alert sink's `inspect()`: alerts by name, forwarding counts, the last ten alerts."""

    counts: dict[str, int]
    forwarded: int
    forward_failures: int
    dropped: int
    recent: list[Any]


class AlertSink(Actor):
    """Receives `Alert`s; see the module docstring."""

    def __init__(self, webhook: str | None = None, timeout: float = 5.0, max_pending: int = 1000) -> None:
        super().__init__()
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            raise ValueError(f"webhook {webhook!r} must be an http or https URL")
        self.webhook = webhook
        self.timeout = timeout
        self.counts: Counter[str] = Counter()
        self.recent: deque[Alert] = deque(maxlen=RECENT_ALERTS)
        self.forwarded = 0
        self.forward_failures = 0
        self.dropped = 0
        self._outbox: queue.Queue[Alert | None] = queue.Queue(maxsize=max_pending)

    def on_start(self) -> None:
        if self.webhook is not None:
            self._thread = threading.Thread(target=self._forward_loop, name=f"webhook {self.path}", daemon=True)
            self._thread.start()

    def on_stop(self) -> None:
        self._stop_forwarding()

    def on_failure(self, *_exc_info: Any) -> None:
        self._stop_forwarding()

    def _stop_forwarding(self) -> None:
        if self.webhook is not None:
            try:
                self._outbox.put_nowait(None)
            except queue.Full:
                pass

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, Alert):
            return super().on_receive(message)
        self.counts[f"{message.severity}:{message.source}"] += 1
        self.recent.append(message)
        log_alert(self.log, message)
        if self.webhook is not None:
            while True:
                try:
                    self._outbox.put_nowait(message)
                    break
                except queue.Full:
                    try:
                        self._outbox.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return None

    def _forward_loop(self) -> None:
        while (alert := self._outbox.get()) is not None:
            body = json.dumps(msgspec.to_builtins(alert)).encode()
            request = urllib.request.Request(  # noqa: S310  http(s) checked in __init__
                self.webhook or "", data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310  http(s) checked in __init__
                    response.read()
                self.forwarded += 1
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.forward_failures += 1
                self.log.warning("alert.webhook_failed", webhook=self.webhook, error=str(exc)[:200])

    def inspect(self) -> AlertsSnapshot:
        return AlertsSnapshot(
            dict(self.counts),
            self.forwarded,
            self.forward_failures,
            self.dropped,
            [msgspec.to_builtins(a) for a in self.recent][-10:],
        )
