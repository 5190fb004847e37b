"""Serving threads survive their own failures (restarted, then the node stops), and refused
input is counted exactly but logged once per interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from flotilla.nodes.intake.client import IntakeClient, IntakeUnavailable
from flotilla.nodes.intake.protocol import JobSpec
from flotilla.nodes.intake.server import Intake
from flotilla.nodes.serving.guard import MAX_SERVING_RESTARTS, ServingGuard
from flotilla.nodes.serving.refusals import Refusals
from scripts.harness import free_ports, wait_until
from tests.test_intake import key_of, make_access


def test_a_guard_restarts_a_loop_until_it_fails_too_often() -> None:
    gave_up: list[str] = []
    guard = ServingGuard("test", gave_up.append, max_restarts=3, window=60)
    for _ in range(3):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            assert guard.failed()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        assert not guard.failed()
    assert guard.restarts == 3 and gave_up == ["the test loop failed 4 times within 60 s"]


def test_the_intake_loop_is_restarted_after_a_failure_and_stops_the_node_when_it_keeps_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's own failures cannot be provoked from outside any more (every request is
    guarded), so this test makes the real intake's `handle` raise, as a bug would."""
    gave_up: list[str] = []
    server = Intake(
        f"tcp://127.0.0.1:{free_ports(1)[0]}",
        tmp_path / "journal.sqlite",
        {"product"},
        lambda: None,
        access=make_access(tmp_path / "keys"),
        on_give_up=gave_up.append,
    )
    server.start()
    real_handle = server.handle
    failures = {"left": 1}

    def failing_handle(frame: Any, user: str) -> Any:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("a bug in the loop")
        return real_handle(frame, user)

    monkeypatch.setattr(server, "handle", failing_handle)
    try:
        key = key_of(tmp_path / "keys", "local")
        with IntakeClient(
            server.address, timeout=2, retries=2, key=key
        ) as client:  # the first try is lost, the retry served
            assert client.submit([JobSpec("http://127.0.0.1/x", "product")])[0].status == "accepted"
        assert server.serving.restarts == 1 and not gave_up
        failures["left"] = MAX_SERVING_RESTARTS + 1
        with IntakeClient(server.address, timeout=0.5, retries=MAX_SERVING_RESTARTS, key=key) as client:
            with pytest.raises(IntakeUnavailable):
                client.counts()
        wait_until(lambda: bool(gave_up), timeout=10, what="the intake to give up")
        assert "the intake loop failed" in gave_up[0]
    finally:
        server.close()


def test_refusals_are_counted_exactly_and_logged_once_per_interval() -> None:
    refusals = Refusals(interval=3600)
    with structlog.testing.capture_logs() as logged:
        for _ in range(1000):
            refusals.refuse("intake", "malformed", "junk", event="intake.bad_request")
        refusals.refuse("shell", "malformed", "junk")
    assert refusals.counts[("intake", "malformed")] == 1000 and refusals.total() == 1001
    assert [(e["event"], e["count"]) for e in logged] == [("intake.bad_request", 1), ("refused", 1)]
    refusals.interval = 0
    with structlog.testing.capture_logs() as logged:
        refusals.refuse("intake", "malformed", "junk", event="intake.bad_request")
    assert [(e["count"], e["total"]) for e in logged] == [(1000, 1001)]  # the 999 not logged, and this one
