"""The router: dispatches due jobs to the fetcher pools and applies the failure policy.

It leases due jobs from the journal, at most `max_in_flight` at a time (backpressure: a job
is only leased when there is room for it), and tells each to the fetcher pool as a
`FetchJob` naming the router as `reply_to`. One report comes back per attempt, a `JobOutcome`
(from the fetcher for a failed fetch, from the extractor for a fetched page), or a `Deferred`
or `Returned`; reports are written to the journal in batches (one transaction per burst of
messages). A job's one lease covers its fetch and its extraction (`visibility`). A `Fetched`
from a node of an earlier version changes nothing (no `extracting` state is written):

* fields — stored, exactly once (the journal's conditional put);
* TRANSIENT — retried after ``min(cap, base * 2**(attempt-1))`` seconds, stretched by up to
  `jitter`, until `max_attempts`; then dead;
* BLOCKED — retried after the Retry-After it came with (or `blocked_delay`), until
  `max_attempts`; then dead;
* DRIFT — parked, with an alert in the log, until an operator replays it;
* HARD — dead at once, with the evidence;
* Deferred — the target may not be asked now (breaker open, Hold, no slot or proxy): the job
  waits the delay given, and the attempt does not count.

Before dispatching, the router reads its node's resilience view: jobs for a target whose
breaker is open wait without being sent, and in Hold at most `HOLD_IN_FLIGHT` jobs are out
at a time (the fetchers turn all but the fleet's probes back).

The router opens the journal its node names (`JournalTarget.of(system)`: SQLite in the data
directory unless the topology says otherwise). While a PostgreSQL journal cannot be reached
it retries with backoff, logging where it tries, instead of crashing; there it also listens
for submissions made through other nodes' intakes (NOTIFY) and wakes itself.

A job whose attempt was lost (its lease ran out: the fetcher crashed, or its node died)
`poison_limit` times is dead as poison. Reports quoting an old lease token change nothing, so
the router can be restarted at any time: leases of its previous incarnation either report
(and count) or expire (and are retried).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.backoff import backoff_delay
from flotilla.actors.core.messages import NodeDown
from flotilla.actors.core.observers import Observation
from flotilla.actors.pipeline.journal import Fenced, Journal, JournalUnavailable, Pruned, open_journal
from flotilla.actors.pipeline.journal_target import JOURNAL_FILE, JournalTarget  # noqa: F401 - JOURNAL_FILE was here
from flotilla.actors.pipeline.leases import OwnerLease
from flotilla.actors.pipeline.messages import (
    Deferred,
    Failure,
    Fetched,
    FetchJob,
    JobOutcome,
    Returned,
    Wake,
)
from flotilla.actors.pipeline.observations import (
    OUTCOMES,
    AttemptFailed,
    AttemptTimed,
    JobTimed,
    JournalPruned,
    RouterCounted,
    RouterStarted,
)
from flotilla.actors.pipeline.pruning import Pruner, Retention
from flotilla.actors.pipeline.rules import DEFAULT_WAIT_BUDGET, ExtractionRules
from flotilla.actors.resilience.view import ResilienceView, target_of


@dataclass(frozen=True)
class Policy:
    """How failures are handled (see the module docstring)."""

    max_attempts: int = 5
    transient_base: float = 1.0
    transient_cap: float = 60.0
    jitter: float = 0.2
    blocked_delay: float = 30.0
    poison_limit: int = 3
    visibility: float = 60.0
    wait_budget: float = DEFAULT_WAIT_BUDGET

    def transient_delay(self, attempt: int, rng: random.Random) -> float:
        return backoff_delay(self.transient_base, self.transient_cap, attempt - 1, jitter=self.jitter, rng=rng)


class _Pump:
    """Time to lease and dispatch (a timer's message)."""


class _Maintain:
    """Time to expire leases and bury poison (a timer's message)."""


class _OpenJournal:
    """Time to try opening the journal again (a timer's message)."""


class _NodeLeft:
    """A node went down (from the cluster's membership, in its I/O thread)."""

    def __init__(self, node: str) -> None:
        self.node = node


OPEN_RETRY_CAP = 30.0
"""Longest wait between attempts to open a journal that cannot be reached (seconds)."""
MAX_DELAY = 3600.0
"""No retry is scheduled further ahead than this."""
BATCH_OPS = 500
"""Most journal writes in one transaction."""
MAINTAIN_EVERY = 1.0
"""Seconds between lease-expiry passes."""
HOLD_IN_FLIGHT = 8
"""Most jobs out at a time while the fleet is in Hold (enough for its probes)."""
RETURN_PAUSE = 0.1
"""After a job came back because nothing could take it (the fetchers' pool is starting, or
their node is not up yet), dispatching pauses this long, doubling while jobs keep coming back
(up to `RETURN_PAUSE_CAP`), and only one job at a time goes out until one is taken."""
RETURN_PAUSE_CAP = 5.0
"""The longest pause after returned jobs (a pool scaled to nothing costs one job per pause)."""


class RouterSnapshot(msgspec.Struct, frozen=True):
    """A router's `inspect()`: attempts out now, its counts since it started, failures by
    kind and the journal's jobs by state."""

    in_flight: int
    dispatched: int
    stored: int
    retried: int
    dead: int
    parked: int
    stale: int
    deferred: int
    returned: int
    waited_out: int
    failures: dict[str, int]
    jobs: dict[str, int]


class Router(Actor):
    """Moves jobs from the journal to the fetchers and their outcomes back."""

    PATH_ARGS: ClassVar[dict[str, str]] = {"fetchers": "fetcher", "alerts": "alerts"}

    def __init__(
        self,
        fetchers: str,
        max_in_flight: int = 256,
        alerts: str | None = None,
        max_attempts: int = 5,
        transient_base: float = 1.0,
        transient_cap: float = 60.0,
        jitter: float = 0.2,
        blocked_delay: float = 30.0,
        poison_limit: int = 3,
        visibility: float = 60.0,
        wait_budget: float = DEFAULT_WAIT_BUDGET,
    ) -> None:
        super().__init__()
        if max_in_flight < 1 or max_attempts < 1 or poison_limit < 1:
            raise ValueError("max_in_flight, max_attempts and poison_limit must be >= 1")
        if min(transient_base, transient_cap, visibility, wait_budget) <= 0 or blocked_delay < 0 or jitter < 0:
            raise ValueError(
                "transient_base, transient_cap, visibility and wait_budget must be > 0; blocked_delay and jitter >= 0"
            )
        self.fetchers_path = fetchers
        self.alerts_path = alerts
        self.max_in_flight = max_in_flight
        self.policy = Policy(
            max_attempts, transient_base, transient_cap, jitter, blocked_delay, poison_limit, visibility, wait_budget
        )
        self.rng = random.Random()
        self.in_flight: dict[str, int] = {}
        self.sent: dict[str, tuple[str, str]] = {}  # key -> (node its attempt went to, its rule set)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.failures: Counter[str] = Counter()
        self.leased_at: dict[str, tuple[float, float]] = {}  # key -> (monotonic lease time, submitted at)
        self.paused_until = 0.0
        self.returned_in_a_row = 0
        """Pauses in a row that ended with a job coming back; 0 once a fetcher took one."""
        self._ops = 0
        self._batch: Any = None
        self._pump_timer: Any = None
        self._unwatch: Any = None
        self._unlisten: Any = None
        self._pruner: Pruner | None = None
        self.journal: Journal
        self.journal_open = False
        """False until the journal is opened (it may be unreachable for a while)."""
        self._open_failures = 0
        self.fenced: Fenced | None = None
        """Why this router stopped writing: the tree's lease has a newer owner."""

    # --- life cycle -------------------------------------------------------------------

    def on_start(self) -> None:
        lease = OwnerLease.of(self.system)
        # The lease this router's tree was started under (its writes quote it), read now: the
        # journal may open much later, when this node may know of a newer owner.
        self.fence = (lease.name, lease.token) if lease is not None and lease.token else None
        self.journal_target = JournalTarget.of(self.system)
        self.fetchers = self.system.ref(self.fetchers_path)
        remote = self.system.remote
        me = self.actor_ref
        if remote is not None:
            self._unwatch = remote.watch_membership(
                lambda event: me.tell(_NodeLeft(event.node)) if isinstance(event, NodeDown) else None
            )
        if self.journal_target.backend == "sqlite":
            self._open_journal()
        else:
            me.tell(_OpenJournal())  # a database on the network may take longer than a start may

    def _open_journal(self) -> None:
        """Open the journal and start work; if its database cannot be reached, try again
        later (backoff up to `OPEN_RETRY_CAP`)."""
        try:
            self.journal = open_journal(self.journal_target, durable=False)
        except JournalUnavailable as exc:
            delay = backoff_delay(0.5, OPEN_RETRY_CAP, self._open_failures, jitter=0.2, rng=self.rng)
            self._open_failures += 1
            self.log.warning(
                "router.journal_unreachable", where=self.journal_target.where, error=str(exc), retry_in=round(delay, 2)
            )
            self.send_after(delay, _OpenJournal())
            return
        if self.fence is not None:
            self.journal.fence(*self.fence)  # a stale owner's router writes nothing
        self.journal_open = True
        if self._open_failures:
            self.log.info("router.journal_reached", where=self.journal_target.where, after=self._open_failures)
        self._publish(RouterStarted(self.path, self.incarnation, self.journal))
        woken = self.journal.wake_waiting()  # what they waited for may be gone with the old run
        if woken:
            self.log.info("router.waiting_jobs_due", count=woken)
        me = self.actor_ref
        self._unlisten = self.journal.listen(lambda: me.tell(Wake()))  # jobs submitted on other nodes
        self._start_pruner()
        self.send_after(0, _Maintain())
        self.send_after(0, _Pump())

    def _start_pruner(self) -> None:
        """Prune the journal by the topology's retention, on a thread and a connection of its
        own (quoting the same lease as this router's writes)."""

        def open_own() -> Journal:
            journal = open_journal(self.journal_target, durable=False)
            if self.fence is not None:
                journal.fence(*self.fence)
            return journal

        def pruned(what: Pruned, seconds: float) -> None:
            self.log.info("journal.pruned", jobs=what.jobs, results=what.results, seconds=round(seconds, 3))
            self._publish(JournalPruned(self.path, what.jobs, what.results))

        def failed(exc: BaseException) -> None:
            self.log.warning("journal.prune_failed", error=f"{type(exc).__name__}: {exc}")

        self._pruner = Pruner(
            open_own, Retention.of(self.system), on_pruned=pruned, on_error=failed, name=f"pruner {self.path}"
        )
        self._pruner.start()

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, *_exc_info: Any) -> None:
        if self._batch is not None:
            self._batch.__exit__(RuntimeError, RuntimeError("router crashed"), None)
            self._batch = None
        self._close()

    def _close(self) -> None:
        if self.journal_open:
            self._commit()  # first: on SQLite the pruner may be waiting for this batch's lock
        self._stop_pruner()
        if self._unwatch is not None:
            self._unwatch()
        if self._unlisten is not None:
            self._unlisten()
        if self.journal_open:
            self.journal.close()

    def _stop_pruner(self) -> None:
        if self._pruner is not None:
            pruner, self._pruner = self._pruner, None
            pruner.stop()

    # --- messages ---------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if self.fenced is not None:
            return None  # a newer owner's router does this work now
        try:
            return self._receive(message)
        except Fenced as exc:
            self._stand_down(exc)
            return None

    def _stand_down(self, exc: Fenced) -> None:
        """A newer owner holds the tree's lease: undo the writes of the open transaction and
        stop acting (no lease, no report is written any more); this tree is being stopped."""
        self.fenced = exc
        if self._batch is not None:
            batch, self._batch = self._batch, None
            batch.__exit__(Fenced, exc, None)
        self._ops = 0
        self._stop_pruner()  # its writes would be refused too
        self.log.warning("router.fenced", error=str(exc), in_flight=len(self.in_flight))

    def _receive(self, message: Any) -> Any:
        if isinstance(message, _OpenJournal):
            self._open_journal()
            return None
        if not self.journal_open and isinstance(message, (JobOutcome, Fetched, Deferred, Returned, Wake, _NodeLeft)):
            return None  # nothing was leased yet; an earlier incarnation's leases expire and are retried
        if isinstance(message, (JobOutcome, Fetched, Deferred)):
            self.returned_in_a_row = 0  # a fetcher took a job
        if isinstance(message, JobOutcome):
            self._outcome(message)
        elif isinstance(message, Fetched):
            pass  # from a node of an earlier version: its JobOutcome follows
        elif isinstance(message, Deferred):
            self._defer(message.key, message.token, message.delay, message.reason, budget=message.budget)
        elif isinstance(message, Returned):
            self._return(message.key, message.token, message.reason)
        elif isinstance(message, _NodeLeft):
            for key in [k for k, (node, _) in self.sent.items() if node == message.node]:
                self._return(key, self.in_flight[key], f"node {message.node} went down", pause=False)
        elif isinstance(message, (Wake, _Pump)):
            self._commit()
            self._pump()
            return None
        elif isinstance(message, _Maintain):
            self._commit()
            self._maintain()
            self.send_after(MAINTAIN_EVERY, _Maintain())
            return None
        else:
            self._commit()
            return super().on_receive(message)
        if self._ops >= BATCH_OPS or self.mailbox_depth == 0:
            self._commit()
            self._pump()
        return None

    def _write(self, operation: Any) -> Any:
        if self._batch is None:
            batch = self.journal.batch()
            batch.__enter__()  # may raise Fenced: then there is no transaction to end
            self._batch = batch
        self._ops += 1
        return operation()

    def _commit(self) -> None:
        if self._batch is not None:
            batch, self._batch = self._batch, None
            batch.__exit__(None, None, None)
        self._ops = 0

    # --- dispatching ------------------------------------------------------------------

    def _pump(self) -> None:
        room = self.max_in_flight - len(self.in_flight)
        if room > 0 and (not self.fetchers.is_alive() or time.monotonic() < self.paused_until):
            room = 0  # no live fetcher (or one was missing just now): leasing would only bounce
        elif self.returned_in_a_row:
            room = min(room, 1 - len(self.in_flight))  # one job at a time until a fetcher takes one
        view = ResilienceView.of(self.system)
        if view.hold_on and view.holding().on:
            room = min(room, HOLD_IN_FLIGHT - len(self.in_flight))
        due = self.journal.next_due()
        if room > 0 and due is not None and due <= time.time():  # no write transaction for nothing
            node = self.system.whereis(self.fetchers_path)
            for lease in self.journal.lease(room, self.policy.visibility):
                self.in_flight[lease.key] = lease.token
                self.sent[lease.key] = (node, lease.rules)
                self.leased_at[lease.key] = (time.monotonic(), lease.submitted_at)
                if view.breakers_on:  # no URL parsing per job when there are no breakers
                    target = target_of(lease.url)
                    open_for = view.open_for(target)
                    if open_for > 0:
                        spread = open_for * (1 + 0.2 * self.rng.random())  # not all back at once
                        self._defer(
                            lease.key, lease.token, spread, f"breaker open for {target}: {view.breaker_reason(target)}"
                        )
                        continue
                self._count("dispatched")
                self.fetchers.tell(FetchJob(lease.key, lease.url, lease.rules, lease.token, self.path, lease.tries))
            self._commit()
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        """Look again when the earliest waiting job is due, but at most a maintenance
        interval ahead (and keep a timer already due sooner)."""
        if len(self.in_flight) >= self.max_in_flight:
            return  # an outcome will make room and pump
        due = self.journal.next_due()
        if due is None:
            return
        at = time.monotonic() + min(MAINTAIN_EVERY, max(0.0, due - time.time(), self.paused_until - time.monotonic()))
        timer = self._pump_timer
        if timer is not None and not timer.cancelled and timer.due <= at and timer.due > time.monotonic():
            return
        if timer is not None:
            timer.cancel()
        self._pump_timer = self.send_after(at - time.monotonic(), _Pump())

    def _settled(self, key: str, token: int) -> bool:
        """Attempt `token` of `key` is no longer out: forget it (True if it was ours)."""
        if self.in_flight.get(key) != token:
            return False
        del self.in_flight[key]
        self.sent.pop(key, None)
        return True

    def _outcome(self, outcome: JobOutcome) -> None:
        submitted_at = 0.0
        if self._settled(outcome.key, outcome.token):
            submitted_at = self._attempt_ended(outcome.key)
        if outcome.failure is not None:
            self.failures[outcome.failure.kind] += 1
            self._publish(AttemptFailed(self.path, outcome.failure.kind))
        if outcome.failure is None:
            if self._write(
                lambda: self.journal.store(
                    outcome.key,
                    outcome.token,
                    outcome.fields or {},
                    outcome.content_hash,
                    captured=outcome.captured,
                    page_url=outcome.page_url,
                )
            ):
                self._count("stored")
                if submitted_at:
                    self._publish(JobTimed(self.path, max(0.0, time.time() - submitted_at)))
            else:
                self._count("stale")
            return
        self._apply_policy(
            outcome.key,
            outcome.token,
            outcome.failure,
            outcome.content_hash if outcome.captured else "",
            outcome.page_url if outcome.captured else "",
        )

    def _attempt_ended(self, key: str) -> float:
        """Count the attempt's latency (lease to outcome); return when the job was submitted."""
        leased = self.leased_at.pop(key, None)
        if leased is None:
            return 0.0
        self._publish(AttemptTimed(self.path, time.monotonic() - leased[0]))
        return leased[1]

    def _defer(self, key: str, token: int, delay: float, reason: str, *, budget: bool = True) -> None:
        rules = self.sent.get(key, ("", ""))[1]
        if self._settled(key, token):
            self.leased_at.pop(key, None)
        until = time.time() + min(MAX_DELAY, max(0.0, delay))
        seconds = self._wait_budget(rules) if budget else None
        result = self._write(lambda: self.journal.defer(key, token, until, reason, seconds))
        if result == "deferred":
            self._count("deferred")
        elif result == "dead":
            self._count("dead")
            self._count("waited_out")
            self.log.info("router.waited_out", job=key, budget=seconds, reason=reason)
        else:
            self._count("stale")

    def _wait_budget(self, rules: str) -> float:
        """The wait budget of jobs with rule set `rules` (the rule set's own, else the router's)."""
        rule_set = ExtractionRules.of(self.system).get(rules)
        own = rule_set.wait_budget if rule_set is not None else None
        return own if own is not None else self.policy.wait_budget

    def _return(self, key: str, token: int, reason: str, *, pause: bool = True) -> None:
        """A job that nothing could take comes back due soon, uncounted (and dispatching
        pauses a moment when it found no live fetcher)."""
        if self._settled(key, token):
            self.leased_at.pop(key, None)
        now = time.monotonic()
        if pause and now >= self.paused_until:  # the first job back since the last pause ended
            self.returned_in_a_row += 1
            self.paused_until = now + backoff_delay(RETURN_PAUSE, RETURN_PAUSE_CAP, self.returned_in_a_row - 1)
        if self._write(lambda: self.journal.returned(key, token, reason, RETURN_PAUSE if pause else 0.0)):
            self._count("returned")
        else:
            self._count("stale")

    def _apply_policy(self, key: str, token: int, failure: Failure, page_hash: str = "", page_url: str = "") -> None:
        attempt = self.journal.tries(key)  # attempts since submission or the last replay
        policy = self.policy
        detail = failure.detail
        if failure.kind == "HARD":
            decision: dict[str, Any] = {"dead": True}
        elif failure.kind == "DRIFT":
            decision = {"park": True}  # the breaker shard judges the target's drift and alerts once
            self.log.info("router.drift", job=key, detail=detail)
        elif attempt >= policy.max_attempts:
            decision = {"dead": True}
            detail = f"{detail} (gave up after {attempt} attempts)"
        elif failure.kind == "BLOCKED":
            delay = failure.retry_after if failure.retry_after is not None else policy.blocked_delay
            decision = {"retry_at": time.time() + min(MAX_DELAY, delay)}
        else:
            decision = {"retry_at": time.time() + policy.transient_delay(attempt, self.rng)}
        changed = self._write(
            lambda: self.journal.fail(
                key,
                token,
                failure.kind,
                detail,
                evidence=failure.evidence,
                page_hash=page_hash,
                page_url=page_url,
                **decision,
            )
        )
        if not changed:
            self._count("stale")
        elif "retry_at" in decision:
            self._count("retried")
        elif decision.get("dead"):
            self._count("dead")
        else:
            self._count("parked")

    def _maintain(self) -> None:
        expired = self.journal.expire_leases()
        for key in expired:
            self.in_flight.pop(key, None)
            self.sent.pop(key, None)
            self.leased_at.pop(key, None)
            if self.journal.lost_count(key) >= self.policy.poison_limit:
                if self.journal.bury(key, f"poison: its attempt was lost {self.policy.poison_limit} times"):
                    self._count("dead")
                    self.log.warning("router.poison", job=key)
        if expired:
            self.log.info("router.leases_expired", count=len(expired))
        self._pump()

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self._publish(RouterCounted(self.path, outcome))

    def _publish(self, event: Observation) -> None:
        observers = self.system.observers
        if observers.active:
            observers.publish(event)

    def inspect(self) -> RouterSnapshot:
        return RouterSnapshot(
            in_flight=len(self.in_flight),
            **self.counts,
            failures=dict(self.failures),
            jobs=self.journal.counts() if self.journal_open else {},
        )
