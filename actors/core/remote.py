"""Children that run on another node, as a supervisor sees them.

A supervisor treats a remote child like a local one: it starts it, is told when it exits,
and stops it within its shutdown timeout. The `RemoteIncarnation` stands in for the actor;
the node's cluster layer (`nodes/cluster/membership.py`, which implements `RemoteLink`) carries the
requests over the wire and reports back. When the child's node goes down, the incarnation
exits with `NodeDown(node)`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from flotilla.actors.core.messages import ExitReason, Killed, NodeDown, StartFailed

if TYPE_CHECKING:
    from flotilla.actors.core.registry import Slot

REMOTE_REPLY_GRACE = 2.0
"""Seconds a supervisor waits beyond a remote child's shutdown timeout for the node to
confirm the stop, before it gives the child up as `Killed`."""


class RemoteLink(Protocol):
    """What the actor layer needs from the cluster layer (implemented in `nodes/`)."""

    node: str

    def whereis(self, path: str) -> str: ...

    def is_up(self, node: str) -> bool: ...

    def wait_up(self, node: str, timeout: float) -> bool: ...

    def remote_slot(self, path: str) -> Slot: ...

    def spawn(self, incarnation: RemoteIncarnation) -> None: ...

    def halt(self, incarnation: RemoteIncarnation, shutdown: float) -> None: ...

    def forget(self, incarnation: RemoteIncarnation) -> None: ...

    def watch_membership(self, listener: Callable[[Any], None]) -> Callable[[], None]: ...

    def monitor(self, path: str, deliver: Callable[[Any], None]) -> Callable[[], None]: ...


class RemoteIncarnation:
    """One incarnation of a child running on `node`, with the actor's supervision surface."""

    def __init__(
        self,
        *,
        path: str,
        incarnation: int,
        node: str,
        parent: str,
        link: RemoteLink,
        on_exit: Callable[[Any, ExitReason], None],
    ) -> None:
        self.path = path
        self.incarnation = incarnation
        self.node = node
        self.parent = parent
        self.link = link
        self.actor_urn = f"urn:remote:{node}:{uuid.uuid4()}"
        self.started = threading.Event()
        self.exited = threading.Event()
        self.actor_stopped = threading.Event()
        self.start_failure: StartFailed | None = None
        self._final_reason: ExitReason | None = None
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._abandoned = False
        self._stop_requested = False

    # --- what the supervisor calls ----------------------------------------------------

    def launch(self) -> None:
        """Ask the child's node to start it; `started` is set when it answers."""
        self.link.spawn(self)

    def request_stop(self, reason: ExitReason) -> None:
        """Ask the node to stop the child within its shutdown timeout."""
        self._stop_requested = True
        self.link.halt(self, self.shutdown_seconds)

    shutdown_seconds: float = 5.0

    def abandon(self, reason: ExitReason) -> None:
        """Give the child up without the node's confirmation."""
        with self._lock:
            self._abandoned = True
            if self._final_reason is None:
                self._final_reason = reason
        self.actor_stopped.set()
        self.started.set()
        self.exited.set()
        self.link.forget(self)

    def kill(self, reason: ExitReason) -> None:
        """Give the child up now. Its node is asked to kill it (-1: brutal_kill on the wire),
        unless it was already asked to stop it: then the node kills it there when the
        child's own shutdown time runs out."""
        if not self._stop_requested:
            self._stop_requested = True
            self.link.halt(self, -1.0)
        self.abandon(reason)

    def drain(self) -> int:
        """Nothing is queued here: the mailbox is on the child's node."""
        return 0

    @property
    def mailbox_depth(self) -> int:
        return 0

    @property
    def final_reason(self) -> ExitReason | None:
        return self._final_reason

    @property
    def ending(self) -> bool:
        return self.exited.is_set()

    # --- what the cluster layer calls -------------------------------------------------

    def spawned(self, failure: StartFailed | None) -> None:
        """The node answered the start request."""
        self.start_failure = failure
        if failure is not None:
            self.actor_stopped.set()
        self.started.set()

    def ended(self, reason: ExitReason) -> None:
        """The child ended on its node (or its node went down): tell the supervisor once."""
        with self._lock:
            if self.exited.is_set():
                return
            self._final_reason = reason
            abandoned = self._abandoned
            self.actor_stopped.set()
            self.exited.set()
        if not self.started.is_set():
            self.spawned(
                StartFailed("NodeDown", f"node {self.node} went down during the start")
                if isinstance(reason, NodeDown)
                else StartFailed("Exited", str(reason))
            )
            return
        if not abandoned and self.start_failure is None:
            self._on_exit(self, reason)

    def node_down(self) -> None:
        """The child's node stopped answering."""
        self.ended(NodeDown(self.node))


def killed_without_answer(node: str, seconds: float) -> Killed:
    """The reason given to a remote child whose node did not confirm its stop."""
    return Killed(f"node {node} did not confirm the stop within {seconds:g} s")
