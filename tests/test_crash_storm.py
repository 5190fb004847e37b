"""A crash storm leaves no threads, slots or memory behind."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import pykka

from flotilla.actors import ActorSystem, ChildSpec, PoolSpec, SupervisorFlags, SupervisorSpec
from scripts.harness import wait_until
from tests.helpers import Probe, crash

CRASHES = 10_000


def test_ten_thousand_crashes_leave_thread_count_and_memory_where_they_started(system: ActorSystem) -> None:
    flags = SupervisorFlags(intensity=CRASHES * 2, period=1.0)
    pool = PoolSpec("pool", ChildSpec("w", Probe), size=4, flags=flags)
    system.start(SupervisorSpec("root", children=(pool,), flags=flags))
    paths = [f"t/root/pool/{i}" for i in range(4)]
    for path in paths:  # warm up: first restarts allocate caches
        crash(system, path)
    gc.collect()
    threads_before = threading.active_count()
    registered_before = len(pykka.ActorRegistry.get_all())
    tracemalloc.start()
    memory_before = tracemalloc.get_traced_memory()[0]
    for i in range(CRASHES):
        crash(system, paths[i % 4])
    gc.collect()
    memory_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    wait_until(lambda: threading.active_count() == threads_before, what="crashed threads to finish")
    assert len(pykka.ActorRegistry.get_all()) == registered_before
    # The supervisor keeps one timestamp per restart within its 1 s window (a few thousand
    # floats); a leak of even 30 bytes per crash would pass the bound.
    assert memory_after - memory_before < 300_000
    rows = system.supervisor("t/root/pool").which_children()
    assert sum(r.restarts for r in rows) == CRASHES + 4
