"""Fixtures: an actor system per test, stopped afterwards, with no thread left behind."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import settings

from flotilla.actors import ActorSystem
from flotilla.actors.pipeline.egress import EgressPolicy
from scripts.harness import wait_until
from tests.cluster_harness import LiveCluster
from tests.helpers import FakeClock, Reports
from tests.other_user import other_user, shared_dir  # noqa: F401  fixtures of the tests run as another local user
from tests.postgres import postgres_server, postgres_url  # noqa: F401  a real PostgreSQL server for the journal

# CI runs the property tests on a fixed set of examples, so a run is repeatable; locally
# each run explores new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


TEST_EGRESS = EgressPolicy.from_config(["127.0.0.1"])
"""The egress policy of in-process tests: the default plus the loopback address their sites use."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    """A fresh node-local actor system; every actor thread it started must be gone after."""
    before = {t.ident for t in threading.enumerate()}
    clock = request.getfixturevalue("clock") if "clock" in request.fixturenames else None
    system = ActorSystem("t", clock=clock) if clock is not None else ActorSystem("t")
    system.extensions.put(TEST_EGRESS)  # the tests' sites are on 127.0.0.1
    yield system
    system.stop(timeout=10)
    wait_until(
        lambda: (
            not [
                t
                for t in threading.enumerate()
                if t.ident not in before and t.name.startswith(("actor ", "scheduler "))
            ]
        ),
        timeout=10,
        what="all actor threads of the test to end",
    )


@pytest.fixture
def reports(system: ActorSystem) -> Reports:
    return Reports(system)


@pytest.fixture
def clusters() -> Iterator[list[LiveCluster]]:
    """Clusters made by a test (node processes and the tester node), stopped afterwards."""
    made: list[LiveCluster] = []
    yield made
    for cluster in made:
        cluster.stop()
