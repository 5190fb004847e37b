"""Typed messages of the ingestion pipeline: jobs, attempts and outcomes."""

from __future__ import annotations

from typing import Any, Literal

from flotilla.actors.core.messages import Message

# --- the ingestion pipeline ------------------------------------------------------------

FailureKind = Literal["TRANSIENT", "BLOCKED", "DRIFT", "HARD"]


class Failure(Message, frozen=True, tag=True):
    """An expected failure of the outside world — not a crash. `kind` decides the policy:
    TRANSIENT (timeouts, resets, 5xx) retries with backoff; BLOCKED (403, 429, challenge
    pages) retries after `retry_after`; DRIFT (a 200 page without the required fields) parks
    the job; HARD (404, 410, 401, too large, too many redirects) goes to the dead letters."""

    kind: FailureKind
    detail: str
    status: int = 0
    retry_after: float | None = None
    evidence: str = ""
    """What was seen (headers and the start of the body), kept in the attempt history."""


class Wake(Message, frozen=True, tag=True):
    """New jobs were submitted: a router looks for work now (an intake tells its router, which
    may run on another node)."""


class Returned(Message, frozen=True, tag=True):
    """Attempt `token` of job `key` never reached an actor that could take it (`reason`:
    nothing lives at the path it was sent to, or that node is down): the job is due again,
    and the attempt is not counted. Sent to the job's `reply_to` by the node where it was
    dead-lettered (see `FetchJob.returned`)."""

    key: str
    token: int
    reason: str


class FetchJob(Message, frozen=True, tag=True):
    """Fetch `url` for attempt `token` of job `key`, extract with `rules`, report to `reply_to`.
    `tries` counts this job's attempts since submission or replay, this one included: 1
    means it has not failed at its target yet (half-open breakers prefer such jobs as trials)."""

    key: str
    url: str
    rules: str
    token: int
    reply_to: str
    tries: int = 1

    def returned(self, reason: str) -> Returned:
        """What the sender is told when this job is dead-lettered."""
        return Returned(self.key, self.token, reason)


class Deferred(Message, frozen=True, tag=True):
    """Attempt `token` of job `key` was not made: its target may not be asked now (a breaker
    is open, the fleet holds, no rate-limit slot came in time, no proxy is usable). The job
    waits `delay` seconds, durably, and the attempt is not counted."""

    key: str
    token: int
    delay: float
    reason: str
    budget: bool = True
    """The wait spends the job's wait budget (False for a wait in line for a rate-limit
    slot: the target is being served, the job's turn comes)."""


class ExtractJob(Message, frozen=True, tag=True):
    """Apply `rules` to the page fetched for attempt `token` of job `key`."""

    key: str
    url: str
    rules: str
    token: int
    status: int
    body: bytes
    content_hash: str
    reply_to: str
    proxy: str = ""
    """The proxy the page came through ("" for a direct connection)."""
    probe: bool = False
    """The fetch was one of the fleet's recovery probes during Hold."""
    trial: bool = False
    """The fetch was a trial call of the target's half-open breaker."""
    headers: dict[str, str] = {}
    """The response's headers that can mark a challenge page (`flotilla.actors.pipeline.rules.CHALLENGE_HEADERS`)."""
    final_url: str = ""
    """The URL the page came from, after redirects ("": `url`); relative URLs in fields are
    joined to it."""

    def returned(self, reason: str) -> Returned:
        """What the sender is told when this job is dead-lettered."""
        return Returned(self.key, self.token, reason)


class Fetched(Message, frozen=True, tag=True):
    """The page of attempt `token` of job `key` was fetched; extraction starts. Sent by nodes
    of earlier versions only (a router ignores it: the `JobOutcome` follows); still decoded."""

    key: str
    token: int


class JobOutcome(Message, frozen=True, tag=True):
    """How attempt `token` of job `key` ended: `fields` (with the page's `content_hash`), or
    a `failure`. `captured`: the page was captured (kept under its `content_hash`, which a
    failure then carries too) before this report was sent; `page_url` then says where it came
    from, after redirects (relative URLs in its fields were joined to it)."""

    key: str
    token: int
    fields: dict[str, Any] | None = None
    content_hash: str = ""
    failure: Failure | None = None
    elapsed: float = 0.0
    captured: bool = False
    page_url: str = ""


WIRE_MESSAGES: tuple[type[Message], ...] = (
    Wake,
    Failure,
    Returned,
    FetchJob,
    Deferred,
    ExtractJob,
    Fetched,
    JobOutcome,
)
"""The message types of the ingestion pipeline that may cross between nodes: part of the wire
codec's table (`flotilla.nodes.cluster.codec`)."""
