"""Per-system state that layers above the core attach to an actor system, one value per type.

The core knows nothing of what runs on it: the resilience view, the extraction rules or the
egress policy belong to higher layers. Each lives in the system's `Extensions`, keyed by its
own class. The node runtime puts them in when it builds a node's system; an actor reads its
own with `self.system.extensions.get(Kind)` (or `setdefault(Kind, factory)` where a default
is as good as the node's value, e.g. in a bare `ActorSystem` built by a test).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class MissingExtension(LookupError):
    """An actor asked its system for an extension nobody put there."""

    def __init__(self, kind: type) -> None:
        super().__init__(
            f"this actor system has no {kind.__module__}.{kind.__qualname__} "
            f"(the node runtime puts one there; elsewhere use system.extensions.put(...))"
        )
        self.kind = kind


class Extensions:
    """A typed map from a class to the one value of it a system holds. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[type, Any] = {}

    def put(self, value: object, kind: type | None = None) -> None:
        """Hold `value` as the system's `kind` (default: its own class), replacing any."""
        kind = type(value) if kind is None else kind
        if not isinstance(value, kind):
            raise TypeError(f"{type(value).__name__} is not a {kind.__name__}")
        with self._lock:
            self._values[kind] = value

    def get(self, kind: type[T]) -> T:
        """The system's `kind`; `MissingExtension` naming `kind` if none was put."""
        try:
            return self._values[kind]
        except KeyError:
            raise MissingExtension(kind) from None

    def setdefault(self, kind: type[T], factory: Callable[[], T]) -> T:
        """The system's `kind`, made with `factory()` and kept the first time it is asked for
        (once, even when several actors ask at the same time)."""
        value = self._values.get(kind)
        if value is not None:
            return value
        with self._lock:
            value = self._values.get(kind)
            if value is None:
                value = factory()
                self._values[kind] = value
            return value

    def __contains__(self, kind: type) -> bool:
        return kind in self._values
