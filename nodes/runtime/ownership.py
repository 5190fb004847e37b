"""The tree's ownership: which candidate node runs the root and every unplaced child now.

With `failover` in the topology, every candidate node runs this loop. Every quarter of the
lease it claims (or renews) the lease ``tree`` in the journal's database:

* granted, and this node did not own the tree: it announces its fencing token to its peers
  (a heartbeat, ahead of anything else it sends, so their hosts accept its `Spawn`s and their
  refs follow it), then starts the tree;
* refused (another node holds it), or not renewed for three quarters of the lease (the
  database is out of reach): it stops the tree and announces that it owns nothing. A peer
  heard announcing a newer token makes it step down at its next round.

So two nodes never hold the lease at once, even across a partition: the one cut off from the
database starts stopping its tree a quarter of a lease before the lease could be taken over
(a slow child may still be stopping when the next owner starts; the routers' writes are
fenced by the token, so nothing it writes counts). The database is asked on a thread of
its own, so this holds whatever the database client does on a link that drops every packet
(a call may hang there for minutes): an owner whose renewal has not come back in time steps
down all the same, and an answer that comes back that late is not acted on (nor a grant
slower than a round: the tree starts on the next, prompter renewal instead of starting with
its deadline nearly spent).

With ``failback: return`` an owner that sees a candidate earlier in the list up hands the
lease over (Erlang's takeover); with ``stay`` (the default) it keeps it. Without `failover`,
the root's node owns the tree for good and nothing here runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as CallTimeout
from typing import Any, Protocol

import structlog

from flotilla.actors.core.messages import describe_reason
from flotilla.actors.core.system import ActorSystem, RootStartError
from flotilla.nodes.cluster.membership import Cluster
from flotilla.nodes.config.model import FailoverConfig
from flotilla.nodes.config.topology import Topology

TREE_LEASE = "tree"
"""The name of the tree's lease in the `owners` table."""
WATCH_EVERY = 0.1
"""Seconds between a standby's claims while the owner it knows of is down."""
STOP_TIMEOUT = 30.0
"""Longest wait for the tree to stop when stepping down (each child has its own timeout)."""


class Leases(Protocol):
    """The lease operations the loop needs (`flotilla.actors.pipeline.leases`)."""

    def claim(self, name: str, holder: str, ttl: float) -> int | None: ...

    def release(self, name: str, holder: str, token: int) -> bool: ...

    def close(self) -> None: ...


class TreeOwnership:
    """Claims the tree's lease for this node and runs the tree while it holds it."""

    def __init__(
        self,
        topology: Topology,
        node: str,
        system: ActorSystem,
        cluster: Cluster,
        leases: Leases,
        on_failure: Callable[[str], None],
        node_stopping: threading.Event | None = None,
        on_role: Callable[[str], None] | None = None,
    ) -> None:
        """`node_stopping`: set when the node has been asked to stop; a standby then no
        longer claims the tree (it would only start it to stop it again). `on_role` hears
        "owner" once the tree has started here and "standby" when another node holds the
        lease or this one stepped down (the node's ready file)."""
        self.on_role = on_role or (lambda _role: None)
        assert topology.failover is not None  # noqa: S101  only built with failover
        self.node_stopping = node_stopping or threading.Event()
        self.config: FailoverConfig = topology.failover
        self.topology = topology
        self.node = node
        self.system = system
        self.cluster = cluster
        self.leases = leases
        self.holder = f"{node}/{cluster.boot}"
        self.on_failure = on_failure
        self.token = 0
        """The lease token while this node owns the tree (0: it does not)."""
        self._renewed_at = 0.0
        self._calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lease {node}")
        """Runs the database calls, one at a time (a hung one holds back the next)."""
        self._claim: Future[int | None] | None = None
        self._asked_at = 0.0
        self._released: Future[None] | None = None
        self._starting: threading.Thread | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ownership {node}", daemon=True)
        self.log = structlog.get_logger("flotilla.ownership")

    @property
    def owns(self) -> bool:
        return self.token != 0

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop claiming; give up the tree and the lease if this node owns them."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(STOP_TIMEOUT + 5)
        self.step_down("the node is stopping")
        self._calls.shutdown(wait=False)
        pending: list[Future[Any]] = [call for call in (self._claim, self._released) if call is not None]
        if not wait(pending, timeout=self.config.lease).not_done:  # a hung call keeps its connection
            self.leases.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.tick()
            self._stopping.wait(self._patience())

    def _patience(self) -> float:
        """How long to wait now: a round, or less if the owner's renewal falls due sooner. A
        standby whose known owner is down claims more often (`WATCH_EVERY`), to take over
        as soon as the dead owner's lease runs out."""
        if not self.owns:
            owner = self.cluster.directory.owner
            if owner != self.node and not self.cluster.is_up(owner):
                return min(self.config.renew_every, WATCH_EVERY)
            return self.config.renew_every
        return max(0.0, min(self.config.renew_every, self._renewed_at + self.config.act_for - time.monotonic()))

    def tick(self) -> None:
        """One round: claim or renew (or keep waiting for the claim still out), then start or
        stop the tree as the answer says."""
        if self.node_stopping.is_set() and not self.owns:
            return
        if self._claim is None:
            self._asked_at = time.monotonic()
            self._claim = self._calls.submit(self.leases.claim, TREE_LEASE, self.holder, self.config.lease)
        asked_at = self._asked_at
        try:
            token = self._claim.result(timeout=self._patience())
        except CallTimeout:
            overdue = time.monotonic() - self._renewed_at
            if self.owns and overdue >= self.config.act_for:
                self.step_down(f"lease not renewed for {overdue:.1f} s: the database did not answer")
            return
        except Exception as exc:  # noqa: BLE001 - an unreachable database is a state, not a crash
            self._claim = None
            if self.owns and time.monotonic() - self._renewed_at >= self.config.act_for:
                self.step_down(f"lease not renewed for {time.monotonic() - self._renewed_at:.1f} s: {exc}")
            elif self.owns:
                self.log.warning("ownership.renew_failed", error=str(exc))
            return
        self._claim = None
        took = time.monotonic() - asked_at
        if self._stopping.is_set() or took >= self.config.act_for:
            return  # too late to act on: the lease it speaks of may have run out meanwhile
        if not self.owns and token is not None and took >= self.config.renew_every:
            return  # granted slowly: start the tree on a prompter renewal, not to stop it at once
        if token is None:
            if self.owns:
                self.step_down("another node holds the lease")
            self.on_role("standby")
            return
        if self.owns and token != self.token:
            self.step_down(f"the lease was taken over (token {self.token} → {token})")
            return  # the next round claims afresh: this answer may be long out of date now
        self._renewed_at = asked_at
        if not self.owns:
            self._take_over(token)
        elif self.cluster.directory.owner != self.node:
            self.step_down(f"{self.cluster.directory.owner} owns the tree under a newer lease")
        elif self.config.failback == "return" and self._preferred_up():
            self.step_down(f"{self._preferred_up()} is back and comes first among the candidates")

    def _preferred_up(self) -> str | None:
        """A candidate ahead of this node that is up, if any."""
        for candidate in self.config.candidates:
            if candidate == self.node:
                return None
            if self.cluster.is_up(candidate):
                return candidate
        return None

    def _take_over(self, token: int) -> None:
        """Own the tree: announce it, then start the tree on a thread of its own (the lease
        keeps being renewed while the tree starts)."""
        self.token = token
        self.cluster.announce_owner(token)
        self.log.info("ownership.acquired", token=token, candidates=list(self.config.candidates))
        self._starting = threading.Thread(target=self._start_tree, args=(token,), name="tree start", daemon=True)
        self._starting.start()

    def _start_tree(self, token: int) -> None:
        try:
            self.system.start(self.topology.tree, path=self.topology.root_path)
        except RootStartError as exc:
            self.log.critical("ownership.start_failed", error=str(exc), reason=describe_reason(exc.reason))
            self.on_failure(f"the tree could not start: {exc}")
            return
        self.log.info("ownership.tree_started", token=token, root=self.topology.root_path)
        self.on_role("owner")

    def step_down(self, why: str) -> None:
        """Stop the tree here, tell the peers, and end the lease if still held."""
        token = self.token
        if not token:
            return
        self.token = 0
        self.cluster.announce_owner(0)
        self.log.warning("ownership.released", token=token, why=why)
        starting = self._starting
        if starting is not None and starting is not threading.current_thread():
            starting.join()
        self.system.release_root(STOP_TIMEOUT)
        self.on_role("standby")
        self._released = self._calls.submit(self._release, token)

    def _release(self, token: int) -> None:
        try:
            self.leases.release(TREE_LEASE, self.holder, token)
        except Exception as exc:  # noqa: BLE001 - it runs out by itself
            self.log.warning("ownership.release_failed", error=str(exc))
