"""What the shell shows people and what alerts say, against a real node process driven through
`flotilla shell --exec` (as people and scripts run it): help printed as written (no usage
swallowed as rich markup), durations and UTC times for people while `--json` keeps the raw
numbers, trace rows named by their message's class, `logs` without the shell's own audit
events unless asked, an operator's restart counted in the tree and in the node's scraped
`flotilla_restarts_total` but not against its supervisor's intensity, an open breaker showing
the failure rate that opened it, and each alert logged once, at its severity, in words that
match the state (read from the node's own JSON log lines)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flotilla.actors.core.human import human_duration, human_time
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, write_topology
from tests.processes import ROOT, flotilla_command

TREE = """
children:
  - id: alerts
    actor: alerts
  - id: breakers
    pool: {actor: breakers, size: 2, args: {alerts: alpha/root/alerts, open_base: 60}}
  - id: limiter
    actor: limiter
    args: {default_rate: 200}
  - id: hold
    actor: hold
    args: {alerts: alpha/root/alerts}
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetchers, transient_base: 30, visibility: 20}
  - id: extractors
    pool: {actor: extractor, size: 1}
  - id: fetchers
    pool: {actor: fetcher, size: 2, args: {extractor: alpha/root/extractors}}
  - id: steady
    supervisor:
      intensity: 1
      period: 60
      children:
        - {id: worker, actor: tally}
  - id: tally
    actor: tally
  - id: ticker
    actor: ticker
    args: {target: alpha/root/tally, interval: 0.05}
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
resilience: {breakers: alpha/root/breakers, limiter: alpha/root/limiter, hold: alpha/root/hold}
"""

HUMAN_DURATION = r"(\d+ µs|\d+ ms|\d\.\ds|\d+s|\d+m \d\ds|\d+h \d\dm|\d+d \d\dh)"
UTC_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{3})? UTC"


class Node:
    """The running node, its metrics port and its topology file."""

    def __init__(self, cluster: LiveCluster, metrics_port: int) -> None:
        self.cluster = cluster
        self.metrics_port = metrics_port
        self.topology = str(cluster.topology_path)

    def run(self, command: str, *options: str) -> subprocess.CompletedProcess[str]:
        """`flotilla shell --exec COMMAND`, as wide as a terminal of 300 columns."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
        env.pop("FLOTILLA_TOPOLOGY", None)
        return subprocess.run(
            flotilla_command("shell", "--topology", self.topology, "--exec", command, *options),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=env,
            check=False,
        )

    def shown(self, command: str) -> str:
        """What a person sees for `command`."""
        done = self.run(command)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def data(self, command: str) -> Any:
        """The raw answer a script gets for `command` (`--json`)."""
        done = self.run(command, "--json")
        answer = json.loads(done.stdout)
        assert done.returncode == 0 and answer["ok"], done.stdout + done.stderr
        return answer["data"]

    def events(self, name: str) -> list[dict[str, Any]]:
        """The node's own JSON log lines for event `name`."""
        return [e for e in self.cluster.processes["alpha"].events() if e.get("event") == name]

    def metrics(self) -> dict[str, list]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {family.name: family.samples for family in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node with an intake, the resilience actors and a small pipeline; stopped after the
    last test of this module."""
    directory = tmp_path_factory.mktemp("details")
    metrics_port, intake_port = free_ports(2)
    path = write_topology(directory, TREE, nodes=("alpha",), extra=EXTRA % intake_port)
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("  alpha: {address: ", f"  alpha: {{metrics: '127.0.0.1:{metrics_port}', address: "),
        encoding="utf-8",
    )
    cluster = LiveCluster(path, load_topology(path))
    try:
        cluster.start_node("alpha").wait_for_event("intake.listening", timeout=30)
        cluster.processes["alpha"].wait_for_event("shell.listening", timeout=30)
        yield Node(cluster, metrics_port)
    finally:
        cluster.stop()


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (0.00004, "40 µs"),
        (0.35, "350 ms"),
        (4.24, "4.2s"),
        (42.4, "42s"),
        (192.3, "3m 12s"),
        (352.0, "5m 52s"),
        (7500, "2h 05m"),
        (273600, "3d 04h"),
    ],
)
def test_durations_read_in_one_or_two_units(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_times_read_in_utc() -> None:
    assert human_time(1796189467.25) == "2026-12-02 05:31:07 UTC"
    assert human_time(1796189467.25, precise=True) == "2026-12-02 05:31:07.250 UTC"


def test_help_shows_every_usage_as_written(node: Node) -> None:
    shown = node.shown("help")
    assert "hold [on|off|auto] — the fleet's Hold" in shown
    assert "logs [N] [--audit]" in shown and "tree [PATH]" in shown


def test_uptimes_read_as_durations_and_scripts_keep_seconds(node: Node) -> None:
    rows = {row["path"]: row for row in node.data("tree")}
    assert isinstance(rows["alpha/root/tally"]["uptime"], float)
    lines = node.shown("tree").splitlines()
    header = next(line for line in lines if "uptime" in line)
    column = [cell.strip() for cell in re.split(r"[│┃]", header)].index("uptime")
    row = next(line for line in lines if re.search(r"\balpha/root/tally\b", line))
    assert re.fullmatch(HUMAN_DURATION, [cell.strip() for cell in row.split("│")][column]), row


def test_trace_rows_name_their_message(node: Node) -> None:
    traced = node.data("trace alpha/root/ticker 0.5")
    assert traced and {m["summary"] for m in traced} == {"_Tick"}  # a plain object: its class
    assert isinstance(traced[0]["at"], float)
    shown = node.shown("trace alpha/root/ticker 0.5")
    assert "_Tick" in shown and "object at 0x" not in shown
    assert re.search(UTC_TIME, shown) and re.search(HUMAN_DURATION, shown)


def test_logs_leave_out_the_shells_own_audit_events_unless_asked(node: Node) -> None:
    for _ in range(3):
        assert node.data("nodes")
    wait_until(lambda: len(node.events("shell.command")) >= 6, timeout=10, what="the commands logged")
    last = node.data("logs 5")
    assert len(last) == 5 and not [e for e in last if e["event"] == "shell.command"]
    everything = node.data("logs 2000 --audit")
    assert [e for e in everything if e["event"] == "shell.command" and e["command"] == "nodes"]
    assert not [e for e in node.data("logs 2000") if e["event"] == "shell.command"]
    assert re.search(UTC_TIME, node.shown("logs 3"))  # the log's ISO timestamps, for people
    refused = node.run("logs 5 --everything", "--json")
    assert refused.returncode == 1 and "usage: logs [N] [--audit]" in json.loads(refused.stdout)["error"]


def test_an_operator_restart_is_counted_but_not_against_the_intensity(node: Node) -> None:
    """The supervisor allows one restart a minute; three operator restarts in a row leave it
    running, each counted in the tree and in the node's restart metric."""

    def worker() -> dict[str, Any]:
        return next(r for r in node.data("tree alpha/root/steady") if r["path"] == "alpha/root/steady/worker")

    before = worker()
    for _ in range(3):
        assert node.data("restart alpha/root/steady/worker") == "alpha/root/steady/worker restarted"
    after = worker()
    assert after["restarts"] == before["restarts"] + 3 and after["status"] == "running"
    steady = node.data("inspect alpha/root/steady")
    assert steady["state"]["recent_restarts"] == 0 and steady["incarnation"] == 1  # it never gave up
    restarts = {
        (s.labels["supervisor"], s.labels["child"]): s.value
        for s in node.metrics()["flotilla_restarts"]
        if s.name == "flotilla_restarts_total"
    }
    assert restarts[("alpha/root/steady", "alpha/root/steady/worker")] == before["restarts"] + 3
    assert not node.events("supervisor.gave_up")


def test_hold_shows_since_when_and_its_alerts_are_logged_once_at_their_level(node: Node) -> None:
    try:
        held = node.data("hold on")
        assert held["on"] is True and isinstance(held["since"], float)
        assert re.search(rf'"since": "{UTC_TIME}"', node.shown("hold"))
        assert node.data("hold off")["on"] is False
    finally:
        node.data("hold auto")
    wait_until(lambda: len(node.events("alert")) >= 2, timeout=10, what="both Hold alerts logged")
    entered = [e for e in node.events("alert") if e["title"] == "fleet in Hold: fresh fetches paused"]
    left = [e for e in node.events("alert") if e["title"] == "fleet out of Hold: fetching resumed"]
    assert [e["level"] for e in entered] == ["critical"] and entered[0]["source"] == "alpha/root/hold"
    assert [e["level"] for e in left] == ["info"]
    assert re.fullmatch(rf"forced off by an operator; held for {HUMAN_DURATION}", left[0]["detail"])
    assert not node.events("alert.raised")


def test_an_open_breaker_shows_the_failure_rate_that_opened_it(node: Node) -> None:
    site = DemoSiteProcess()
    try:
        site.switch(503)
        target = site.url.removeprefix("http://")
        with IntakeClient.for_topology(node.cluster.topology) as client:
            client.submit([JobSpec(f"{site.url}/switch/{n}", "product") for n in range(20)])
        wait_until(lambda: node.data("breakers"), timeout=30, what="the target's breaker to open")
        [row] = node.data("breakers")
        assert (row["target"], row["state"], row["opened_at_rate"]) == (target, "open", 1.0)
        assert row["reason"].startswith("100% of the last")
        shown = node.shown("breakers")
        line = next(line for line in shown.splitlines() if target in line)
        assert re.search(rf"│ open\s+│ {HUMAN_DURATION}\s+│", line) and "│ 1.0 " in line, line
        wait_until(lambda: node.events("alert"), timeout=10, what="the alert")
        opened = [e for e in node.events("alert") if e["title"] == f"breaker open: {target}"]
        assert [e["level"] for e in opened] == ["warning"], opened
        assert re.fullmatch(
            r"100% of the last \d+ calls failed(; last: .*)?; open for 1m \d\ds; trial calls after that",
            opened[0]["detail"],
        ), opened[0]["detail"]
        assert not node.events("alert.raised")
    finally:
        site.stop()


def test_dlq_in_the_shell_covers_what_flotilla_dlq_covers_and_refuses_an_unknown_key(node: Node) -> None:
    assert node.data("dlq list") == [] and node.data("dlq list --parked") == [] and node.data("dlq list --all") == []
    unknown = node.run("dlq replay no-such-key", "--json")
    assert unknown.returncode == 1, unknown.stdout
    assert "no-such-key (no such job)" in json.loads(unknown.stdout)["error"]
    assert node.data("dlq replay --parked") == {"replayed": 0}
    bad = node.run("dlq list --everything", "--json")
    assert bad.returncode == 1 and "usage: dlq list [--parked|--all]" in json.loads(bad.stdout)["error"]
