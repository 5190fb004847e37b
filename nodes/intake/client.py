"""A small Python client for a node's intake socket.

    client = IntakeClient.for_topology(load_topology("supervisor_tree.yaml"))
    acks = client.submit([JobSpec("http://example.com/p/1", "product")])
    client.counts(); client.results(); client.jobs(state="dead"); client.replay()
    client.job(acks[0].key); client.batch(client.last_batch); client.cancel(batch=client.last_batch)

A request that gets no answer within `timeout` is sent again on a fresh socket (the zguide's
Lazy Pirate), up to `retries` times; that is safe because submissions are idempotent by key.
After that, `IntakeUnavailable` is raised. When the intake refuses the client's key at the
CURVE handshake (seen on the socket's monitor), `IntakeRefused` is raised at once.

The intake accepts only CURVE clients whose keys it knows (nodes/intake/auth.py): pass a
`ClientKey`, or use `for_topology`, which finds the local user's key in the cluster's key
directory, or takes a client's own ``NAME.key_secret``.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import zmq
from zmq.utils.monitor import recv_monitor_message

from flotilla.nodes.intake.auth import ClientKey, client_key
from flotilla.nodes.intake.protocol import (
    MAX_BATCH,
    MAX_REQUEST_BYTES,
    Ack,
    Answer,
    BatchInfo,
    BatchStatus,
    BreakerInfo,
    BreakerReset,
    Cancel,
    Cancelled,
    CountList,
    Counts,
    Error,
    History,
    Hold,
    HoldInfo,
    HoldMode,
    JobInfo,
    JobList,
    Jobs,
    JobSpec,
    JobStory,
    Replay,
    Replayed,
    Request,
    ResultInfo,
    ResultList,
    Results,
    Status,
    Submit,
    Submitted,
    answer_decoder,
    encoder,
)

if TYPE_CHECKING:
    from flotilla.nodes.config.topology import Topology

A = TypeVar("A", bound=Answer)


class IntakeUnavailable(Exception):
    """The intake did not answer."""


class IntakeError(Exception):
    """The intake refused a request."""


class IntakeRefused(IntakeError):
    """The intake refused the client's key at the handshake."""


HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
"""Socket monitor events that mean the intake did not let this client in."""


class IntakeClient:
    """Requests to one intake socket, one at a time."""

    def __init__(self, address: str, timeout: float = 10.0, retries: int = 3, key: ClientKey | None = None) -> None:
        """`key`: the client's CURVE key pair and the intake's public key (None: no CURVE,
        which a real intake refuses)."""
        self.address = address
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self._context = zmq.Context()
        self._ids = itertools.count(1)
        self._session = uuid.uuid4().hex
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None

    def close(self) -> None:
        self._close_socket()
        self._context.term()

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.disable_monitor()
            self._socket.close(0)
        if self._monitor is not None:
            self._monitor.close(0)
        self._socket = self._monitor = None

    def __enter__(self) -> IntakeClient:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def _fresh_socket(self) -> zmq.Socket:
        self._close_socket()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if self.key is not None:
            self._socket.curve_publickey = self.key.public
            self._socket.curve_secretkey = self.key.secret
            self._socket.curve_serverkey = self.key.server
        self._monitor = self._socket.get_monitor_socket(HANDSHAKE_FAILED)
        self._socket.connect(self.address)
        return self._socket

    def _refusal(self) -> str | None:
        """Why the intake refused the handshake, if the monitor says it did."""
        assert self._monitor is not None  # noqa: S101  made with the socket
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            if event["event"] & HANDSHAKE_FAILED:
                if self.key is None:
                    return f"the intake at {self.address} refused a client without a CURVE key (pass --key)"
                return (
                    f"the intake at {self.address} refused this client's key: it is not among the topology's "
                    "clients and operators, or --server-key is not the intake node's key"
                )
        return None

    @classmethod
    def for_topology(
        cls,
        topology: Topology,
        key_file: Path | None = None,
        server_key_file: Path | None = None,
        *,
        wait_for_keys: float = 0.0,
        timeout: float = 10.0,
        retries: int = 3,
    ) -> IntakeClient:
        """A client of `topology`'s intake, with the key `client_key` finds (the local user's
        unless `key_file` is given); raises `KeyFileError` if there is none it can read."""
        if topology.intake is None:
            raise ValueError(f"{topology.source}: no intake section: this cluster takes no jobs")
        key = client_key(topology, key_file, server_key_file, wait=wait_for_keys)
        return cls(topology.intake.address, timeout=timeout, retries=retries, key=key)

    def _call(self, make: Callable[[int], Request], kind: type[A]) -> A:
        """Send the request `make` builds (given a fresh id), retrying on silence; the answer,
        which must be a `kind` (an `Error` answer raises `IntakeError`)."""
        request = make(next(self._ids))
        frame = encoder.encode(request)
        if len(frame) > MAX_REQUEST_BYTES:
            raise IntakeError(f"request of {len(frame)} bytes exceeds the intake's {MAX_REQUEST_BYTES}-byte limit")
        for _ in range(self.retries + 1):
            socket = self._socket or self._fresh_socket()
            poller = zmq.Poller()
            poller.register(socket, zmq.POLLIN)
            poller.register(self._monitor, zmq.POLLIN)
            socket.send(frame)
            deadline = time.monotonic() + self.timeout
            while (remaining := deadline - time.monotonic()) > 0:
                ready = dict(poller.poll(int(remaining * 1000)))
                refusal = self._refusal() if self._monitor in ready else None
                if refusal is not None:
                    self._close_socket()
                    raise IntakeRefused(refusal)
                if socket not in ready:
                    continue
                answer = answer_decoder.decode(socket.recv())
                if answer.id != request.id:
                    continue  # a late answer to an earlier, retried request
                if isinstance(answer, Error):
                    raise IntakeError(answer.reason)
                if not isinstance(answer, kind):
                    raise IntakeError(f"the intake answered {type(answer).__name__} where {kind.__name__} was due")
                return answer
            self._fresh_socket()
        raise IntakeUnavailable(f"no answer from {self.address} after {self.retries + 1} tries")

    last_batch = ""
    """Set by `submit`: the batch id its jobs were recorded in (the intake's when none was given)."""

    def submit(self, jobs: list[JobSpec], batch: str = "") -> list[Ack]:
        """Submit up to `MAX_BATCH` jobs as part of `batch` (empty: the intake makes an id,
        kept in `last_batch`); one `Ack` per job, in order."""
        answer = self._call(lambda i: Submit(i, jobs, self._session, batch), Submitted)
        self.last_batch = answer.batch or batch
        return answer.acks

    def submit_all(self, jobs: Iterable[JobSpec], batch: int = 500, batch_id: str = "") -> Iterator[list[Ack]]:
        """Submit any number of jobs in requests of `batch` jobs, all in the batch `batch_id`
        (empty: one new id for all of them); yield each request's acks."""
        batch_id = batch_id or uuid.uuid4().hex
        pending: list[JobSpec] = []
        for job in jobs:
            pending.append(job)
            if len(pending) >= min(batch, MAX_BATCH):
                yield self.submit(pending, batch_id)
                pending = []
        if pending:
            yield self.submit(pending, batch_id)

    def status(self, keys: list[str]) -> list[JobInfo]:
        answer = self._call(lambda i: Status(i, keys), JobList)
        return answer.jobs

    def jobs(self, state: str | None = None, after: str = "", limit: int = 100) -> tuple[list[JobInfo], str]:
        """One page of jobs and the key to continue after ('' at the end)."""
        answer = self._call(lambda i: Jobs(i, state, after, limit), JobList)
        return answer.jobs, answer.next

    def all_jobs(self, state: str | None = None) -> Iterator[JobInfo]:
        after = ""
        while True:
            page, after = self.jobs(state, after, 1000)
            yield from page
            if not after:
                return

    def results(self, after: str = "", limit: int = 100) -> tuple[list[ResultInfo], str]:
        answer = self._call(lambda i: Results(i, after, limit), ResultList)
        self.stale_notice = answer.notice if answer.stale else ""
        return answer.results, answer.next

    def all_results(self) -> Iterator[ResultInfo]:
        after = ""
        while True:
            page, after = self.results(after, 1000)
            yield from page
            if not after:
                return

    def counts(self) -> CountList:
        answer = self._call(lambda i: Counts(i), CountList)
        return answer

    stale_notice = ""
    """Set by `results`: why the results may be out of date (the fleet is in Hold), or ""."""

    def hold(self, mode: HoldMode | None = None) -> HoldInfo:
        """Force the fleet's Hold on or off, or back to auto; None only asks."""
        answer = self._call(lambda i: Hold(i, mode), HoldInfo)
        return answer

    def job(self, key: str) -> JobStory:
        """One job's story: its state, every event oldest first, and its result if stored."""
        answer = self._call(lambda i: History(i, key), JobStory)
        return answer

    def batch(self, batch: str) -> BatchInfo:
        """How far the batch has come (its jobs by state; `done` once every one is finished)."""
        answer = self._call(lambda i: BatchStatus(i, batch), BatchInfo)
        return answer

    def cancel(self, keys: list[str] | None = None, batch: str | None = None) -> int:
        """End these jobs, or every job of `batch`, that are not finished (dead, "cancelled by
        an operator"); how many were."""
        answer = self._call(lambda i: Cancel(i, keys, batch), Cancelled)
        return answer.count

    def reset_breaker(self, target: str) -> BreakerInfo:
        """Close the breaker of `target` (``host:port`` or a URL on it)."""
        answer = self._call(lambda i: BreakerReset(i, target), BreakerInfo)
        return answer

    def replay(self, keys: list[str] | None = None) -> int:
        """Put dead and parked jobs back to pending (these keys, or all)."""
        answer = self._call(lambda i: Replay(i, keys), Replayed)
        return answer.count
