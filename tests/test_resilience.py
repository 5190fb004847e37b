"""The resilience actors on one node, against the real demo site and real forward proxies
(each proxy leaves from its own loopback address, so the site can block one of them):
breaker transitions with only trial calls reaching an open target, drift tripping a breaker,
the fleet's Hold entered and left, rotation away from a blocked proxy, Retry-After honoured
and rate limits kept, all counted by the site."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flotilla.actors import ActorSystem
from flotilla.actors.pipeline.journal import Journal, NewJob
from flotilla.actors.pipeline.router import Wake
from flotilla.actors.resilience.messages import HoldCommand
from flotilla.actors.resilience.view import ResilienceView, target_of
from scripts.harness import PATIENT, DemoSiteProcess, ProxyProcess, free_ports, start_fleet, wait_until


@pytest.fixture
def site() -> Iterator[DemoSiteProcess]:
    process = DemoSiteProcess("--block", "127.0.0.2", "--limited-rate", "20")
    yield process
    process.stop()


def actor(system: ActorSystem, path: str) -> Any:
    return system.registry.lookup(path).actor


def submit(system: ActorSystem, journal: Journal, site: DemoSiteProcess, paths: list[str]) -> list[str]:
    keys = [f"{path}#{i}" for i, path in enumerate(paths)]
    journal.submit([NewJob(key, f"{site.url}{path}", "product") for key, path in zip(keys, paths, strict=True)])
    system.ref("t/root/router").tell(Wake())
    return keys


def stored(journal: Journal, keys: list[str]) -> bool:
    return all(journal.job(key).state == "stored" for key in keys)


def requests_to(site: DemoSiteProcess, family: str) -> int:
    return site.stats()["families"].get(family, {}).get("count", 0)


def opened(system: ActorSystem, target: str) -> int:
    """How many times the shards opened breakers (the one owning `target` included)."""
    return sum(actor(system, f"t/root/breakers/{i}").opened for i in range(2))


def fetchers_idle(system: ActorSystem) -> bool:
    return all(actor(system, f"t/root/fetchers/{i}").in_flight == 0 for i in range(2))


def test_an_open_breaker_lets_only_trial_calls_reach_its_target(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    journal = start_fleet(
        system,
        tmp_path,
        breakers={"window": 10, "minimum_calls": 5, "open_base": 1.0, "open_cap": 1.5, "trial_calls": 2},
    )
    target = target_of(site.url)
    site.switch(503)
    keys = submit(system, journal, site, [f"/switch/{n}" for n in range(30)])
    wait_until(lambda: ResilienceView.of(system).open_for(target) > 0, timeout=10, what="the breaker to open")
    wait_until(lambda: fetchers_idle(system), timeout=10, what="the calls made before it opened to end")
    first_open = opened(system, target)
    before = requests_to(site, "/switch")
    wait_until(
        lambda: opened(system, target) >= first_open + 2,
        timeout=15,
        what="two rounds of failed trials, each opening the breaker again",
    )
    # Two half-open periods: at most 2 trial calls each (one more round may have begun).
    assert requests_to(site, "/switch") - before <= 3 * 2
    assert journal.counts()["dead"] == 0 and all(journal.tries(k) < 20 for k in keys)  # waiting is not trying
    site.switch(200)
    wait_until(lambda: stored(journal, keys), timeout=30, what="every job to be stored once the target recovers")
    assert ResilienceView.of(system).snapshot()["breakers"].get(target, {"state": "closed"})["state"] == "closed"
    titles = [a["title"] for a in actor(system, "t/root/alerts").inspect().recent]
    assert f"breaker open: {target}" in titles and f"breaker closed: {target}" in titles


def test_scattered_drift_parks_its_pages_and_stops_nothing(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    journal = start_fleet(system, tmp_path, breakers={"open_base": 30.0, "drift_window": 20, "drift_minimum": 10})
    target = target_of(site.url)
    paths = [f"/product/{n}" for n in range(40)]
    paths[7] = "/drift/7"  # one page in forty without its price: the site, not a layout change
    keys = submit(system, journal, site, paths)
    wait_until(
        lambda: journal.counts()["stored"] == 39 and journal.counts()["parked"] == 1,
        timeout=15,
        what="every healthy page stored and the drifted one parked",
    )
    assert ResilienceView.of(system).open_for(target) == 0 and opened(system, target) == 0
    assert journal.job(keys[7]).reason == "DRIFT: missing required fields: title, price"
    assert not actor(system, "t/root/alerts").inspect().recent


def test_drift_on_a_share_of_a_target_s_pages_opens_its_breaker_with_one_alert(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    journal = start_fleet(system, tmp_path, breakers={"open_base": 30.0, "drift_window": 20, "drift_minimum": 10})
    target = target_of(site.url)
    submit(system, journal, site, [f"/drift/{n}" for n in range(30)])  # the layout changed
    wait_until(lambda: ResilienceView.of(system).open_for(target) > 5, timeout=10, what="drift to trip the breaker")
    sink = actor(system, "t/root/alerts")
    wait_until(
        lambda: any("layout drift" in a["title"] for a in sink.inspect().recent), timeout=5, what="a drift alert"
    )
    wait_until(lambda: fetchers_idle(system), timeout=10, what="the calls made before it opened to end")
    alerts = [a for a in sink.inspect().recent if "layout drift" in a["title"]]
    assert len(alerts) == 1 and "of the last" in alerts[0]["detail"] and "/drift/" in alerts[0]["detail"]
    keys = submit(system, journal, site, [f"/product/{n}" for n in range(10)])
    wait_until(
        lambda: all(journal.job(k).reason and "breaker open" in journal.job(k).reason for k in keys),
        timeout=10,
        what="jobs for the tripped target to wait",
    )
    assert requests_to(site, "/product") == 0 and journal.counts()["dead"] == 0


HOLD = {
    "threshold": 0.6,
    "window": 5.0,
    "target_minimum": 3,
    "min_targets": 3,
    "probe_interval": 0.3,
    "probes": 1,
    "recovery_probes": 2,
}


def test_one_failing_target_never_puts_the_fleet_in_hold(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    journal = start_fleet(system, tmp_path, hold=HOLD, policy={**PATIENT, "max_attempts": 2})
    site.switch(503)
    submit(system, journal, site, [f"/switch/{n}" for n in range(40)])
    wait_until(lambda: journal.counts()["dead"] == 40, timeout=20, what="every job to die after its attempts")
    assert not ResilienceView.of(system).holding().on and actor(system, "t/root/hold").entered == 0


def test_the_fleet_enters_hold_and_leaves_it_on_recovery(system: ActorSystem, tmp_path: Path) -> None:
    ports = free_ports(2)
    site = DemoSiteProcess(*(arg for port in ports for arg in ("--extra-port", str(port))))
    try:
        hold_and_recover(system, site, ports, tmp_path)
    finally:
        site.stop()


def hold_and_recover(system: ActorSystem, site: DemoSiteProcess, ports: list[int], tmp_path: Path) -> None:
    journal = start_fleet(system, tmp_path, hold=HOLD)
    monitor = actor(system, "t/root/hold")
    site.switch(503)  # three targets (the site's three ports) failing at once: the fleet is failing
    hosts = [site.url, *(f"http://127.0.0.1:{port}" for port in ports)]
    keys = [f"/switch/{i}#{i}" for i in range(45)]
    journal.submit([NewJob(key, f"{hosts[i % 3]}/switch/{i}", "product") for i, key in enumerate(keys)])
    system.ref("t/root/router").tell(Wake())
    wait_until(lambda: ResilienceView.of(system).holding().on, timeout=10, what="the fleet to enter Hold")
    wait_until(lambda: fetchers_idle(system), timeout=10, what="the calls made before Hold to end")
    before, probes_before = requests_to(site, "/switch"), monitor.next_probe_at
    wait_until(lambda: monitor.next_probe_at > probes_before + 1.0, timeout=10, what="a few probe rounds")
    rounds = round((monitor.next_probe_at - probes_before) / HOLD["probe_interval"]) + 1
    assert requests_to(site, "/switch") - before <= rounds  # only probes reach the web in Hold
    assert monitor.on and monitor.entered == 1
    site.switch(200)
    wait_until(lambda: not ResilienceView.of(system).holding().on, timeout=10, what="probes to end Hold")
    wait_until(lambda: stored(journal, keys), timeout=30, what="every job to be stored after Hold")
    titles = [a["title"] for a in actor(system, "t/root/alerts").inspect().recent]
    assert "fleet in Hold: fresh fetches paused" in titles and "fleet out of Hold: fetching resumed" in titles


def test_an_operator_forces_hold_on_and_off(system: ActorSystem, site: DemoSiteProcess, tmp_path: Path) -> None:
    journal = start_fleet(system, tmp_path, hold=HOLD)
    status = system.ask("t/root/hold", HoldCommand("on"))
    assert status.on and status.mode == "on"
    wait_until(lambda: ResilienceView.of(system).holding().on, timeout=5, what="nodes to see Hold")
    keys = submit(system, journal, site, [f"/product/{n}" for n in range(20)])
    wait_until(lambda: actor(system, "t/root/router").counts["deferred"] >= 5, timeout=10, what="jobs to be held back")
    assert not stored(journal, keys) and journal.counts()["dead"] == 0
    status = system.ask("t/root/hold", HoldCommand("off"))
    assert not status.on and status.mode == "off"
    wait_until(lambda: stored(journal, keys), timeout=20, what="jobs to go once Hold is forced off")


def test_a_blocked_proxy_is_left_for_another(system: ActorSystem, site: DemoSiteProcess, tmp_path: Path) -> None:
    blocked, clean = ProxyProcess("127.0.0.2"), ProxyProcess("127.0.0.3")
    try:
        journal = start_fleet(
            system, tmp_path, proxies={"proxies": [blocked.url, clean.url], "minimum_calls": 3, "window": 5}
        )
        keys = submit(system, journal, site, [f"/blocked/{n}" for n in range(30)])
        wait_until(lambda: stored(journal, keys), timeout=30, what="every job stored through the clean proxy")
        clients = site.stats()["by_client"]
        assert clients.get("127.0.0.3", 0) >= 30 and "127.0.0.1" not in clients  # never direct
        pool = actor(system, "t/root/proxies").inspect()
        assert pool[blocked.url].health < pool[clean.url].health
        blocked_so_far = clients.get("127.0.0.2", 0)
        more = submit(system, journal, site, [f"/blocked/{n}" for n in range(100, 130)])
        wait_until(lambda: stored(journal, more), timeout=30, what="the next jobs stored")
        assert site.stats()["by_client"].get("127.0.0.2", 0) == blocked_so_far  # the target sticks to the clean one
        assert all(journal.tries(k) == 1 for k in more)
    finally:
        blocked.stop()
        clean.stop()


def test_retry_after_is_honoured_and_slows_the_target(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    journal = start_fleet(system, tmp_path, limiter={"default_rate": 200.0, "slow_factor": 0.05})
    keys = submit(system, journal, site, [f"/limited/{n}" for n in range(80)])
    wait_until(lambda: stored(journal, keys), timeout=60, what="every limited job to be stored")
    limiter = actor(system, "t/root/limiter").inspect().targets[target_of(site.url)]
    assert limiter.slow_downs >= 1
    throttled = 0
    for key in keys:
        attempts = journal.attempts(key)  # (attempt, started, ended, outcome, detail)
        for earlier, later in itertools.pairwise(attempts):
            if "HTTP 429" in (earlier[4] or ""):
                throttled += 1
                assert later[1] >= earlier[2] + 1.0 - 0.01, f"{key} retried before its Retry-After of 1 s"
    assert throttled >= 1


def test_the_rate_limit_holds_across_fetchers(system: ActorSystem, site: DemoSiteProcess, tmp_path: Path) -> None:
    target = target_of(site.url)
    journal = start_fleet(system, tmp_path, limiter={"default_rate": 1000.0, "rates": {target: 20.0}}, fetchers=3)
    keys = submit(system, journal, site, [f"/product/{n}" for n in range(60)])
    wait_until(lambda: stored(journal, keys), timeout=30, what="every job to be stored")
    family = site.stats()["families"]["/product"]
    assert family["count"] == 60
    assert family["busiest_second"] <= 22  # the rate, plus a burst of 10 %
    assert (
        ResilienceView.of(system).slot_waits[target] >= 40 and ResilienceView.of(system).slot_wait_seconds[target] > 1.0
    )
    assert family["last"] - family["first"] >= 2.5  # 60 requests at 20/s take ~3 s, not a moment


def test_slots_are_taken_only_when_the_request_can_go(
    system: ActorSystem, site: DemoSiteProcess, tmp_path: Path
) -> None:
    """A busy fetcher does not take slots for jobs that then wait for a connection and burst."""
    target = target_of(site.url)
    journal = start_fleet(
        system,
        tmp_path,
        limiter={"rates": {target: 5.0}},
        fetchers=1,
        fetcher_args={"max_in_flight": 2, "slot_wait": 10.0},
    )
    slow = submit(system, journal, site, ["/slow/1?ms=3000", "/slow/2?ms=3000"])
    wait_until(lambda: requests_to(site, "/slow") == 2, timeout=10, what="two slow requests to fill the fetcher")
    keys = submit(system, journal, site, [f"/product/{n}" for n in range(15)])
    wait_until(lambda: stored(journal, keys + slow), timeout=30, what="every job to be stored")
    assert site.stats()["families"]["/product"]["busiest_second"] <= 6  # 5/s and a burst of one


def test_pages_that_keep_failing_cannot_hold_a_healthy_host_s_breaker_open(system: ActorSystem, tmp_path: Path) -> None:
    site = DemoSiteProcess("--flaky-failures", "100000")  # /flaky/N answers 503, always
    try:
        journal = start_fleet(
            system,
            tmp_path,
            breakers={"window": 10, "minimum_calls": 5, "open_base": 1.0, "open_cap": 30.0, "trial_calls": 2},
        )
        target = target_of(site.url)
        submit(system, journal, site, [f"/flaky/{n}" for n in range(12)])
        wait_until(lambda: ResilienceView.of(system).open_for(target) > 0, timeout=10, what="the breaker to open")
        keys = submit(system, journal, site, [f"/product/{n}" for n in range(20)])
        wait_until(
            lambda: stored(journal, keys),
            timeout=20,
            what="the healthy pages to be stored once trials found the host answering",
        )
        assert opened(system, target) == 1  # the trials went to pages that had not failed there
    finally:
        site.stop()
