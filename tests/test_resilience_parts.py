"""The resilience parts one by one, without the network: a node's view (admission, trial and
probe permits, proxy choice, slots in arrival order), the breaker shards' trials, the
limiter's fair shares, the Hold monitor's decisions, and the topology's resilience section."""

from __future__ import annotations

import asyncio
import textwrap
import time
from typing import Any

import pytest

from flotilla.actors import ActorSystem, ChildSpec, PoolSpec, SupervisorSpec
from flotilla.actors.resilience.breakers import BreakerShard
from flotilla.actors.resilience.hold import HoldMonitor
from flotilla.actors.resilience.limiter import RateLimiter
from flotilla.actors.resilience.messages import (
    BreakerCommand,
    BreakerStates,
    BreakerStatus,
    FleetReport,
    HoldStatus,
    ProxyStatus,
    TargetReport,
    TokenGrant,
    TokenRequest,
)
from flotilla.actors.resilience.view import Go, ResilienceView, Wait, target_of
from flotilla.nodes.config.topology import TopologyError, parse_topology
from scripts.harness import wait_until
from tests.helpers import FakeClock, Inbox


def view_with(clock: FakeClock, **parts: bool) -> ResilienceView:
    view = ResilienceView(clock=clock)
    for part, on in parts.items():
        setattr(view, f"{part}_on", on)
    return view


def test_targets_are_hosts_with_their_port() -> None:
    assert target_of("https://Example.com/a?b") == "example.com"
    assert target_of("http://127.0.0.1:8800/x") == "127.0.0.1:8800"
    assert target_of("http://[::1]:81/") == "::1:81"


def test_nothing_configured_admits_everything_directly(clock: FakeClock) -> None:
    view = ResilienceView(clock=clock)
    view.apply_breakers(lambda _t: True, {"a.com": BreakerStatus("open", 60.0)})
    view.apply_hold(HoldStatus(on=True))
    assert view.admit("a.com") == Go()
    assert asyncio.run(view.acquire("a.com", 0.01)) is True


def test_an_open_breaker_makes_jobs_wait_and_half_open_admits_only_granted_trials(clock: FakeClock) -> None:
    view = view_with(clock, breakers=True)
    view.apply_breakers(lambda _t: True, {"a.com": BreakerStatus("open", 10.0, reason="5 of 10 failed")})
    verdict = view.admit("a.com")
    assert isinstance(verdict, Wait) and 10.0 <= verdict.delay <= 12.0 and "breaker open" in verdict.reason
    assert view.admit("b.com") == Go()
    clock.advance(10.5)
    assert isinstance(view.admit("a.com"), Wait)  # past its open time but no trial permit here
    assert view.take_reports().want_trials == {"a.com"}
    view.apply_breakers(lambda _t: True, {"a.com": BreakerStatus("half_open", 0.0, trials=2)})
    assert view.admit("a.com") == Go(trial=True)
    assert view.admit("a.com") == Go(trial=True)
    assert isinstance(view.admit("a.com"), Wait)
    view.apply_breakers(lambda _t: True, {})  # closed
    assert view.admit("a.com") == Go()


def test_a_drifted_page_is_reported_with_a_sample_and_closes_nothing_by_itself(clock: FakeClock) -> None:
    view = view_with(clock, breakers=True)
    view.record("a.com", "answered")
    view.record("a.com", "answered")
    view.record("a.com", "ok", page=True)
    view.record("a.com", "drift", detail="missing price", url="http://a.com/p/1", page=True)
    assert view.open_for("a.com") == 0 and view.admit("a.com") == Go()  # the shard judges drift
    reports = view.take_reports()
    assert reports.extractions == {"a.com": [True, False]}
    assert reports.drifted == {"a.com": ["http://a.com/p/1: missing price"]}
    assert reports.targets == {"a.com": [True, True]}  # a drifted page is the site answering
    assert reports.fleet == {"a.com": [2, 0]}


def test_half_open_trials_go_first_to_jobs_that_have_not_failed_there(clock: FakeClock) -> None:
    view = view_with(clock, breakers=True)
    view.apply_breakers(lambda _t: True, {"a.com": BreakerStatus("half_open", trials=1)})
    refused = view.admit("a.com", fresh=False)
    assert isinstance(refused, Wait) and "have not failed there" in refused.reason
    assert view.admit("a.com", fresh=True) == Go(trial=True)
    view.apply_breakers(lambda _t: True, {"a.com": BreakerStatus("half_open", trials=1)})
    clock.advance(1.5)  # no fresh job came for the permit: a job that failed there may try
    assert view.admit("a.com", fresh=False) == Go(trial=True)


def test_calls_to_a_target_whose_breaker_is_not_closed_do_not_count_for_hold(clock: FakeClock) -> None:
    view = view_with(clock, breakers=True)
    view.apply_breakers(lambda _t: True, {"dead.com": BreakerStatus("half_open", trials=1)})
    view.record("dead.com", "transient", trial=True, detail="refused")
    view.record("ok.com", "transient", detail="HTTP 503")
    reports = view.take_reports()
    assert reports.fleet == {"ok.com": [0, 1]} and reports.trials == {"dead.com": [False]}
    assert reports.last_failure == {"dead.com": "refused", "ok.com": "HTTP 503"}


def test_hold_admits_only_probes(clock: FakeClock) -> None:
    view = view_with(clock, hold=True)
    view.apply_hold(HoldStatus(on=True, probes=1))
    assert view.admit("a.com") == Go(probe=True)
    assert isinstance(view.admit("a.com"), Wait)
    view.record("a.com", "ok", probe=True)
    reports = view.take_reports()
    assert (reports.probes_succeeded, reports.held_back) == (1, 1)
    view.apply_hold(HoldStatus(on=False))
    assert view.admit("a.com") == Go()


def test_a_target_sticks_to_its_proxy_and_leaves_it_when_blocked(clock: FakeClock) -> None:
    view = view_with(clock, proxies=True)
    assert isinstance(view.admit("a.com"), Wait)  # the pool has not answered yet: never go direct
    view.apply_proxies({"http://p1": ProxyStatus("closed"), "http://p2": ProxyStatus("closed")})
    first = view.admit("a.com")
    assert first == Go(proxy="http://p1") and view.admit("a.com") == first
    assert view.admit("b.com") == Go(proxy="http://p2")  # new targets take turns
    view.record("a.com", "blocked", proxy="http://p1", status=403)
    assert view.admit("a.com") == Go(proxy="http://p2")
    assert view.take_reports().proxies == {"http://p1": [False]}
    view.apply_proxies({"http://p1": ProxyStatus("closed"), "http://p2": ProxyStatus("open", 0.0, 30.0)})
    assert isinstance(view.admit("a.com"), Wait)  # p1 blocked it, p2 is out of the pool


def test_slots_go_to_callers_in_arrival_order_and_expire(clock: FakeClock) -> None:
    view = view_with(clock, limiter=True)
    order: list[int] = []

    async def scenario() -> None:
        async def caller(n: int) -> None:
            assert await view.acquire("a.com", 5.0)
            order.append(n)

        tasks = [asyncio.create_task(caller(n)) for n in range(3)]
        deadline = time.monotonic() + 5.0
        while view.snapshot()["waiting_for_slots"].get("a.com", 0) < 3:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the callers did not start waiting for slots"
            await asyncio.sleep(0.001)  # let the callers run until they wait (a condition, not a pause)
        assert view.wanted() == {"a.com": 3}
        view.grant("a.com", 2, ttl=1.0)
        view.grant("a.com", 2, ttl=1.0)
        await asyncio.gather(*tasks)
        assert await view.acquire("a.com", 0.01)  # the fourth token is kept...
        view.grant("a.com", 1, ttl=1.0)
        clock.advance(1.5)
        assert not await view.acquire("a.com", 0.01)  # ...but not past its lease

    asyncio.run(scenario())
    assert order == [0, 1, 2]


def test_the_limiter_serves_waiting_nodes_in_turn(system: ActorSystem) -> None:
    gates = ("g0", "g1", "g2", "g3")
    system.start(
        SupervisorSpec(
            "root",
            children=(
                ChildSpec("limiter", RateLimiter, {"default_rate": 20.0, "burst_seconds": 0.1}),
                *(ChildSpec(g, Inbox) for g in gates),
            ),
        )
    )
    limiter = system.ref("t/root/limiter")

    def grants(gate: str) -> list[int]:
        return [m.tokens for m in system.registry.lookup(f"t/root/{gate}").actor.received if isinstance(m, TokenGrant)]

    limiter.tell(TokenRequest("t/root/g0", "a.com", 100))
    wait_until(lambda: grants("g0") == [2], timeout=5, what="the first node to get the whole burst")
    for gate in gates[1:]:
        limiter.tell(TokenRequest(f"t/root/{gate}", "a.com", 100))
    wait_until(lambda: sum(sum(grants(g)) for g in gates[1:]) >= 3, timeout=5, what="three more tokens")
    assert [grants(g) for g in gates[1:]] == [[1], [1], [1]]  # one each, in turn, at 20/s


def test_hold_needs_failures_spread_over_targets_and_ends_after_good_probes(system: ActorSystem) -> None:
    system.start(
        SupervisorSpec(
            "root",
            children=(
                ChildSpec(
                    "hold",
                    HoldMonitor,
                    {
                        "threshold": 0.6,
                        "target_minimum": 5,
                        "min_targets": 3,
                        "failing_share": 0.5,
                        "recovery_probes": 2,
                        "probes": 1,
                        "probe_interval": 0.01,
                    },
                ),
                ChildSpec("gate", Inbox),
            ),
        )
    )
    hold = system.ref("t/root/hold")

    def report(**counts: int) -> HoldStatus:
        hold.tell(FleetReport("t/root/gate", **counts))
        received = system.registry.lookup("t/root/gate").actor.received
        wait_until(
            lambda: received and isinstance(received[-1], HoldStatus) and len(received) > report.seen,
            timeout=5,
            what="the monitor's answer",
        )
        report.seen = len(received)
        return received[-1]

    report.seen = 0  # type: ignore[attr-defined]
    assert not report(failed=40, targets={"dead.com": [0, 40]}).on  # one dead host: its breaker's job
    assert not report(succeeded=97, failed=3, targets={"shop.com": [97, 3], "b.com": [1, 4]}).on  # two failing
    assert not report(targets={"c.com": [1, 3]}).on  # c.com has 4 calls: below the minimum, not judged
    for n in range(3):  # three more healthy targets: two failing of seven judged
        report(targets={f"ok{n}.com": [10, 0]})
    status = report(targets={"c.com": [0, 1], "d.com": [0, 9]})  # four failing of eight
    assert status.on and "4 of 8 targets failing" in status.reason and "dead.com" in status.reason
    assert report(held_back=3).probes == 1
    assert report(probes_succeeded=1).on
    assert not report(probes_succeeded=1).on  # two good probes in a row


def test_the_topology_checks_the_resilience_paths() -> None:
    text = textwrap.dedent("""
        nodes: {alpha: {}}
        resilience: {breakers: alpha/root/limiter, limiter: alpha/root/nowhere, interval: 0}
        tree:
          children:
            - {id: limiter, actor: limiter}
    """)
    with pytest.raises(TopologyError) as error:
        parse_topology(text)
    assert "resilience.interval" in str(error.value)
    with pytest.raises(TopologyError) as error:
        parse_topology(text.replace("interval: 0", "interval: 0.2"))
    message = str(error.value)
    assert "resilience.breakers: 'alpha/root/limiter' must be a pool of at least one 'breakers'" in message
    assert "resilience.limiter: 'alpha/root/nowhere' must be a 'limiter' actor" in message
    good = parse_topology(
        text.replace("interval: 0", "interval: 0.2")
        .replace("breakers: alpha/root/limiter, ", "")
        .replace("alpha/root/nowhere", "alpha/root/limiter")
    )
    assert good.resilience is not None and good.resilience.gate_args()["limiter"] == "alpha/root/limiter"


def test_trial_permits_do_not_outlive_their_half_open_period(clock: FakeClock) -> None:
    view = view_with(clock, breakers=True)
    view.apply_breakers(lambda _t: True, {"a.com": BreakerStatus("half_open", trials=3)})
    assert view.admit("a.com") == Go(trial=True)
    view.apply_breakers(lambda _t: True, {"a.com": BreakerStatus("open", 10.0)})  # the trial failed
    clock.advance(10.5)
    assert isinstance(view.admit("a.com"), Wait)  # the two unused permits are gone: ask again


def test_an_unused_proxy_trial_goes_back(clock: FakeClock) -> None:
    view = view_with(clock, proxies=True)
    view.apply_proxies({"http://p1": ProxyStatus("half_open")})
    go = view.admit("a.com")
    assert go == Go(proxy="http://p1", proxy_trial=True)
    view.cancel("a.com", go)  # e.g. no rate-limit slot came in time
    assert view.admit("a.com") == go
    assert isinstance(view.admit("b.com"), Wait)  # one trial per node at a time
    clock.advance(11)
    view.apply_proxies({"http://p1": ProxyStatus("half_open")})
    assert view.admit("b.com") == Go(proxy="http://p1", proxy_trial=True)  # that trial never reported


def test_every_urgent_record_wakes_the_gate(clock: FakeClock) -> None:
    view = view_with(clock, breakers=True, limiter=True)
    woken: list[int] = []
    view.notify = lambda: woken.append(1)
    view.record("a.com", "blocked", status=429, retry_after=2.0)
    view.take_reports()
    view.record("b.com", "blocked", status=429, retry_after=2.0)
    view.record("b.com", "drift", detail="y", page=True)  # drift is not urgent: the shard judges it on the next tick
    assert len(woken) == 2


def shard_with_gate(system: ActorSystem, **settings: object) -> tuple[Any, Any]:
    system.start(
        SupervisorSpec(
            "root",
            children=(PoolSpec("breakers", ChildSpec("b", BreakerShard, settings), size=1), ChildSpec("gate", Inbox)),
        )
    )
    return system.ref("t/root/breakers/0"), system.registry.lookup("t/root/gate").actor


def answer(shard: Any, gate: Any, report: TargetReport) -> BreakerStates:
    before = len(gate.received)
    shard.tell(report)
    wait_until(lambda: len(gate.received) > before, timeout=5, what="the shard's answer")
    return gate.received[-1]


def test_a_shard_grants_trials_once_per_period_and_only_trials_decide(system: ActorSystem) -> None:
    shard, gate = shard_with_gate(system, open_base=0.01, open_cap=0.01, trial_calls=2, trial_timeout=0.05)
    assert shard.ask(BreakerCommand("a.com", "trip")).state == "open"
    ask = TargetReport("t/root/gate", want_trials=["a.com"])
    wait_until(lambda: answer(shard, gate, ask).states["a.com"].trials == 2, timeout=5, what="trials")
    assert answer(shard, gate, ask).states["a.com"].trials == 0  # granted already
    started = time.monotonic()
    wait_until(lambda: time.monotonic() > started + 0.06, timeout=1, what="the trial timeout to pass")
    assert answer(shard, gate, ask).states["a.com"].trials == 2  # never reported: granted again...
    assert answer(shard, gate, ask).states["a.com"].trials == 0  # ...once
    late = answer(shard, gate, TargetReport("t/root/gate", outcomes={"a.com": [True, True, True]}))
    assert late.states["a.com"].state == "half_open"  # calls from before it opened do not close it
    closed = answer(shard, gate, TargetReport("t/root/gate", trials={"a.com": [True, True]}))
    assert "a.com" not in closed.states


def test_drift_trips_a_breaker_only_when_a_share_of_the_target_s_pages_drift(system: ActorSystem) -> None:
    shard, gate = shard_with_gate(system, open_base=5.0, drift_window=20, drift_minimum=10, drift_threshold=0.5)
    scattered = [True] * 9 + [False]  # one page in ten lacks its price: the site, not drift
    for _ in range(5):
        states = answer(
            shard,
            gate,
            TargetReport(
                "t/root/gate", extractions={"a.com": scattered}, drifted={"a.com": ["http://a.com/p/9: missing price"]}
            ),
        ).states
        assert "a.com" not in states
    changed = [False] * 10  # the template changed
    first = answer(
        shard,
        gate,
        TargetReport(
            "t/root/gate", extractions={"a.com": changed}, drifted={"a.com": ["http://a.com/p/1: missing price"]}
        ),
    ).states["a.com"]
    assert first.state == "open" and "11 of the last 20 pages" in first.reason and "http://a.com/p/1" in first.reason
    again = answer(shard, gate, TargetReport("t/root/gate", extractions={"a.com": changed})).states["a.com"]
    assert again.state == "open" and again.open_for <= first.open_for  # pages from before it opened
    assert system.registry.lookup("t/root/breakers/0").actor.opened == 1


def test_a_page_failing_again_does_not_count_against_its_host(clock: FakeClock) -> None:
    view = view_with(clock, breakers=True, hold=True)
    view.record("a.com", "transient", detail="HTTP 503", retry=True)
    view.record("a.com", "answered")
    view.record("a.com", "transient", detail="HTTP 503")
    reports = view.take_reports()
    assert reports.targets == {"a.com": [True, False]} and reports.fleet == {"a.com": [1, 1]}
    assert reports.last_failure == {"a.com": "HTTP 503"}


def test_a_call_counts_when_its_answer_comes_and_its_page_only_for_drift_or_a_challenge(clock: FakeClock) -> None:
    view = view_with(clock, breakers=True)
    view.record("a.com", "answered")  # the fetcher: a page came (however late its extraction)
    view.record("a.com", "ok", page=True)
    view.record("a.com", "answered")
    view.record("a.com", "blocked", page=True, detail="challenge page (header cf-mitigated: challenge)")
    view.record("a.com", "drift", page=True, trial=True, detail="missing price")  # a trial's page decides it
    reports = view.take_reports()
    assert reports.targets == {"a.com": [True, True, False]} and reports.trials == {"a.com": [False]}
    assert reports.extractions == {"a.com": [True, False]}
