"""The intake protocol: what clients send to a node's intake socket, and its answers.

One request or answer per ZeroMQ message, MessagePack-encoded msgspec structs tagged with
their class name (see docs/intake.md). Every request carries a client-chosen `id` that its
answer repeats. Every length is bounded; anything else is answered with `Error`.
"""

from __future__ import annotations

import typing

import msgspec

MAX_BATCH = 1000
"""Most jobs in one `Submit`."""
MAX_URL_CHARS = 2048
MAX_KEY_CHARS = 128
"""Longest key a client may choose for a job."""
MAX_NAME_CHARS = 64
"""Longest name of a client or operator (the names of their keys in the topology)."""
MAX_STORED_KEY_CHARS = MAX_NAME_CHARS + 1 + MAX_KEY_CHARS
"""Longest key as stored and answered: ``<client>:<key>`` (every job's key is its client's)."""
MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Largest request accepted (the socket's MAXMSGSIZE: a larger one ends the client's
connection); a full batch of the longest URLs, rules and keys (about 2.5 MB) fits."""
QUEUED_REQUESTS = 16
"""Requests ZeroMQ queues per client connection while the intake is busy (RCVHWM): with
`MAX_REQUEST_BYTES` that bounds what one connection can make the node hold to 64 MiB."""
MAX_PAGE = 1000
"""Most rows in one page of a query."""
MAX_STORY_EVENTS = 1000
"""Most events of one job's story in a `JobStory`: the first (its submission) and the latest
ones; `omitted` says how many in between were left out."""

Url = typing.Annotated[str, msgspec.Meta(max_length=MAX_URL_CHARS)]
Key = typing.Annotated[str, msgspec.Meta(max_length=MAX_KEY_CHARS)]
StoredKey = typing.Annotated[str, msgspec.Meta(max_length=MAX_STORED_KEY_CHARS)]
Short = typing.Annotated[str, msgspec.Meta(max_length=256)]


class Request(msgspec.Struct, frozen=True, tag=True, tag_field="_type"):
    """Base of client requests."""

    id: int


class JobSpec(msgspec.Struct, frozen=True):
    """One job: the URL, the rule set to extract with, and optionally the client's own key
    (otherwise the key is a hash of the canonical URL and the rules). The job's key as
    stored is ``<client>:<key>``: a client cannot take another client's key."""

    url: Url
    rules: Short
    key: Key | None = None


class Submit(Request, frozen=True, tag=True):
    """Record these jobs; each is acknowledged once it is on disk. A client that sends the
    same `session` and `id` again (it did not get the answer) gets the first answer again."""

    jobs: typing.Annotated[list[JobSpec], msgspec.Meta(max_length=MAX_BATCH)]
    session: Short = ""
    batch: Short = ""
    """The batch these jobs belong to (one id for every `Submit` of one run of a client);
    empty: the intake assigns one and returns it in `Submitted.batch`."""


class Status(Request, frozen=True, tag=True):
    """The state of these jobs."""

    keys: typing.Annotated[list[StoredKey], msgspec.Meta(max_length=MAX_BATCH)]


class Results(Request, frozen=True, tag=True):
    """Stored results, by key, after `after`. With `stored_after` (an export's cursor): in the
    order they were stored — by ``(stored_at, key)`` — after ``(stored_after, after)``, only
    those stored at least `settle` seconds ago by the intake's clock (a result whose
    transaction began earlier but committed later is then never passed over), and only those
    of rule set `rules` if given."""

    after: StoredKey = ""
    limit: int = 100
    stored_after: float | None = None
    settle: typing.Annotated[float, msgspec.Meta(ge=0)] = 5.0
    rules: Short | None = None


class Jobs(Request, frozen=True, tag=True):
    """Jobs, by key, after `after`, optionally in one state (`dead` is the dead-letter queue)."""

    state: Short | None = None
    after: StoredKey = ""
    limit: int = 100


class Counts(Request, frozen=True, tag=True):
    """How many jobs are in each state, and how many results are stored."""


EndedState = typing.Literal["dead", "parked"]


class Replay(Request, frozen=True, tag=True):
    """Put jobs in `states` (None: dead and parked) back to pending: these keys, or all of
    them if `keys` is None. With `strict`, a named key that is not in one of `states` (or
    does not exist) is answered with an `Error` naming each such key and its state, and no
    job is replayed."""

    keys: typing.Annotated[list[StoredKey], msgspec.Meta(max_length=MAX_BATCH)] | None = None
    states: typing.Annotated[list[EndedState], msgspec.Meta(max_length=2)] | None = None
    strict: bool = False


HoldMode = typing.Literal["on", "off", "auto"]


class Hold(Request, frozen=True, tag=True):
    """Force the fleet's Hold `on` or `off`, or give it back to the fleet's health (`auto`);
    without `mode`, only ask how it stands."""

    mode: HoldMode | None = None


class History(Request, frozen=True, tag=True):
    """One job's story: every event from its submission on, and its result."""

    key: Key


class BatchStatus(Request, frozen=True, tag=True):
    """How far a batch has come: its jobs by state, the reasons of the dead and parked ones."""

    batch: Short


class Cancel(Request, frozen=True, tag=True):
    """End these jobs (or every job of `batch`) that are not finished: dead, "cancelled by an
    operator" (replayable from the dead-letter queue). Give `keys` or `batch`, not both."""

    keys: typing.Annotated[list[Key], msgspec.Meta(max_length=MAX_BATCH)] | None = None
    batch: Short | None = None


class BreakerReset(Request, frozen=True, tag=True):
    """Close the breaker of `target` (``host:port``, or a URL on it) at once."""

    target: Url


class Reextract(Request, frozen=True, tag=True):
    """Extract the stored results of rule set `rules` again from their captured pages, with
    the intake node's rules (no page is fetched): these `keys`, or one page of every such
    result after key `after` (at most `limit`; `Reextracted.next` is the next page's
    `after`). One request stops taking results after a few seconds: a page may then be short
    (with a `next`), and with `keys` the answer covers only the first of them (ask again for
    the rest). A result whose fields change is updated once (its revision goes up); a request
    sent again with the same `session` and `id` gets the first answer again."""

    rules: Short
    keys: typing.Annotated[list[StoredKey], msgspec.Meta(max_length=MAX_BATCH)] | None = None
    after: StoredKey = ""
    limit: int = 100
    session: Short = ""


AnyRequest = (
    Submit
    | Status
    | Results
    | Jobs
    | Counts
    | Replay
    | Hold
    | History
    | BatchStatus
    | Cancel
    | BreakerReset
    | Reextract
)

Role = typing.Literal["client", "operator"]

REQUEST_ROLES: dict[type[Request], Role] = {
    Submit: "client",
    Status: "client",
    Jobs: "client",
    Results: "client",
    Counts: "client",
    History: "client",
    BatchStatus: "client",
    Replay: "operator",
    Hold: "operator",
    Cancel: "operator",
    BreakerReset: "operator",
    Reextract: "operator",
}
"""Who may send each request. A client's requests concern only its own jobs and results
(queries are filtered to them); an operator's concern the whole fleet. A request type not
listed here needs an operator key."""


def required_role(request: Request) -> Role:
    """The role `request` needs (operator for any request type not in `REQUEST_ROLES`)."""
    return REQUEST_ROLES.get(type(request), "operator")


class Answer(msgspec.Struct, frozen=True, tag=True, tag_field="_type"):
    """Base of the intake's answers."""

    id: int


class Ack(msgspec.Struct, frozen=True):
    """What happened to job `index` of a `Submit`."""

    index: int
    key: str
    status: typing.Literal["accepted", "duplicate", "rejected"]
    reason: str = ""


class Submitted(Answer, frozen=True, tag=True):
    acks: list[Ack]
    batch: str = ""
    """The batch the jobs were recorded in (the client's, or one the intake made)."""


class JobInfo(msgspec.Struct, frozen=True):
    key: str
    url: str
    rules: str
    state: str
    attempts: int
    reason: str | None = None


class JobList(Answer, frozen=True, tag=True):
    jobs: list[JobInfo]
    next: str = ""


class ResultInfo(msgspec.Struct, frozen=True):
    key: str
    url: str
    rules: str
    fields: dict[str, typing.Any]
    content_hash: str
    attempts: int
    stored_at: float
    revision: int = 0
    """How many times `flotilla reextract` changed its fields (0: as first stored)."""
    extracted_at: float = 0.0
    """When its fields were last extracted (its `stored_at` until a re-extraction changes them)."""


class ResultList(Answer, frozen=True, tag=True):
    """Results from the store. While the fleet is in Hold they are still served, `stale` is
    true and `notice` says why freshness is degraded."""

    results: list[ResultInfo]
    next: str = ""
    stale: bool = False
    notice: str = ""


class CountList(Answer, frozen=True, tag=True):
    states: dict[str, int]
    results: int


class Replayed(Answer, frozen=True, tag=True):
    count: int


class HoldInfo(Answer, frozen=True, tag=True):
    """How the fleet's Hold stands (`mode`: auto, on or off as forced by an operator)."""

    on: bool
    mode: str
    reason: str = ""
    since: float = 0.0
    success_rate: float | None = None


class JobEventInfo(msgspec.Struct, frozen=True):
    """One line of a job's story (`event`: submitted, leased, fetched, captured, stored,
    failed, retrying, deferred, returned, lost, dead, parked, replayed, cancelled,
    reextracted)."""

    at: float
    event: str
    attempt: int | None = None
    detail: str = ""


class JobStory(Answer, frozen=True, tag=True):
    """A job as it stands, its events oldest first, and its result once stored."""

    job: JobInfo
    events: list[JobEventInfo]
    omitted: int = 0
    """Events left out between the first and the latest `MAX_STORY_EVENTS - 1`."""
    result: ResultInfo | None = None


class BatchInfo(Answer, frozen=True, tag=True):
    """A batch's progress. `reasons` counts dead and parked jobs by reason (``"dead HARD: HTTP
    404"``); `done` once no job of it is pending, fetching, extracting or retrying."""

    batch: str
    total: int
    states: dict[str, int]
    reasons: dict[str, int]
    started_at: float
    last_change: float
    attempts: int
    done: bool


class Cancelled(Answer, frozen=True, tag=True):
    count: int


class BreakerInfo(Answer, frozen=True, tag=True):
    """A target's breaker after an operator's command, and how it stood before."""

    target: str
    state: str
    was: str
    reason: str = ""


ReextractOutcome = typing.Literal["changed", "unchanged", "no capture", "drifted", "failed", "no result"]


class KeyReextracted(msgspec.Struct, frozen=True):
    """What re-extraction did to one result: `changed` (its new `revision`), `unchanged`,
    `no capture` (its page is not kept), `drifted` (the rules find no longer every required
    field: the result is left as it was), `failed` (blocked or unparseable now; left as it
    was), `no result` (no result of that rule set has this key)."""

    key: str
    outcome: ReextractOutcome
    revision: int = 0
    detail: str = ""


class Reextracted(Answer, frozen=True, tag=True):
    """The outcome of each result of one `Reextract`, in key order (with keys: the first of
    the keys asked, in their order, each once — fewer than asked if its time ran out); `next`:
    the `after` of the next page ("" once every result was seen, and always when keys were
    given)."""

    keys: list[KeyReextracted]
    next: str = ""


class Error(Answer, frozen=True, tag=True):
    """The request could not be handled; `reason` says why."""

    reason: str


AnyAnswer = (
    Submitted
    | JobList
    | ResultList
    | CountList
    | Replayed
    | HoldInfo
    | JobStory
    | BatchInfo
    | Cancelled
    | BreakerInfo
    | Reextracted
    | Error
)

request_decoder = msgspec.msgpack.Decoder(AnyRequest)
answer_decoder = msgspec.msgpack.Decoder(AnyAnswer)
encoder = msgspec.msgpack.Encoder()
