"""Stable addresses: paths, the slots behind them, refs by path and the dead letters.

A path (``node/sup/child``) names a child for as long as its spec exists. Behind each path
is a `Slot` that points at the live incarnation, if any. A restart rebinds the slot to the
new incarnation, so senders holding a `PathRef` never notice. A message to a path with no
live incarnation is a dead letter: it is counted, and an asker gets `Unavailable` at once.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import pykka

from flotilla.actors.core.errors import Timeout as AskTimeout
from flotilla.actors.core.errors import Unavailable
from flotilla.actors.core.messages import SupervisorRequest

if TYPE_CHECKING:
    from flotilla.actors.core.actor import Actor

DEFAULT_ASK_TIMEOUT = 5.0
"""Seconds an ask waits for its reply unless told otherwise."""

RECENT_DEAD_LETTERS = 100
"""How many recent dead letters are kept for inspection (older ones are only counted)."""


class DeadLetter(NamedTuple):
    """A message that found no live incarnation."""

    at: float
    path: str
    message_type: str
    was_ask: bool


class Returnable(Protocol):
    """A message that goes back to its sender when nobody can take it (a job, typically):
    it names the sender's path in `reply_to` and says what to tell it with `returned`. The
    core knows such messages only by these two members (pipeline jobs provide them)."""

    @property
    def reply_to(self) -> str:
        """The path of the sender, which is told `returned(reason)`."""
        ...

    def returned(self, reason: str) -> Any:
        """What the sender is told when this message is dead-lettered for `reason`."""
        ...


class DeadLetters:
    """Counts dead letters, keeps the most recent ones and tells listeners about each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self.recent: deque[DeadLetter] = deque(maxlen=RECENT_DEAD_LETTERS)
        self.listeners: list[Callable[[DeadLetter], None]] = []
        self.bounce: Callable[[str, Returnable], None] = lambda _path, _message: None
        """Called with each dead-lettered message that can be returned to its sender (a
        `Returnable`: it has a `returned(reason)` method); set by the actor system."""

    @property
    def count(self) -> int:
        """Dead letters since start."""
        return self._count

    def record(self, path: str, message: Any, *, was_ask: bool, type_name: str | None = None) -> None:
        """Count one dead letter for `path` (`type_name` overrides the message's type)."""
        letter = DeadLetter(time.time(), path, type_name or type(message).__name__, was_ask)
        with self._lock:
            self._count += 1
            self.recent.append(letter)
        for listener in self.listeners:
            try:
                listener(letter)
            except Exception:  # noqa: BLE001, S112 - counting must never fail a send
                continue
        if hasattr(message, "returned"):
            with contextlib.suppress(Exception):  # returning must never fail a send
                self.bounce(path, message)


class PendingReply:
    """The pending answer to an ask; `get()` returns it or raises a typed `AskError`."""

    __slots__ = ("_future", "path", "timeout")

    def __init__(self, path: str, future: pykka.Future[Any], timeout: float | None = DEFAULT_ASK_TIMEOUT) -> None:
        self.path = path
        self._future = future
        self.timeout = timeout

    @classmethod
    def failed(cls, path: str, error: Exception) -> PendingReply:
        """A reply that already holds `error`."""
        future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        future.set_exception((type(error), error, None))
        return cls(path, future)

    def get(self, timeout: float | None | EllipsisType = ...) -> Any:
        """Wait up to `timeout` seconds (default: the ask's own; None: forever)."""
        wait = self.timeout if isinstance(timeout, EllipsisType) else timeout
        try:
            return self._future.get(timeout=wait)
        except pykka.Timeout:
            raise AskTimeout(self.path, wait or 0.0) from None
        except pykka.ActorDeadError:
            raise Unavailable(self.path) from None


class Slot:
    """The stable place behind one path; bound to the live incarnation or to nothing."""

    __slots__ = ("path", "_actor", "_changed", "_dead_letters", "retired")

    def __init__(self, path: str, dead_letters: DeadLetters) -> None:
        self.path = path
        self._actor: Actor | None = None
        self._changed = threading.Condition(threading.Lock())
        self._dead_letters = dead_letters
        self.retired = False

    @property
    def live(self) -> bool:
        """True if a live incarnation is bound."""
        return self.actor is not None

    @property
    def local(self) -> bool:
        """True if work sent here now goes to a live actor on this node (a mailbox put, which
        never waits on the network)."""
        return self.actor is not None

    @property
    def actor(self) -> Actor | None:
        """The live incarnation, or None."""
        actor = self._actor
        if actor is None or actor.actor_stopped.is_set():
            return None
        return actor

    def bind(self, actor: Actor) -> None:
        """Point the path at a new incarnation."""
        with self._changed:
            self._actor = actor
            self._changed.notify_all()

    def unbind(self, actor: Actor) -> None:
        """Detach `actor` from the path, unless a newer incarnation is already bound."""
        with self._changed:
            if self._actor is actor:
                self._actor = None
                self._changed.notify_all()

    def wait_started(self, timeout: float, *, other_than: int | None = None) -> Actor | None:
        """Wait up to `timeout` s for a live incarnation that finished `on_start` (and is
        not incarnation number `other_than`); return it, or None at the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                actor = self.actor
                if actor is not None and actor.incarnation != other_than:
                    self._changed.release()
                    try:
                        actor.started.wait(max(0.0, deadline - time.monotonic()))
                    finally:
                        self._changed.acquire()
                    if self.actor is actor and actor.start_failure is None and actor.started.is_set():
                        return actor
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def tell(self, message: Any) -> None:
        """Deliver without waiting; a dead letter if nothing live is bound."""
        actor = self._actor
        if actor is None or not actor.deliver(message):
            self._dead_letters.record(self.path, message, was_ask=False)

    def ask(self, message: Any, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> PendingReply:
        """Deliver and return the pending `PendingReply`; it fails with `Unavailable` at once
        if nothing live is bound."""
        future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        if not self.deliver(message, future):
            return PendingReply.failed(self.path, Unavailable(self.path))
        return PendingReply(self.path, future, timeout)

    def deliver(self, message: Any, reply_to: Any) -> bool:
        """Deliver an ask answered through `reply_to` (anything with a future's `set` and
        `set_exception`); False, after counting a dead letter, if nothing live is bound."""
        actor = self._actor
        if actor is not None and actor.deliver(message, reply_to):
            return True
        self._dead_letters.record(self.path, message, was_ask=True)
        return False

    def dead_letter(self, message: Any, *, was_ask: bool) -> None:
        """Count `message` as a dead letter of this path."""
        self._dead_letters.record(self.path, message, was_ask=was_ask)


def _local_first(replicas: Sequence[Slot], turn: int) -> Slot | None:
    """The replica at `turn` among the live ones that run on this node (round-robin over
    them), else among the live ones anywhere; None if none is live."""
    local = [replica for replica in replicas if replica.actor is not None]
    if local:
        return local[turn % len(local)]
    count = len(replicas)
    for offset in range(count):
        replica = replicas[(turn + offset) % count]
        if replica.live:
            return replica
    return None


class PoolSlot(Slot):
    """The slot of a pool: work goes round-robin to a live replica on this node if there is
    one (a page is extracted where it was fetched), else round-robin to a live replica
    anywhere; supervisor requests go to the pool's own supervisor."""

    __slots__ = ("_replicas", "_turn")

    def __init__(self, path: str, dead_letters: DeadLetters) -> None:
        super().__init__(path, dead_letters)
        self._replicas: Sequence[Slot] = ()
        self._turn = itertools.count()

    @property
    def live(self) -> bool:
        """True if at least one replica is live (work sent here would be served)."""
        return any(replica.live for replica in self._replicas)

    @property
    def local(self) -> bool:
        return any(replica.actor is not None for replica in self._replicas)

    def set_replicas(self, replicas: Sequence[Slot]) -> None:
        """Replace the replica slots (copy-on-write: senders see the old or the new set)."""
        self._replicas = tuple(replicas)

    def _pick(self) -> Slot | None:
        replicas = self._replicas
        if not replicas:
            return None
        return _local_first(replicas, next(self._turn))

    def tell(self, message: Any) -> None:
        if isinstance(message, SupervisorRequest):
            super().tell(message)
            return
        replica = self._pick()
        if replica is None:
            self.dead_letter(message, was_ask=False)
        else:
            replica.tell(message)

    def deliver(self, message: Any, reply_to: Any) -> bool:
        if isinstance(message, SupervisorRequest):
            return super().deliver(message, reply_to)
        replica = self._pick()
        if replica is None:
            self.dead_letter(message, was_ask=True)
            return False
        return replica.deliver(message, reply_to)


class PoolRoute(Slot):
    """The way to a pool supervised on another node (`remote`), from this node: work goes
    round-robin to a live replica of the pool that runs here, if there is one (so a page is
    extracted on the node that fetched it), else to `remote`, whose node picks a replica;
    supervisor requests always go to `remote`."""

    __slots__ = ("remote", "_registry", "_turn")

    def __init__(self, path: str, remote: Slot, registry: Registry) -> None:
        super().__init__(path, registry.dead_letters)
        self.remote = remote
        self._registry = registry
        self._turn = itertools.count()

    @property
    def live(self) -> bool:
        return self._local() is not None or self.remote.live

    @property
    def local(self) -> bool:
        return any(replica.actor is not None for replica in self._registry.local_replicas(self.path))

    def _local(self) -> Slot | None:
        replicas = self._registry.local_replicas(self.path)
        if not replicas:
            return None
        return _local_first(replicas, next(self._turn))  # each is a slot of this node

    def tell(self, message: Any) -> None:
        replica = None if isinstance(message, SupervisorRequest) else self._local()
        (replica or self.remote).tell(message)

    def ask(self, message: Any, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> PendingReply:
        replica = None if isinstance(message, SupervisorRequest) else self._local()
        return (replica or self.remote).ask(message, timeout)

    def deliver(self, message: Any, reply_to: Any) -> bool:
        replica = None if isinstance(message, SupervisorRequest) else self._local()
        return (replica or self.remote).deliver(message, reply_to)


class PathRef:
    """Send to whatever incarnation lives at `path`, now or after any number of restarts."""

    __slots__ = ("path", "_registry", "_slot")

    def __init__(self, path: str, registry: Registry) -> None:
        self.path = path
        self._registry = registry
        self._slot: Slot | None = None

    def __repr__(self) -> str:
        return f"PathRef({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PathRef) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def _resolve(self) -> Slot | None:
        slot = self._slot
        if slot is None or slot.retired:
            slot = self._slot = self._registry.lookup(self.path)
        return slot

    def tell(self, message: Any) -> None:
        """Send `message`; never blocks, never raises for a missing incarnation."""
        slot = self._slot
        if slot is None or slot.retired:
            slot = self._resolve()
            if slot is None:
                self._registry.dead_letters.record(self.path, message, was_ask=False)
                return
        slot.tell(message)

    def ask_async(self, message: Any, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> PendingReply:
        """Send `message` and return the pending `PendingReply` at once (its `get()` waits up to
        `timeout`)."""
        slot = self._resolve()
        if slot is None:
            self._registry.dead_letters.record(self.path, message, was_ask=True)
            return PendingReply.failed(self.path, Unavailable(self.path))
        return slot.ask(message, timeout)

    def ask(self, message: Any, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> Any:
        """Send `message` and wait for the answer.

        Raises `Unavailable` (no live incarnation), `ActorCrashed` (the handler raised),
        `Timeout`, and for a path on another node `NodeUnreachable`, `NoSuchActor` or
        `RemoteFailure`.
        """
        return self.ask_async(message, timeout).get(timeout)

    def is_local(self) -> bool:
        """True if a tell now goes to a live actor on this node (a mailbox put: it never waits
        for the network, as a tell to another node may when that peer's backlog is full)."""
        slot = self._resolve()
        return slot is not None and slot.local

    def is_alive(self) -> bool:
        """True if a live incarnation is bound to the path right now (for a path on
        another node: if that node is up)."""
        slot = self._resolve()
        return slot is not None and slot.live


class Registry:
    """All slots of one node, by path, and the node's dead letters."""

    def __init__(self) -> None:
        self._slots: dict[str, Slot] = {}
        self._replicas: dict[str, tuple[Slot, ...]] = {}
        """Slots of numbered children (a pool's replicas) by their parent's path."""
        self._lock = threading.Lock()
        self._created = threading.Condition(self._lock)
        self.dead_letters = DeadLetters()
        self.resolver: Callable[[str], Slot | None] | None = None
        """Set by the cluster layer: the slot of a path that runs on another node."""

    def slot(self, path: str, *, pool: bool = False) -> Slot:
        """The slot for `path`, created on first use (a `PoolSlot` if `pool`)."""
        with self._lock:
            slot = self._slots.get(path)
            wanted = PoolSlot if pool else Slot
            if slot is None or type(slot) is not wanted:
                if slot is not None:
                    slot.retired = True
                slot = self._slots[path] = wanted(path, self.dead_letters)
                self._index_replica(path)
                self._created.notify_all()
            return slot

    def _index_replica(self, path: str) -> None:
        """Refresh the replicas known under `path`'s parent, if `path` is numbered (lock held)."""
        parent, _, last = path.rpartition("/")
        if parent and last.isdigit():
            prefix = parent + "/"
            self._replicas[parent] = tuple(
                slot for p, slot in self._slots.items() if p.startswith(prefix) and p[len(prefix) :].isdigit()
            )

    def local_replicas(self, path: str) -> tuple[Slot, ...]:
        """The slots on this node of the numbered children of `path` (the replicas of the
        pool at `path` that run here, live or not)."""
        return self._replicas.get(path, ())

    def wait_for_slot(self, path: str, timeout: float) -> Slot | None:
        """Wait up to `timeout` s for a slot at `path`; return it or None."""
        deadline = time.monotonic() + timeout
        with self._created:
            while (slot := self._slots.get(path)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._created.wait(remaining)
            return slot

    def lookup(self, path: str) -> Slot | None:
        """The slot for `path` here, else (with a cluster) the slot that reaches the node
        that runs it; None if nothing has that path."""
        slot = self._slots.get(path)
        if slot is None and self.resolver is not None:
            return self.resolver(path)
        return slot

    def lookup_local(self, path: str) -> Slot | None:
        """The slot for `path` on this node only."""
        return self._slots.get(path)

    def retire(self, path: str, *, with_descendants: bool = False, only_idle: bool = False) -> None:
        """Forget `path` (its child spec is gone), and with `with_descendants` every path
        below it; refs holding them re-resolve. With `only_idle`, a slot a live actor holds
        is kept."""
        prefix = path + "/"
        with self._lock:
            doomed = [
                p
                for p, slot in self._slots.items()
                if (p == path or (with_descendants and p.startswith(prefix))) and not (only_idle and slot.actor)
            ]
            slots = [self._slots.pop(p) for p in doomed]
            for p in doomed:
                self._index_replica(p)
        for slot in slots:
            slot.retired = True

    def ref(self, path: str) -> PathRef:
        """A ref that follows `path` across restarts."""
        return PathRef(path, self)

    def paths(self) -> list[str]:
        """Every known path, sorted."""
        return sorted(self._slots)

    def local_actors(self) -> list[Actor]:
        """The live incarnations on this node, by path."""
        with self._lock:
            slots = sorted(self._slots.items())
        return [actor for _, slot in slots if (actor := slot.actor) is not None]

    def mailbox_depths(self) -> dict[str, int]:
        """Messages waiting in each live local actor's mailbox, by path (safe from any thread:
        it reads only the mailbox queues' sizes)."""
        return {actor.path: actor.mailbox_depth for actor in self.local_actors()}
