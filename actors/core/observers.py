"""Observations: what actors publish about their own work, for whatever the node attaches.

The seam between an actor's state and anything that reports on it from another thread
(Prometheus metrics, tests). An actor never exposes its internals to such readers; it calls
`self.system.observers.publish(event)` with a small frozen struct defined next to it (a
`Observation` subclass), and each attached observer turns the events it knows into its own
numbers. Like a middleware hook, an observer runs in the publishing thread, in the order
attached, and must be quick; one that raises is logged and skipped, never the actor's
failure. With no observer attached, publishing costs one attribute read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import msgspec
import structlog

_log = structlog.get_logger("flotilla.observers")


class Observation(msgspec.Struct, frozen=True):
    """Base of every event an actor publishes."""


class IncarnationEnded(Observation, frozen=True):
    """The runtime's own event: incarnation `incarnation` of the actor at `path` has left
    its path (published for every actor, whatever its cleanup hooks did)."""

    path: str
    incarnation: int


Observer = Callable[[Observation], None]


class Observers:
    """The observers attached to one node's actors."""

    def __init__(self) -> None:
        self._observers: tuple[Observer, ...] = ()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """True when at least one observer is attached (so building an event is worth it)."""
        return bool(self._observers)

    def attach(self, observer: Observer) -> Callable[[], None]:
        """Call `observer` for every event published from now on; returns a function that
        detaches it."""
        with self._lock:
            self._observers = (*self._observers, observer)

        def detach() -> None:
            with self._lock:
                self._observers = tuple(o for o in self._observers if o is not observer)

        return detach

    def publish(self, event: Observation) -> None:
        """Hand `event` to every attached observer, in this thread."""
        for observer in self._observers:
            try:
                observer(event)
            except Exception:  # noqa: BLE001 - an observer's bug must never fail the actor
                _log.exception("observer.failed", observation=type(event).__name__)
