"""One node's actor system: its registry of paths, its timers, its reports and its root.

The root supervisor is started with `start(spec)` under the path ``<node>/<root id>``.
When the root ends for any reason other than a `stop()` asked of the system — typically
because it gave up after too many restarts — `wait()` returns that reason, and a node
process exits non-zero.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.child_spec import SupervisorSpec
from flotilla.actors.core.errors import Unavailable
from flotilla.actors.core.extensions import Extensions
from flotilla.actors.core.messages import (
    Down,
    ExitReason,
    NoProc,
    Shutdown,
    StartFailed,
    SupervisorReport,
)
from flotilla.actors.core.observers import Observers
from flotilla.actors.core.registry import PathRef, Registry, Returnable
from flotilla.actors.core.remote import RemoteLink
from flotilla.actors.core.scheduler import Scheduler
from flotilla.actors.core.supervisor import Supervisor, SupervisorClient

ReportListener = Callable[[SupervisorReport], None]

BOUNCE_RETRY = 0.2
"""Seconds between tries to return a dead-lettered job to a sender whose node is not up here."""
BOUNCE_TRIES = 25
"""Tries before it is returned anyway (and, if that node is still not up, dead-lettered)."""

REF_CACHE = 4096
"""How many refs by path a system keeps for reuse (a ref caches where its path leads)."""


class RootStartError(Exception):
    """The root supervisor could not start (a child failed to start)."""

    def __init__(self, path: str, reason: StartFailed) -> None:
        super().__init__(f"{path} failed to start: {reason.message}")
        self.reason = reason


class ActorSystem:
    """Paths, dead letters, timers and supervisor reports of one node."""

    def __init__(self, node: str = "local", clock: Callable[[], float] = time.monotonic) -> None:
        if not node or "/" in node:
            raise ValueError(f"node name {node!r} must be non-empty and contain no '/'")
        self.node = node
        self.clock = clock
        self.registry = Registry()
        self.registry.dead_letters.bounce = self._bounce
        self._ref = functools.lru_cache(maxsize=REF_CACHE)(self.registry.ref)
        self.scheduler = Scheduler(name=f"scheduler {node}")
        self._report_listeners: list[ReportListener] = []
        self.observers = Observers()
        """Where this node's actors publish observations (metrics attach here)."""
        self.remote: RemoteLink | None = None
        """Set by the cluster layer when this node is part of a cluster."""
        self.extensions = Extensions()
        """State of the layers above the core, one value per type (filled in by the node
        runtime: the resilience view, the extraction rules, the egress policy)."""
        self.credentials_dir: Path | None = None
        """The key directory with the cluster's credentials key (actors/pipeline/credentials.py), if any."""
        self.data_dir: Path | None = None
        """Where this node keeps its files (set by the node runtime)."""
        self._services: Supervisor | None = None
        self._root: Supervisor | None = None
        self._root_exited = threading.Event()
        self._root_exit_listeners: list[Callable[[ExitReason], None]] = []
        self._root_reason: ExitReason | None = None
        self._releasing: Supervisor | None = None

    # --- addressing -------------------------------------------------------------------

    def ref(self, path: str) -> PathRef:
        """A ref to `path` that follows it across restarts (the same object for the same
        path, for the most recently used paths)."""
        return self._ref(path)

    def supervisor(self, path: str) -> SupervisorClient:
        """The supervisor API of the supervisor or pool at `path`."""
        return SupervisorClient(self.ref(path))

    def _bounce(self, path: str, message: Returnable, tries: int = 0) -> None:
        """A job that found nobody at `path` goes back to its sender at once (uncounted),
        instead of waiting out its lease. If the sender's node is not known to be up yet (a
        node that just started hears its peers one by one), it goes back once it is."""
        remote = self.remote
        if remote is not None and tries < BOUNCE_TRIES and not remote.is_up(self.whereis(message.reply_to)):
            self.scheduler.call_later(BOUNCE_RETRY, lambda: self._bounce(path, message, tries + 1))
            return
        self.ref(message.reply_to).tell(message.returned(f"nothing could take it at {path}"))

    def whereis(self, path: str) -> str:
        """The node that runs `path`."""
        return self.remote.whereis(path) if self.remote is not None else self.node

    def monitor(self, path: str, watcher: str | Callable[[Down], None]) -> Callable[[], None]:
        """Watch the incarnation now at `path`: once it ends, `Down(path, reason)` is told to
        the `watcher` path (or passed to a callable). If nothing lives there, `Down` comes
        at once with `NoProc`; if its node goes down, with `NodeDown`. Returns a function
        that cancels the monitor."""
        if isinstance(watcher, str):
            target = self.ref(watcher)
            deliver: Callable[[Down], None] = target.tell
        else:
            deliver = watcher
        slot = self.registry.lookup(path)
        if slot is not None and self.remote is not None and self.registry.lookup_local(path) is None:
            return self.remote.monitor(path, deliver)
        actor = slot.actor if slot is not None else None
        if actor is None:
            deliver(Down(path, NoProc()))
            return lambda: None
        return actor.add_monitor(lambda reason: deliver(Down(path, reason)))

    @property
    def root_path(self) -> str | None:
        """The root supervisor's path once started."""
        return self._root.path if self._root is not None else None

    # --- reports ----------------------------------------------------------------------

    def add_report_listener(self, listener: ReportListener) -> None:
        """Call `listener` (in the supervisor's thread; keep it quick) for every report."""
        self._report_listeners.append(listener)

    def report(self, report: SupervisorReport) -> None:
        """Pass a supervisor report to every listener; a failing listener is skipped."""
        for listener in self._report_listeners:
            try:
                listener(report)
            except Exception:  # noqa: BLE001, S112 - reporting must never break supervision
                continue

    # --- the root ---------------------------------------------------------------------

    def start(self, spec: SupervisorSpec, path: str | None = None) -> SupervisorClient:
        """Start the root supervisor (at `path`, default ``<node>/<id>``) and its whole tree,
        in order; raise `RootStartError` if any child fails to start (the ones started are
        stopped again first)."""
        if self._root is not None:
            raise RuntimeError(f"{self.node} already runs {self._root.path}")
        if not isinstance(spec, SupervisorSpec):
            raise TypeError(f"the root must be a SupervisorSpec, not {type(spec).__name__}")
        root = Supervisor(spec)
        path = path or f"{self.node}/{spec.id}"
        root.attach(path=path, incarnation=1, system=self, slot=self.registry.slot(path), on_exit=self._on_root_exit)
        self._root = root
        root.launch()
        root.started.wait()
        if root.start_failure is not None:
            self._root_reason = root.start_failure
            self._root_exited.set()
            raise RootStartError(path, root.start_failure)
        return SupervisorClient(self.ref(path))

    def start_services(self, spec: SupervisorSpec) -> SupervisorClient:
        """Start the node's own services (its gate) under a supervisor of their own at
        ``<node>/<spec.id>``, beside the tree; they stop after the tree. Raises
        `RootStartError` if one cannot start."""
        if self._services is not None:
            raise RuntimeError(f"{self.node} already runs {self._services.path}")
        services = Supervisor(spec)
        path = f"{self.node}/{spec.id}"
        services.attach(
            path=path, incarnation=1, system=self, slot=self.registry.slot(path), on_exit=lambda _actor, _reason: None
        )
        self._services = services
        services.launch()
        services.started.wait()
        if services.start_failure is not None:
            raise RootStartError(path, services.start_failure)
        return SupervisorClient(self.ref(path))

    def add_root_exit_listener(self, listener: Callable[[ExitReason], None]) -> None:
        """Call `listener` with the root's exit reason when the root ends."""
        self._root_exit_listeners.append(listener)

    def release_root(self, timeout: float | None = None) -> ExitReason | None:
        """Stop the tree as `stop` does, but keep the node running: its services and timers
        go on, no root-exit listener hears of it, every path of the tree that no live actor
        holds is forgotten here (refs re-resolve, e.g. to the node that runs the tree next;
        a child that node has placed here meanwhile keeps its path), and `start` may be
        called again. A root that does not end within `timeout` is left to end on its own,
        unheard. Returns how the root ended (None if it was not running)."""
        root = self._root
        if root is None:
            return None
        self._releasing = root
        if not self._root_exited.is_set():
            root.request_stop(Shutdown())
            root.exited.wait(timeout)
        reason = self._root_reason
        self.registry.retire(root.path, with_descendants=True, only_idle=True)  # not what a new owner placed here
        self._root, self._root_reason = None, None
        self._root_exited.clear()
        return reason

    def _on_root_exit(self, actor: Actor, reason: ExitReason) -> None:
        if actor is not self._root:
            return  # a root released earlier, ending late: nothing of the node's any more
        if actor is self._releasing:
            self._root_reason = reason
            self._root_exited.set()
            return
        self._root_reason = reason
        self._root_exited.set()
        for listener in self._root_exit_listeners:
            try:
                listener(reason)
            except Exception:  # noqa: BLE001, S112 - one listener must not stop the others
                continue

    def wait(self, timeout: float | None = None) -> ExitReason | None:
        """Block until the root ends (or `timeout`); return its exit reason or None."""
        self._root_exited.wait(timeout)
        return self._root_reason

    def stop(self, timeout: float | None = None) -> ExitReason | None:
        """Stop the tree in reverse start order, each child within its own shutdown
        timeout; then stop the timers. Returns the root's exit reason."""
        root = self._root
        if root is not None and not self._root_exited.is_set():
            root.request_stop(Shutdown())
            root.exited.wait(timeout)
        services = self._services
        if services is not None:
            services.request_stop(Shutdown())
            services.exited.wait(timeout)
        self.scheduler.close()
        return self._root_reason

    # --- convenience for callers outside actors -----------------------------------------

    def ask(self, path: str, message: Any, timeout: float | None = 5.0) -> Any:
        """Ask the actor at `path` (see `PathRef.ask`)."""
        return self.ref(path).ask(message, timeout=timeout)

    def wait_started(self, path: str, timeout: float = 5.0, *, other_than: int | None = None) -> int:
        """Wait until a started incarnation (optionally not number `other_than`) lives at
        `path`; return its incarnation number. Raises `Unavailable` past `timeout`."""
        deadline = time.monotonic() + timeout
        slot = self.registry.wait_for_slot(path, timeout)
        actor = slot.wait_started(max(0.0, deadline - time.monotonic()), other_than=other_than) if slot else None
        if actor is None:
            raise Unavailable(path)
        return actor.incarnation
