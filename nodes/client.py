"""A small Python client for a node's intake socket.

    client = IntakeClient("tcp://127.0.0.1:7201")
    acks = client.submit([JobSpec("http://example.com/p/1", "product")])
    client.counts(); client.results(); client.jobs(state="dead"); client.replay()
    client.job(acks[0].key); client.batch(client.last_batch); client.cancel(batch=client.last_batch)

A request that gets no answer within `timeout` is sent again on a fresh socket (the zguide's
Lazy Pirate), up to `retries` times; that is safe because submissions are idempotent by key.
After that, `IntakeUnavailable` is raised.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import zmq

from nodes.intake_protocol import (
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


class IntakeUnavailable(Exception):
    """The intake did not answer."""


class IntakeError(Exception):
    """The intake refused a request."""


class IntakeClient:
    """Requests to one intake socket, one at a time."""

    def __init__(self, address: str, timeout: float = 10.0, retries: int = 3) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self._context = zmq.Context()
        self._ids = itertools.count(1)
        self._session = uuid.uuid4().hex
        self._socket: zmq.Socket | None = None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
        self._context.term()

    def __enter__(self) -> IntakeClient:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def _fresh_socket(self) -> zmq.Socket:
        if self._socket is not None:
            self._socket.close(0)
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self.address)
        return self._socket

    def _call(self, make: Any) -> Answer:
        request: Request = make(next(self._ids))
        frame = encoder.encode(request)
        if len(frame) > MAX_REQUEST_BYTES:
            raise IntakeError(f"request of {len(frame)} bytes exceeds the intake's {MAX_REQUEST_BYTES}-byte limit")
        for _ in range(self.retries + 1):
            socket = self._socket or self._fresh_socket()
            socket.send(frame)
            while socket.poll(int(self.timeout * 1000)):
                answer = answer_decoder.decode(socket.recv())
                if answer.id != request.id:
                    continue  # a late answer to an earlier, retried request
                if isinstance(answer, Error):
                    raise IntakeError(answer.reason)
                return answer
            self._fresh_socket()
        raise IntakeUnavailable(f"no answer from {self.address} after {self.retries + 1} tries")

    last_batch = ""
    """Set by `submit`: the batch id its jobs were recorded in (the intake's when none was given)."""

    def submit(self, jobs: list[JobSpec], batch: str = "") -> list[Ack]:
        """Submit up to `MAX_BATCH` jobs as part of `batch` (empty: the intake makes an id,
        kept in `last_batch`); one `Ack` per job, in order."""
        answer = self._call(lambda i: Submit(i, jobs, self._session, batch))
        assert isinstance(answer, Submitted)
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
        answer = self._call(lambda i: Status(i, keys))
        assert isinstance(answer, JobList)
        return answer.jobs

    def jobs(self, state: str | None = None, after: str = "", limit: int = 100) -> tuple[list[JobInfo], str]:
        """One page of jobs and the key to continue after ('' at the end)."""
        answer = self._call(lambda i: Jobs(i, state, after, limit))
        assert isinstance(answer, JobList)
        return answer.jobs, answer.next

    def all_jobs(self, state: str | None = None) -> Iterator[JobInfo]:
        after = ""
        while True:
            page, after = self.jobs(state, after, 1000)
            yield from page
            if not after:
                return

    def results(self, after: str = "", limit: int = 100) -> tuple[list[ResultInfo], str]:
        answer = self._call(lambda i: Results(i, after, limit))
        assert isinstance(answer, ResultList)
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
        answer = self._call(lambda i: Counts(i))
        assert isinstance(answer, CountList)
        return answer

    stale_notice = ""
    """Set by `results`: why the results may be out of date (the fleet is in Hold), or ""."""

    def hold(self, mode: str | None = None) -> HoldInfo:
        """Force the fleet's Hold on or off, or back to auto; None only asks."""
        answer = self._call(lambda i: Hold(i, mode))  # type: ignore[arg-type]
        assert isinstance(answer, HoldInfo)
        return answer

    def job(self, key: str) -> JobStory:
        """One job's story: its state, every event oldest first, and its result if stored."""
        answer = self._call(lambda i: History(i, key))
        assert isinstance(answer, JobStory)
        return answer

    def batch(self, batch: str) -> BatchInfo:
        """How far the batch has come (its jobs by state; `done` once every one is finished)."""
        answer = self._call(lambda i: BatchStatus(i, batch))
        assert isinstance(answer, BatchInfo)
        return answer

    def cancel(self, keys: list[str] | None = None, batch: str | None = None) -> int:
        """End these jobs, or every job of `batch`, that are not finished (dead, "cancelled by
        an operator"); how many were."""
        answer = self._call(lambda i: Cancel(i, keys, batch))
        assert isinstance(answer, Cancelled)
        return answer.count

    def reset_breaker(self, target: str) -> BreakerInfo:
        """Close the breaker of `target` (``host:port`` or a URL on it)."""
        answer = self._call(lambda i: BreakerReset(i, target))
        assert isinstance(answer, BreakerInfo)
        return answer

    def replay(self, keys: list[str] | None = None) -> int:
        """Put dead and parked jobs back to pending (these keys, or all)."""
        answer = self._call(lambda i: Replay(i, keys))
        assert isinstance(answer, Replayed)
        return answer.count
