"""A node's Prometheus metrics, served over HTTP on the address the topology gives the node
(`metrics:`, loopback unless the topology has security keys).

Nothing here reads an actor's attributes. Actors publish what happens to them — supervisors
their reports, routers and fetchers small events (`RouterCounted`, `AttemptTimed`,
`FetcherLoad`..., actors/pipeline/observations.py) through the node's `Observers`
(actors/core/observers.py) —
and the collector keeps those as counts and histograms; the rest is read from the node's own
thread-safe state when Prometheus scrapes. So: supervisor restarts and exits, dead letters,
mailbox depths, the transport's frames, bytes and rejected frames, input refused on every
socket (`flotilla.nodes.serving.refusals`), refused handshakes per socket, which nodes are up,
jobs by state and the router's outcomes, failures by kind and attempt latencies (on the node
of the router and intake), fetches deferred and in flight, and this node's view of breakers,
Hold and rate-limit waits. Names follow Prometheus conventions (`flotilla_` prefix, `_total`
counters, base units).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from flotilla.actors.core.messages import SupervisorReport, describe_reason
from flotilla.actors.core.observers import IncarnationEnded, Observation, Observers
from flotilla.actors.pipeline.journal import Journal
from flotilla.actors.pipeline.observations import (
    OUTCOMES,
    AttemptFailed,
    AttemptTimed,
    FetcherLoad,
    JobTimed,
    JournalPruned,
    RouterCounted,
    RouterStarted,
)
from flotilla.actors.resilience.view import ResilienceView
from flotilla.nodes.serving.refusals import refusals

if TYPE_CHECKING:
    from flotilla.nodes.runtime.node import NodeRun

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
ATTEMPT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the attempt-latency histogram (lease to outcome)."""
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Upper bounds (seconds) of the job-latency histogram (submission to stored)."""


class NodeMetrics:
    """The collector of one node's metrics, and its HTTP endpoint."""

    def __init__(self, run: NodeRun) -> None:
        self.run = run
        self.restarts: Counter[tuple[str, str]] = Counter()
        self.exits: Counter[tuple[str, str, str]] = Counter()
        self._restarts_seen: dict[tuple[str, str], int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        run.system.add_report_listener(self._count)
        self.pipeline = PipelineObserver(run.system.observers)
        self._server: Any = None

    def _count(self, report: SupervisorReport) -> None:
        if report.event == "child_started":  # a start after a failure: its supervisor's restart count grew
            key = (report.supervisor, report.child)
            if report.restarts > self._restarts_seen.get(key, 0):
                self.restarts[key] += report.restarts - self._restarts_seen.get(key, 0)
            self._restarts_seen[key] = report.restarts
        elif report.event == "child_exited" and report.reason is not None:
            kind = describe_reason(report.reason).split(":", 1)[0].split("(", 1)[0].strip()
            self.exits[(report.supervisor, report.child, kind)] += 1

    def serve(self, address: str) -> None:
        """Listen on ``HOST:PORT``; raises OSError if the port is taken."""
        host, _, port = address.rpartition(":")
        self._server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- the collector -------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._supervision()
        yield from self._transport()
        yield from self._refusals()
        yield from self._pipeline()
        yield from self._resilience()

    def _supervision(self) -> Iterator[Metric]:
        system = self.run.system
        yield _counters(
            "flotilla_restarts", "Children restarted, by supervisor and child.", ["supervisor", "child"], self.restarts
        )
        yield _counters(
            "flotilla_child_exits",
            "Children that ended, by supervisor, child and reason.",
            ["supervisor", "child", "reason"],
            self.exits,
        )
        yield CounterMetricFamily(
            "flotilla_dead_letters", "Messages that reached no actor.", value=system.registry.dead_letters.count
        )
        depth = GaugeMetricFamily(
            "flotilla_mailbox_depth", "Messages waiting in each actor's mailbox.", labels=["path"]
        )
        for path, waiting in system.registry.mailbox_depths().items():
            depth.add_metric([path], waiting)
        yield depth

    def _transport(self) -> Iterator[Metric]:
        cluster = self.run.cluster
        up = GaugeMetricFamily("flotilla_node_up", "1 if this node sees the node up, else 0.", labels=["node"])
        seen = set(cluster.up_nodes()) if cluster is not None else set()
        for node in self.run.topology.nodes:
            up.add_metric([node], 1 if node == self.run.node or node in seen else 0)
        yield up
        if cluster is None:
            return
        owner = GaugeMetricFamily(
            "flotilla_tree_owner",
            "1 for the node this node sees owning the tree (its root and singletons), else 0.",
            labels=["node"],
        )
        for node in self.run.topology.nodes:
            owner.add_metric([node], 1 if node == cluster.directory.owner else 0)
        yield owner
        yield GaugeMetricFamily(
            "flotilla_tree_lease_token",
            "The fencing token of the tree's lease this node knows (0: no failover, or none heard yet).",
            value=cluster.directory.owner_token,
        )
        stats = cluster.transport.stats
        for name, counts, what in (
            ("flotilla_transport_sent_frames", stats.sent_frames, "Frames sent, by peer."),
            ("flotilla_transport_sent_bytes", stats.sent_bytes, "Bytes sent, by peer."),
            ("flotilla_transport_received_frames", stats.received_frames, "Frames received, by peer."),
            ("flotilla_transport_received_bytes", stats.received_bytes, "Bytes received, by peer."),
            (
                "flotilla_transport_undeliverable",
                stats.undeliverable,
                "Envelopes that could not be delivered, by peer.",
            ),
        ):
            yield _counters(name, what, ["peer"], counts)
        yield _counters("flotilla_transport_rejected_frames", "Frames refused, by reason.", ["reason"], stats.rejected)
        yield _counters(
            "flotilla_auth_failures",
            "Handshakes refused (unknown keys, clients not speaking CURVE), by socket.",
            ["socket"],
            {f.socket: f.total for f in self.run.auth_failures},
        )

    def _refusals(self) -> Iterator[Metric]:
        yield _counters(
            "flotilla_refused_frames",
            "Frames and connections refused, by socket (intake, transport, "
            "shell) and reason (malformed, unknown_peer, unknown_key, over_limit...).",
            ["socket", "reason"],
            refusals.counts,
        )

    def _pipeline(self) -> Iterator[Metric]:
        routers, fetchers = self.pipeline.routers_and_fetchers()
        jobs = GaugeMetricFamily(
            "flotilla_jobs", "Jobs in the journal, by state (on the router's node).", labels=["state"]
        )
        for state, n in routers[0].journal.counts().items() if routers else ():
            jobs.add_metric([state], n)
        yield jobs
        outcomes = CounterMetricFamily(
            "flotilla_job_outcomes", "Attempt outcomes the router recorded.", labels=["router", "outcome"]
        )
        failures = CounterMetricFamily("flotilla_failures", "Failed attempts, by kind.", labels=["router", "kind"])
        latency = HistogramMetricFamily(
            "flotilla_attempt_seconds", "Attempt latency, lease to outcome.", labels=["router"]
        )
        job_latency = HistogramMetricFamily(
            "flotilla_job_seconds", "Job latency, submission to stored.", labels=["router"]
        )
        for router in routers:
            for outcome, n in router.outcomes.items():
                outcomes.add_metric([router.path, outcome], n)
            for kind, n in sorted(router.failures.items()):
                failures.add_metric([router.path, kind], n)
            latency.add_metric([router.path], router.attempts.buckets(), router.attempts.sum)
            job_latency.add_metric([router.path], router.jobs.buckets(), router.jobs.sum)
        pruned = CounterMetricFamily(
            "flotilla_journal_pruned",
            "Ended jobs and results deleted by retention (docs/journal.md), by router.",
            labels=["router", "what"],
        )
        for router in routers:
            for what in ("jobs", "results"):
                pruned.add_metric([router.path, what], router.pruned[what])
        yield outcomes
        yield failures
        yield latency
        yield job_latency
        yield pruned
        in_flight = GaugeMetricFamily(
            "flotilla_fetches_in_flight", "Requests in flight, by fetcher.", labels=["fetcher"]
        )
        deferred = CounterMetricFamily(
            "flotilla_fetches_deferred",
            "Jobs handed back unfetched (breaker, Hold, no slot or proxy), by fetcher.",
            labels=["fetcher"],
        )
        for fetcher in fetchers:
            in_flight.add_metric([fetcher.fetcher], fetcher.in_flight)
            deferred.add_metric([fetcher.fetcher], fetcher.deferred)
        yield in_flight
        yield deferred
        intake = self.run.intake
        if intake is not None:
            yield CounterMetricFamily(
                "flotilla_intake_auth_failures",
                "Handshakes the intake refused: CURVE keys not among its clients and operators.",
                value=intake.auth.rejected,
            )

    def _resilience(self) -> Iterator[Metric]:
        view = self.run.system.extensions.get(ResilienceView)
        hold = GaugeMetricFamily("flotilla_hold", "1 while the fleet is in Hold (as this node sees it).")
        hold.add_metric([], 1 if view.holding().on else 0)
        yield hold
        breakers = GaugeMetricFamily(
            "flotilla_breaker_state",
            "Targets whose breaker is not closed (1 half-open, 2 open), as this node sees them.",
            labels=["target"],
        )
        for target, state in view.breaker_states().items():
            breakers.add_metric([target], BREAKER_STATES.get(state, 2))
        yield breakers
        for name, counts, what in (
            ("flotilla_rate_limit_waits", view.slot_waits, "Fetches that waited for a rate-limit slot."),
            ("flotilla_rate_limit_wait_seconds", view.slot_wait_seconds, "Time fetches spent waiting for slots."),
            (
                "flotilla_rate_limit_timeouts",
                view.slot_timeouts,
                "Fetches whose slot did not come in time (their jobs went back to wait).",
            ),
        ):
            yield _counters(name, what, ["target"], counts)
        waiting = GaugeMetricFamily(
            "flotilla_rate_limit_waiting", "Fetches waiting for a rate-limit slot.", labels=["target"]
        )
        for target, n in view.slot_waiters().items():
            waiting.add_metric([target], n)
        yield waiting


class Histogram:
    """Observed seconds counted per bucket (Prometheus's `le` buckets: a value equal to a
    bound counts in that bound's bucket), and their sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def copy(self) -> Histogram:
        copied = Histogram(self.bounds)
        copied.counts, copied.sum = list(self.counts), self.sum
        return copied

    def buckets(self) -> list[tuple[str, int]]:
        """The counts as Prometheus's cumulative buckets, ending with +Inf."""
        total, buckets = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            buckets.append(("+Inf" if bound == float("inf") else str(bound), total))
        return buckets


@dataclass
class RouterTally:
    """What one router incarnation published: its outcomes, failures and latencies."""

    path: str
    incarnation: int
    journal: Journal
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failures: Counter[str] = field(default_factory=Counter)
    attempts: Histogram = field(default_factory=lambda: Histogram(ATTEMPT_BUCKETS))
    jobs: Histogram = field(default_factory=lambda: Histogram(JOB_BUCKETS))
    pruned: Counter[str] = field(default_factory=Counter)

    def copy(self) -> RouterTally:
        return RouterTally(
            self.path,
            self.incarnation,
            self.journal,
            dict(self.outcomes),
            Counter(self.failures),
            self.attempts.copy(),
            self.jobs.copy(),
            Counter(self.pruned),
        )


class PipelineObserver:
    """The routers' and fetchers' observations (actors/core/observers.py) on one node, kept
    as the numbers the metrics show: each live incarnation from its start event until it
    leaves its path, so a restarted router counts from zero again."""

    def __init__(self, observers: Observers) -> None:
        self._lock = threading.Lock()
        self._routers: dict[str, RouterTally] = {}
        self._fetchers: dict[str, FetcherLoad] = {}
        self._handlers: dict[type[Observation], Callable[[Any], None]] = {
            RouterStarted: self._started,
            RouterCounted: self._counted,
            AttemptFailed: self._failed,
            AttemptTimed: self._attempt_timed,
            JobTimed: self._job_timed,
            JournalPruned: self._pruned,
            FetcherLoad: self._load,
            IncarnationEnded: self._ended,
        }
        observers.attach(self.observe)

    def observe(self, event: Observation) -> None:
        handle = self._handlers.get(type(event))
        if handle is not None:
            handle(event)

    def _started(self, event: RouterStarted) -> None:
        with self._lock:
            self._routers[event.router] = RouterTally(event.router, event.incarnation, event.journal)

    def _ended(self, event: IncarnationEnded) -> None:
        with self._lock:
            router, fetcher = self._routers.get(event.path), self._fetchers.get(event.path)
            if router is not None and router.incarnation == event.incarnation:
                del self._routers[event.path]
            if fetcher is not None and fetcher.incarnation == event.incarnation:
                del self._fetchers[event.path]

    def _counted(self, event: RouterCounted) -> None:
        with self._lock:
            if (tally := self._routers.get(event.router)) is not None:
                tally.outcomes[event.outcome] += 1

    def _failed(self, event: AttemptFailed) -> None:
        with self._lock:
            if (tally := self._routers.get(event.router)) is not None:
                tally.failures[event.kind] += 1

    def _attempt_timed(self, event: AttemptTimed) -> None:
        with self._lock:
            if (tally := self._routers.get(event.router)) is not None:
                tally.attempts.observe(event.seconds)

    def _job_timed(self, event: JobTimed) -> None:
        with self._lock:
            if (tally := self._routers.get(event.router)) is not None:
                tally.jobs.observe(event.seconds)

    def _pruned(self, event: JournalPruned) -> None:
        with self._lock:
            if (tally := self._routers.get(event.router)) is not None:
                tally.pruned.update(jobs=event.jobs, results=event.results)

    def _load(self, event: FetcherLoad) -> None:
        with self._lock:
            self._fetchers[event.fetcher] = event

    def router(self, path: str) -> RouterTally | None:
        """A copy of what the router at `path` published, if it runs on this node."""
        with self._lock:
            tally = self._routers.get(path)
            return tally.copy() if tally is not None else None

    def routers_and_fetchers(self) -> tuple[list[RouterTally], list[FetcherLoad]]:
        """Copies of the live routers' tallies and the fetchers' loads, by path."""
        with self._lock:
            routers = [self._routers[path].copy() for path in sorted(self._routers)]
            fetchers = [self._fetchers[path] for path in sorted(self._fetchers)]
        return routers, fetchers


def _counters(name: str, what: str, labels: list[str], counts: Mapping[Any, float]) -> CounterMetricFamily:
    """A counter family with one sample per key of `counts` (a tuple key fills several labels).
    `dict(counts)` copies in one step, so another thread adding a key cannot break the scrape."""
    family = CounterMetricFamily(name, what, labels=labels)
    for key, value in sorted(dict(counts).items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family
