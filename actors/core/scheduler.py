"""Timers for actors: one thread per node runs callbacks at their due time.

Callbacks must be quick (typically a `tell`); a callback that raises is logged and
dropped, and the scheduler goes on.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

import structlog

_log = structlog.get_logger("flotilla.scheduler")

MAX_WAIT = 60.0
"""Longest single wait of the scheduler thread (a timer due in years must not overflow it)."""


class TimerHandle:
    """A scheduled callback; `cancel()` stops it from running if it has not yet."""

    __slots__ = ("due", "callback", "cancelled")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback."""
        self.cancelled = True


class Scheduler:
    """Runs callbacks after a delay on one daemon thread, in due-time order."""

    def __init__(self, name: str = "scheduler") -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._wakeup = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` on the scheduler thread after `delay` seconds."""
        handle = TimerHandle(time.monotonic() + max(0.0, delay), callback)
        with self._wakeup:
            if self._closed:
                handle.cancel()
                return handle
            heapq.heappush(self._heap, (handle.due, next(self._sequence), handle))
            self._wakeup.notify()
        return handle

    def close(self, timeout: float = 1.0) -> None:
        """Drop every pending timer and stop the thread."""
        with self._wakeup:
            self._closed = True
            self._heap.clear()
            self._wakeup.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = min(MAX_WAIT, self._heap[0][0] - time.monotonic()) if self._heap else None
                    self._wakeup.wait(wait)
                if self._closed:
                    return
                _, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            try:
                handle.callback()
            except Exception:  # noqa: BLE001 - one bad timer must not stop the others
                _log.exception("scheduler.callback_failed")
