"""The host: runs here the children that supervisors on other nodes place on this node.

A parent asks with `Spawn` and `Halt`; the host answers `Spawned` and `Exited`. Work for one
path runs in order on a thread of its own (a start may wait for a whole subtree, which may
itself wait for another node: one path never waits for another). A request is accepted only
from the node that runs the child's parent path.

The link to the parent is Erlang's: when the parent's node goes down — that very process,
identified by its boot id — the host stops the children it started. If the same process
turns out to be alive after all (it was only frozen, and may not have noticed anything),
the host tells it those children exited, so that its supervisors restart them.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from flotilla.actors.core.child_spec import PoolSpec
from flotilla.actors.core.messages import ExitReason, Killed, Shutdown, StartFailed
from flotilla.actors.core.stopping import stop_within
from flotilla.actors.core.supervisor import instantiate, shutdown_from_wire, start_timeout
from flotilla.actors.core.system import ActorSystem
from flotilla.nodes.cluster.codec import Envelope, Exited, Halt, Spawn, Spawned
from flotilla.nodes.config.directory import Directory

Send = Callable[[str, Envelope], None]

_log = structlog.get_logger("flotilla.host")


@dataclass
class _Hosted:
    """One incarnation run here for a parent elsewhere."""

    actor: Any
    urn: str
    parent_node: str
    parent_boot: str
    halting: bool = False


class _SerialJobs:
    """Runs jobs one at a time per key, each key on its own short-lived thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Callable[[], None]]] = {}

    def submit(self, key: str, job: Callable[[], None]) -> None:
        with self._lock:
            pending = self._queues.get(key)
            if pending is not None:
                pending.append(job)
                return
            self._queues[key] = deque([job])
        threading.Thread(target=self._drain, args=(key,), name=f"{self._name} {key}", daemon=True).start()

    def _drain(self, key: str) -> None:
        while True:
            with self._lock:
                pending = self._queues[key]
                if not pending:
                    del self._queues[key]
                    return
                job = pending.popleft()
            try:
                job()
            except Exception:  # noqa: BLE001 - one failed job must not stop the others
                _log.exception("host.job_failed", path=key)


class Host:
    """Children this node runs for parents on other nodes."""

    def __init__(self, node: str, directory: Directory, system: ActorSystem, send: Send) -> None:
        self.node = node
        self.directory = directory
        self.system = system
        self._send = send
        self._lock = threading.Lock()
        self._hosted: dict[str, _Hosted] = {}
        self._orphans: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._jobs = _SerialJobs(f"host {node}")

    # --- requests (called from the transport's I/O thread; never block) -----------------

    def spawn(self, peer: str, request: Spawn) -> None:
        parent_of_path = request.path.rsplit("/", 1)[0]
        if request.parent != parent_of_path or self.directory.whereis(request.parent) != peer:
            _log.warning("host.spawn_refused", peer=peer, path=request.path, parent=request.parent)
            self._send(
                peer,
                Spawned(
                    request.path,
                    request.urn,
                    StartFailed("NotYourChild", f"{peer} does not run the parent of {request.path}"),
                ),
            )
            return
        self._jobs.submit(request.path, lambda: self._start(peer, request))

    def halt(self, peer: str, request: Halt) -> None:
        """Only the node that started a child may stop it (`_halt` checks): a former owner of
        the tree still stops what it started here, although the tree has a new owner."""
        self._jobs.submit(request.path, lambda: self._halt(peer, request))

    def parent_node_down(self, peer: str, boot: str | None) -> None:
        """The node `peer` (process `boot`) stopped answering: stop what it started here."""
        with self._lock:
            doomed = [(path, h) for path, h in self._hosted.items() if h.parent_node == peer and h.parent_boot == boot]
        if doomed:
            self._orphans[(peer, boot or "")] = [(path, h.urn) for path, h in doomed]
        for path, hosted in doomed:
            self._jobs.submit(path, functools.partial(self._orphan, path, hosted))

    def parent_node_up(self, peer: str, boot: str | None) -> None:
        """`peer` answers again. If it is the same process, tell it which of its children
        were stopped meanwhile; if it restarted, it has forgotten them anyway."""
        for node, orphan_boot in [key for key in self._orphans if key[0] == peer]:
            orphans = self._orphans.pop((node, orphan_boot))
            if orphan_boot != (boot or ""):
                continue
            for path, urn in orphans:
                stopped = Exited(path, urn, Killed(f"stopped while {peer} was unreachable"))
                self._jobs.submit(path, functools.partial(self._send, peer, stopped))

    # --- the work (per-path threads) -------------------------------------------------------

    def _start(self, peer: str, request: Spawn) -> None:
        path = request.path
        with self._lock:
            previous = self._hosted.get(path)
        if previous is not None:
            self._stop(path, previous, shutdown=None)
        spec = self.directory.spec_at(path)
        failure: StartFailed | None
        if spec is None:
            failure = StartFailed("NoSuchChild", f"{path} is not in {self.node}'s topology")
        elif self.directory.whereis(path) != self.node:
            failure = StartFailed("WrongNode", f"{path} runs on {self.directory.whereis(path)}, not {self.node}")
        else:
            failure = self._launch(peer, request, spec)
        self._send(peer, Spawned(path, request.urn, failure))

    def _launch(self, peer: str, request: Spawn, spec: Any) -> StartFailed | None:
        path = request.path
        try:
            actor = instantiate(spec)
        except BaseException as exc:  # noqa: BLE001
            return StartFailed.from_exception(exc)
        hosted = _Hosted(actor, request.urn, peer, request.boot)

        def on_exit(_actor: Any, reason: ExitReason) -> None:
            # Runs in the child's thread: report it after the `Spawned` of this path.
            self._jobs.submit(path, lambda: self._exited(path, hosted, reason))

        slot = self.system.registry.slot(path, pool=isinstance(spec, PoolSpec))
        actor.attach(path=path, incarnation=request.incarnation, system=self.system, slot=slot, on_exit=on_exit)
        with self._lock:
            self._hosted[path] = hosted
        actor.launch()
        timeout = start_timeout(spec)
        if not actor.started.wait(timeout):
            timed_out = StartFailed("StartTimeout", f"on_start did not finish within {timeout:g} s")
            actor.abandon(timed_out)
            failure: StartFailed | None = timed_out
        else:
            failure = actor.start_failure
        if failure is not None:
            self._forget(path, hosted)
        return failure

    def _exited(self, path: str, hosted: _Hosted, reason: ExitReason) -> None:
        if self._forget(path, hosted) and not hosted.halting:
            self._send(hosted.parent_node, Exited(path, hosted.urn, reason))

    def _halt(self, peer: str, request: Halt) -> None:
        with self._lock:
            hosted = self._hosted.get(request.path)
        reason: ExitReason = Shutdown()
        if hosted is not None and hosted.parent_node != peer:
            _log.warning("host.halt_refused", peer=peer, path=request.path)
            return
        if hosted is not None and hosted.urn == request.urn:
            reason = self._stop(request.path, hosted, shutdown=request.shutdown)
        self._send(peer, Exited(request.path, request.urn, reason))

    def _orphan(self, path: str, hosted: _Hosted) -> None:
        with self._lock:
            current = self._hosted.get(path)
        if current is hosted:
            _log.info("host.orphan_stopped", path=path, parent_node=hosted.parent_node)
            self._stop(path, hosted, shutdown=None)

    def _forget(self, path: str, hosted: _Hosted) -> bool:
        with self._lock:
            if self._hosted.get(path) is hosted:
                del self._hosted[path]
                return True
            return False

    def _stop(self, path: str, hosted: _Hosted, shutdown: float | None) -> ExitReason:
        """Stop a hosted incarnation within `shutdown` (wire form; None: its spec's)."""
        hosted.halting = True
        self._forget(path, hosted)
        actor = hosted.actor
        spec = self.directory.spec_at(path)
        policy = shutdown_from_wire(shutdown) if shutdown is not None else (spec.shutdown if spec else 5.0)
        return stop_within(actor, policy).reason

    def stop_all(self) -> None:
        """Stop every hosted child (this node is stopping)."""
        with self._lock:
            hosted = list(self._hosted.items())
        for path, entry in hosted:
            self._stop(path, entry, shutdown=None)
