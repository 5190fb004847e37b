"""A node's Prometheus metrics, served over HTTP on the address the topology gives the node
(`metrics:`, loopback unless the topology has security keys).

Everything is read from the node's own state when Prometheus scrapes (the hot paths pay
nothing): supervisor restarts and exits (counted from supervisor reports), dead letters,
mailbox depths, the transport's frames, bytes and rejected frames, input refused on every
socket (`flotilla.nodes.serving.refusals`), refused handshakes per socket, which nodes are up, jobs
by state and the router's outcomes, failures by kind and attempt latencies (on the node of
the router and intake), fetches deferred and in flight, and this node's view of breakers,
Hold and rate-limit waits. Names follow Prometheus conventions (`flotilla_` prefix, `_total`
counters, base units).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from flotilla.actors.core.messages import SupervisorReport, describe_reason
from flotilla.nodes.serving.refusals import refusals

if TYPE_CHECKING:
    from flotilla.nodes.runtime.node import NodeRun

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


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
        for actor in system.registry.local_actors():
            depth.add_metric([actor.path], actor.mailbox_depth)
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
        from flotilla.actors.pipeline.fetcher import Fetcher
        from flotilla.actors.pipeline.router import ATTEMPT_BUCKETS, JOB_BUCKETS, Router

        actors = self.run.system.registry.local_actors()
        routers = [a for a in actors if isinstance(a, Router)]
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
            for outcome, n in dict(router.counts).items():
                outcomes.add_metric([router.path, outcome], n)
            for kind, n in sorted(dict(router.failures).items()):
                failures.add_metric([router.path, kind], n)
            latency.add_metric(
                [router.path], _cumulative(ATTEMPT_BUCKETS, router.attempt_buckets), router.attempt_seconds
            )
            job_latency.add_metric([router.path], _cumulative(JOB_BUCKETS, router.job_buckets), router.job_seconds)
        yield outcomes
        yield failures
        yield latency
        yield job_latency
        fetchers = [a for a in actors if isinstance(a, Fetcher)]
        in_flight = GaugeMetricFamily(
            "flotilla_fetches_in_flight", "Requests in flight, by fetcher.", labels=["fetcher"]
        )
        deferred = CounterMetricFamily(
            "flotilla_fetches_deferred",
            "Jobs handed back unfetched (breaker, Hold, no slot or proxy), by fetcher.",
            labels=["fetcher"],
        )
        for fetcher in fetchers:
            in_flight.add_metric([fetcher.path], fetcher.in_flight)
            deferred.add_metric([fetcher.path], fetcher.deferred)
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
        view = self.run.system.resilience
        snapshot = view.snapshot()
        hold = GaugeMetricFamily("flotilla_hold", "1 while the fleet is in Hold (as this node sees it).")
        hold.add_metric([], 1 if snapshot["hold"]["on"] else 0)
        yield hold
        breakers = GaugeMetricFamily(
            "flotilla_breaker_state",
            "Targets whose breaker is not closed (1 half-open, 2 open), as this node sees them.",
            labels=["target"],
        )
        for target, state in snapshot["breakers"].items():
            breakers.add_metric([target], BREAKER_STATES.get(state["state"], 2))
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
        for target, n in snapshot["waiting_for_slots"].items():
            waiting.add_metric([target], n)
        yield waiting


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts as Prometheus's cumulative buckets, ending with +Inf."""
    total, buckets = 0, []
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        total += n
        buckets.append(("+Inf" if bound == float("inf") else str(bound), total))
    return buckets


def _counters(name: str, what: str, labels: list[str], counts: Mapping[Any, float]) -> CounterMetricFamily:
    """A counter family with one sample per key of `counts` (a tuple key fills several labels).
    `dict(counts)` copies in one step, so another thread adding a key cannot break the scrape."""
    family = CounterMetricFamily(name, what, labels=labels)
    for key, value in sorted(dict(counts).items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family
