"""A small Python client for the cluster's intake sockets.

    client = IntakeClient.for_topology(load_topology("supervisor_tree.yaml"))
    acks = client.submit([JobSpec("http://example.com/p/1", "product")])
    client.counts(); client.results(); client.jobs(state="dead"); client.replay()
    client.job(acks[0].key); client.batch(client.last_batch); client.cancel(batch=client.last_batch)

A request that gets no answer within `timeout` is sent again on a fresh socket (the zguide's
Lazy Pirate), up to `retries` times; that is safe because submissions are idempotent by key.
After that, `IntakeUnavailable` is raised. When the intake refuses the client's key at the
CURVE handshake (seen on the socket's monitor), `IntakeRefused` is raised at once.

With several intake addresses (one per node, `IntakeClient.for_topology` takes them all) a
request that gets no answer within `timeout`, or whose connection is refused while another
address is left to try, goes to the next address at once: every intake is active, so there is
no backup to wait for (Binary Star's settle delay). The address that answered last is tried
first next time. An answer is never failed over: an `Error` reply or a refused key is the
fleet's verdict, the same from every intake.

A client made with `fail_fast` (as every `flotilla` command is) first checks that something
listens at one of its addresses (`listening`: a plain connect, refused at once on loopback)
and raises `IntakeUnavailable` ("no cluster at ...: start it with flotilla up") at once when
nothing does, instead of waiting `timeout × addresses × (retries + 1)`; an intake that listens
but is slow still gets every retry.

The intake accepts only CURVE clients whose keys it knows (nodes/intake/auth.py): pass a
`ClientKey`, or use `for_topology`, which finds the local user's key in the cluster's key
directory, or takes a client's own ``NAME.key_secret``.
"""

from __future__ import annotations

import itertools
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    EndedState,
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
    Reextract,
    Reextracted,
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

CONNECT_REFUSED = zmq.EVENT_CONNECT_RETRIED
"""The monitor event of a TCP connection that failed (nothing listens there): ZeroMQ will try
again later, and a client with another address goes there meanwhile (a client of one address
does not watch for it, and waits its timeout)."""


PROBE_TIMEOUT = 0.5
"""Seconds a `fail_fast` client waits for each address's connect: a connect that neither
succeeds nor is refused by then (a remote host that drops packets) is left to the retries."""


def listening(address: str, timeout: float = PROBE_TIMEOUT) -> bool | None:
    """Whether something accepts connections at the ZeroMQ `address` (``tcp://host:port`` or
    ``ipc://path``): True, False (refused, no such socket file, or a host name that does not
    resolve), or None when the connect neither succeeded nor failed within `timeout`, or the
    transport cannot be probed."""
    scheme, _, where = address.partition("://")
    try:
        if scheme == "ipc":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.connect(where)
            return True
        if scheme != "tcp":
            return None
        host, _, port = where.rpartition(":")
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except TimeoutError:
        return None
    except (OSError, ValueError):
        return False


def no_cluster(addresses: Sequence[str]) -> str:
    """What a command says when nothing listens at any of the intake `addresses`."""
    return f"no cluster at {', '.join(addresses)}: start it with flotilla up"


class IntakeClient:
    """Requests to the intake sockets, one at a time, failing over between their addresses."""

    def __init__(
        self,
        address: str | Sequence[str],
        timeout: float = 10.0,
        retries: int = 3,
        key: ClientKey | None = None,
        *,
        fail_fast: bool = False,
    ) -> None:
        """`address`: one intake address, or several (tried in order, the last to answer
        first). `key`: the client's CURVE key pair and the intakes' public keys (None: no
        CURVE, which a real intake refuses). A request waits up to `timeout` seconds for each
        address, and goes round them all up to `retries + 1` times: it gives up after at most
        ``timeout × len(addresses) × (retries + 1)`` seconds. `fail_fast`: before the first
        request, raise `IntakeUnavailable` at once if nothing listens at any address."""
        self.addresses = [address] if isinstance(address, str) else list(address)
        if not self.addresses:
            raise ValueError("an intake client needs at least one address")
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self._context = zmq.Context()
        self._ids = itertools.count(1)
        self._session = uuid.uuid4().hex
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._preferred = 0
        """Index of the address that answered last: the next request goes there first."""
        self._connected = 0
        """Index of the address `_socket` is connected to."""
        self._unprobed = fail_fast
        """True until the addresses were probed (only a `fail_fast` client probes them)."""

    @property
    def address(self) -> str:
        """The address the next request goes to first (the one that answered last)."""
        return self.addresses[self._preferred]

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

    def _fresh_socket(self, index: int) -> zmq.Socket:
        """A new socket connected to address `index` (the previous one is closed, and with it
        any late answer it would still receive)."""
        self._close_socket()
        address = self.addresses[index]
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if self.key is not None:
            self._socket.curve_publickey = self.key.public
            self._socket.curve_secretkey = self.key.secret
            self._socket.curve_serverkey = self.key.server_at(address)
        events = HANDSHAKE_FAILED | (CONNECT_REFUSED if len(self.addresses) > 1 else 0)
        self._monitor = self._socket.get_monitor_socket(events)
        self._socket.connect(address)
        self._connected = index
        return self._socket

    def _events(self) -> tuple[str | None, bool]:
        """What the monitor has seen since last asked: why the intake refused the handshake
        (None if it did not), and whether a connection attempt was refused."""
        assert self._monitor is not None  # noqa: S101  made with the socket
        address = self.addresses[self._connected]
        refused = False
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            if event["event"] & CONNECT_REFUSED:
                refused = True
            elif event["event"] & HANDSHAKE_FAILED:
                if self.key is None:
                    return f"the intake at {address} refused a client without a CURVE key (pass --key)", refused
                return (
                    f"the intake at {address} refused this client's key: it is not among the topology's "
                    "clients and operators, or --server-key is not the intake node's key"
                ), refused
        return None, refused

    @classmethod
    def for_topology(
        cls,
        topology: Topology,
        key_file: Path | None = None,
        server_key_files: Sequence[Path] = (),
        *,
        wait_for_keys: float = 0.0,
        timeout: float = 10.0,
        retries: int = 3,
        fail_fast: bool = False,
    ) -> IntakeClient:
        """A client of every intake of `topology`, with the key `client_key` finds (the local
        user's unless `key_file` is given); raises `KeyFileError` if there is none it can
        read, ValueError if the topology has no intake."""
        key = client_key(topology, key_file, server_key_files, wait=wait_for_keys)
        return cls(topology.intake_addresses, timeout=timeout, retries=retries, key=key, fail_fast=fail_fast)

    def _probe(self) -> None:
        """Raise `IntakeUnavailable` if nothing listens at any address; otherwise ask the
        first one that does (or may) first."""
        self._unprobed = False
        found = [listening(address) for address in self.addresses]
        if not any(state is not False for state in found):
            raise IntakeUnavailable(no_cluster(self.addresses))
        if found[self._preferred] is False:
            self._preferred = next(i for i, state in enumerate(found) if state is not False)

    def _call(self, make: Callable[[int], Request], kind: type[A]) -> A:
        """Send the request `make` builds (given a fresh id), to each address in turn while
        none answers; the answer, which must be a `kind` (an `Error` answer raises
        `IntakeError`, from whichever intake gave it).

        A submission sent again, to the same intake or another, is answered as its first try
        was: the request keeps its id and the client its session, so its jobs carry the same
        origin (``<client>:<session>:<id>``) and batch, and the journal every intake writes
        reports a job recorded by that origin as accepted, not as a duplicate."""
        request = make(next(self._ids))
        frame = encoder.encode(request)
        if len(frame) > MAX_REQUEST_BYTES:
            raise IntakeError(f"request of {len(frame)} bytes exceeds the intake's {MAX_REQUEST_BYTES}-byte limit")
        if self._unprobed:
            self._probe()
        count = len(self.addresses)
        for _ in range(self.retries + 1):
            start = self._preferred
            for step in range(count):
                index = (start + step) % count
                answer = self._ask(index, request.id, frame, may_skip=step < count - 1)
                if answer is None:
                    self._fresh_socket((index + 1) % count)
                    continue
                self._preferred = index
                if isinstance(answer, Error):
                    raise IntakeError(answer.reason)
                if not isinstance(answer, kind):
                    raise IntakeError(f"the intake answered {type(answer).__name__} where {kind.__name__} was due")
                return answer
        where = self.addresses[0] if count == 1 else ", ".join(self.addresses)
        tries = f"{self.retries + 1} tries" + (" each" if count > 1 else "")
        raise IntakeUnavailable(f"no answer from {where} after {tries}")

    def _ask(self, index: int, request_id: int, frame: bytes, *, may_skip: bool) -> Answer | None:
        """Send `frame` to address `index` and wait up to `timeout` for the answer to
        `request_id`; None if none came (or, with `may_skip`, as soon as the connection is
        refused). Raises `IntakeRefused` if the intake refuses the client's key."""
        if self._socket is not None and self._connected == index:
            socket = self._socket
            refusal, _stale = self._events()  # what happened while idle: a refusal of the past may be over
            if refusal is not None:
                self._close_socket()
                raise IntakeRefused(refusal)
        else:
            socket = self._fresh_socket(index)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        socket.send(frame)
        deadline = time.monotonic() + self.timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(int(remaining * 1000)))
            if self._monitor in ready:
                refusal, refused = self._events()
                if refusal is not None:
                    self._close_socket()
                    raise IntakeRefused(refusal)
                if refused and may_skip:
                    return None
            if socket not in ready:
                continue
            answer = answer_decoder.decode(socket.recv())
            if answer.id != request_id:
                continue  # a late answer to an earlier, retried request
            return answer
        return None

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

    def results_since(
        self, cursor: tuple[float, str] = (0.0, ""), rules: str | None = None, settle: float = 5.0, page: int = 1000
    ) -> Iterator[ResultInfo]:
        """Every result (of rule set `rules`, if given) in the order they were stored, after
        `cursor` — the ``(stored_at, key)`` of the last result already had — that was stored
        at least `settle` seconds ago: the results an export has not written yet."""

        def after(at: tuple[float, str]) -> Callable[[int], Request]:
            return lambda i: Results(i, at[1], page, at[0], settle, rules)

        while True:
            answer = self._call(after(cursor), ResultList)
            self.stale_notice = answer.notice if answer.stale else ""
            yield from answer.results
            if not answer.next or not answer.results:
                return
            cursor = (answer.results[-1].stored_at, answer.results[-1].key)

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

    def replay(
        self, keys: list[str] | None = None, states: list[EndedState] | None = None, *, strict: bool = False
    ) -> int:
        """Put jobs in `states` (None: dead and parked) back to pending (these keys, or all);
        with `strict`, a named key in another state is an `IntakeError` and nothing is
        replayed."""
        answer = self._call(lambda i: Replay(i, keys, states, strict), Replayed)
        return answer.count

    def reextract(self, rules: str, keys: list[str] | None = None, after: str = "", limit: int = 100) -> Reextracted:
        """Extract the stored results of rule set `rules` again from their captured pages
        (these keys, or one page of them after `after`); what happened to each. A retry of
        the request (no answer came) is answered as its first try was."""
        answer = self._call(lambda i: Reextract(i, rules, keys, after, limit, self._session), Reextracted)
        return answer

    def reextract_all(self, rules: str, keys: list[str] | None = None, limit: int = 100) -> Iterator[Reextracted]:
        """`reextract` page after page: every stored result of `rules` (or `keys`, in requests
        of at most `MAX_BATCH`; the keys an answer leaves out — its time ran out — are asked
        again)."""
        if keys is not None:
            remaining = list(dict.fromkeys(keys))
            while remaining:
                page = self.reextract(rules, remaining[:MAX_BATCH])
                yield page
                remaining = remaining[max(1, len(page.keys)) :]
            return
        after = ""
        while True:
            page = self.reextract(rules, after=after, limit=limit)
            yield page
            if not page.next:
                return
            after = page.next
