"""What the pipeline's actors publish through the node's observers (actors/core/observers.py):
a router's counts, failures and latencies, and a fetcher's load. Kept apart from the actors so
that an observer (the node's metrics) can import them without the actors' own dependencies."""

from __future__ import annotations

from flotilla.actors.core.observers import Observation
from flotilla.actors.pipeline.journal import Journal

OUTCOMES = ("dispatched", "stored", "retried", "dead", "parked", "stale", "deferred", "returned", "waited_out")
"""What the router counts about attempts (its `inspect()` and the `RouterCounted` events)."""


class RouterStarted(Observation, frozen=True):
    """A router incarnation started; `journal` is the journal it writes (thread-safe, so an
    observer may read jobs by state from it while the router runs)."""

    router: str
    incarnation: int
    journal: Journal


class RouterCounted(Observation, frozen=True):
    """The router counted one `outcome` (one of `OUTCOMES`)."""

    router: str
    outcome: str


class AttemptFailed(Observation, frozen=True):
    """An attempt reported a failure of `kind` (TRANSIENT, BLOCKED, DRIFT, HARD...)."""

    router: str
    kind: str


class AttemptTimed(Observation, frozen=True):
    """An attempt ended `seconds` after its job was leased."""

    router: str
    seconds: float


class JobTimed(Observation, frozen=True):
    """A job was stored `seconds` after it was submitted."""

    router: str
    seconds: float


class JournalPruned(Observation, frozen=True):
    """A router's pruner deleted `jobs` ended jobs and `results` results (retention)."""

    router: str
    jobs: int
    results: int


class FetcherLoad(Observation, frozen=True):
    """A fetcher's requests in flight now and jobs handed back unfetched so far (published
    by an incarnation when it starts and whenever either changes)."""

    fetcher: str
    incarnation: int
    in_flight: int
    deferred: int
