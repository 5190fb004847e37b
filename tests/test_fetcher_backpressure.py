"""A fetcher whose reports go to a peer that cannot take them (its node frozen, the backlog to
it full) keeps its event loop running: a request already in flight completes and reports to
an actor on its own node, and the loop runs what it is given at once. Its reports to the
frozen peer wait (none is dropped) and all arrive once that node runs again. Real node
process (frozen with SIGSTOP), real sockets, the real demo site."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flotilla.actors import Actor, ChildSpec, SupervisorSpec
from flotilla.actors.pipeline.fetcher import Fetcher
from flotilla.actors.pipeline.messages import FetchJob, JobOutcome
from flotilla.nodes.config.topology import load_topology
from scripts.harness import DemoSiteProcess, wait_until
from tests.cluster_harness import LiveCluster, write_topology
from tests.conftest import TEST_EGRESS

TREE = """
children:
  - id: sink
    actor: "tests.test_fetcher_backpressure:Sink"
  - id: extractors
    pool: {actor: extractor, size: 1}
  - id: fetching
    node: tester
    supervisor:
      children:
        - id: fetcher
          actor: fetcher
          args: {extractor: alpha/root/extractors, timeout: 1.0}
"""

FETCHER = "alpha/root/fetching/fetcher"
SINK = "alpha/root/sink"
REPORTS = 10
"""Jobs whose outcomes go to the frozen node."""
FILL = 1200
"""Envelopes queued for the frozen node to fill its backlog (`transport.backlog` is 1000)."""


class Sink(Actor):
    """Keeps the keys of the outcomes told to it; an ask of "keys" returns them."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, JobOutcome):
            self.keys.add(message.key)
        elif message == "keys":
            return sorted(self.keys)
        return None


class Here(Actor):
    """The outcomes told to it on this node, with when each came."""

    came: dict[str, float] = {}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, JobOutcome):
            Here.came[message.key] = time.monotonic()
        return None


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess()
    yield process
    process.stop()


def test_a_full_backlog_to_the_reply_peer_does_not_stop_the_fetchers_loop(
    tmp_path: Path, site: DemoSiteProcess, clusters: list[LiveCluster]
) -> None:
    path = write_topology(tmp_path, TREE, nodes=("alpha", "tester"))
    text = path.read_text(encoding="utf-8")
    # alpha stays "up" while frozen; the backlog and ZeroMQ's queue are as small as allowed
    path.write_text(
        text.replace("heartbeat_timeout: 0.6", "heartbeat_timeout: 120, backlog: 1000, high_water_mark: 1"),
        encoding="utf-8",
    )
    cluster = LiveCluster(path, load_topology(path))
    clusters.append(cluster)
    system = cluster.join()
    system.extensions.put(TEST_EGRESS)  # before alpha starts the fetcher here
    system.start(SupervisorSpec("local", children=(ChildSpec("here", Here),)))
    alpha = cluster.start_node("alpha")
    cluster.wait_up("alpha")
    wait_until(lambda: system.ref(FETCHER).is_local(), timeout=30, what="the fetcher to start here")
    slot = system.registry.lookup_local(FETCHER)
    fetcher = slot.actor if slot is not None else None
    assert isinstance(fetcher, Fetcher)
    wait_until(lambda: _sink_keys(system) == [], timeout=10, what="the sink on alpha")

    transport = cluster.cluster.transport
    alpha.signal(signal.SIGSTOP)
    frozen = True
    queued = [0]

    def fill() -> None:  # big envelopes fill the socket buffers, then small ones the backlog
        for n in range(FILL):
            queued[0] += 1
            system.ref(SINK).tell(b"x" * (200_000 if n < 100 else 10))

    filler = threading.Thread(target=fill, daemon=True)
    try:
        filler.start()
        wait_until(
            lambda: queued[0] - transport.stats.sent_frames["alpha"] >= 1000,
            timeout=30,
            what="the backlog to alpha to fill",
        )
        Here.came = {}
        began = time.monotonic()
        fetcher_ref = system.ref(FETCHER)
        # times out after 1 s and reports to an actor on this node
        fetcher_ref.tell(FetchJob("slow-here", f"{site.url}/slow/1?ms=5000", "product", 1, "tester/local/here"))
        for n in range(REPORTS):  # 404 at once: their outcomes wait for room to alpha
            fetcher_ref.tell(FetchJob(f"gone-{n}", f"{site.url}/gone/{n}", "product", 1, SINK))
        wait_until(lambda: "slow-here" in Here.came, timeout=10, what="the job reporting here")
        assert Here.came["slow-here"] - began < 3.0, "the loop was held up by a full backlog"
        for _ in range(3):  # and the loop runs what it is given at once
            ran = time.monotonic()
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), fetcher.loop).result(timeout=2)
            assert time.monotonic() - ran < 1.0
        assert fetcher.in_flight == 0  # every request ended; their reports wait for alpha

        alpha.signal(signal.SIGCONT)
        frozen = False
        wait_until(
            lambda: _sink_keys(system) == sorted(f"gone-{n}" for n in range(REPORTS)),
            timeout=60,
            what="every outcome to reach alpha",
        )
    finally:
        if frozen:
            alpha.signal(signal.SIGCONT)
        filler.join(60)


def _sink_keys(system: Any) -> list[str] | None:
    try:
        return system.ask(SINK, "keys", timeout=2)
    except Exception:  # noqa: BLE001 - not started yet
        return None
