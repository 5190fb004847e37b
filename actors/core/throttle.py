"""A log throttle: at most one report per kind of event per interval, counting the rest.

Everything a hostile or broken peer can make happen as fast as it likes — refused frames,
failed handshakes, tells that cannot be delivered — is logged through one: the first event
of a kind is reported at once, later ones are held back and counted until `interval`
seconds have passed since the kind's last report, and then reported together (their number
goes in the log line). A flood costs the log one line per kind per interval, not one per
event. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Hashable


class Throttle:
    """Decides when events of each kind (`key`) may be reported; see the module docstring."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._held: Counter[Hashable] = Counter()
        self._reported_at: dict[Hashable, float] = {}

    def hit(self, key: Hashable = None, now: float | None = None) -> int:
        """Count one event of `key`; return how many to report now (this one and those held
        back since the last report), or 0 while the last report is younger than `interval`."""
        with self._lock:
            self._held[key] += 1
            return self._take(key, time.monotonic() if now is None else now)

    def hold(self, key: Hashable = None) -> None:
        """Count one event of `key` without deciding yet (`due` decides)."""
        with self._lock:
            self._held[key] += 1

    def due(self, key: Hashable = None, now: float | None = None) -> int:
        """How many held-back events of `key` to report now: all of them once `interval` has
        passed since the last report (0 if none are held, or it is too soon)."""
        with self._lock:
            return self._take(key, time.monotonic() if now is None else now)

    def _take(self, key: Hashable, now: float) -> int:
        held = self._held.get(key, 0)
        last = self._reported_at.get(key)
        if held == 0 or (last is not None and now - last < self.interval):
            return 0
        self._reported_at[key] = now
        del self._held[key]
        return held
