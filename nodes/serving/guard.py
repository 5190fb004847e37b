"""Serving threads that survive their own bugs: restarted when they fail, within limits.

The intake, the shell listener and the transport's I/O thread each serve a socket in a loop.
Every request is already guarded on its own (a bad frame gets an error answer or is
dropped); this is the second line: if the loop itself fails, `ServingGuard.failed` logs it
and the loop starts again, like a supervisor restarting a child. More than
`MAX_SERVING_RESTARTS` failures within `SERVING_RESTART_WINDOW` seconds mean the thread
cannot serve: the guard calls `on_give_up`, which stops the node (exit code 1) rather than
leave it up but deaf.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import structlog

MAX_SERVING_RESTARTS = 5
"""Failures of one serving loop tolerated within `SERVING_RESTART_WINDOW` (as a supervisor's
intensity); one more stops the node."""
SERVING_RESTART_WINDOW = 10.0
"""Seconds over which a serving loop's failures are counted."""

_log = structlog.get_logger("flotilla.serving")


def _no_give_up(_reason: str) -> None:
    return None


class ServingGuard:
    """Counts the failures of one serving loop and decides whether it may start again."""

    def __init__(
        self,
        name: str,
        on_give_up: Callable[[str], None] = _no_give_up,
        max_restarts: int = MAX_SERVING_RESTARTS,
        window: float = SERVING_RESTART_WINDOW,
    ) -> None:
        self.name = name
        self.on_give_up = on_give_up
        self.max_restarts = max_restarts
        self.window = window
        self.restarts = 0
        self._recent: deque[float] = deque()

    def failed(self) -> bool:
        """Record a failure of the loop (call it from an `except` block: the traceback is
        logged). True: start the loop again; False: it gave up and `on_give_up` was called."""
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.window:
            self._recent.popleft()
        if len(self._recent) > self.max_restarts:
            reason = f"the {self.name} loop failed {len(self._recent)} times within {self.window:g} s"
            _log.critical("serving.gave_up", loop=self.name, reason=reason, exc_info=True)
            self.on_give_up(reason)
            return False
        self.restarts += 1
        _log.error("serving.restarted", loop=self.name, restarts=self.restarts, exc_info=True)
        return True
