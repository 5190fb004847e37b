"""`flotilla up`'s life as scripts and log shippers see it: JSON lines, one launcher per data
directory, frozen nodes stopped promptly, `status`, `up --detach` and `wait-ready`.

Real `flotilla` subprocesses on a two-node topology with a demo tree; every process started
is stopped (the detached launcher by `down`, else killed).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from flotilla.actors import Actor, ActorSystem
from flotilla.nodes.cluster.membership import Cluster
from flotilla.nodes.config.topology import load_topology
from flotilla.nodes.runtime.ownership import TreeOwnership
from flotilla.nodes.runtime.readiness import ReadyFile
from scripts.harness import free_ports, wait_until
from tests.cluster_harness import write_topology
from tests.processes import ROOT, FlotillaProcess, _env, flotilla_command, run_flotilla

TREE = """
children:
  - {id: echo, actor: "tests.helpers:Probe"}
  - {id: chatty, actor: "tests.test_up_lifecycle:Chatty"}
  - {id: far, node: beta, supervisor: {children: [{id: echo, actor: "tests.helpers:Probe"}]}}
"""


class Chatty(Actor):
    """Prints a line that is no log event on stdout and one on stderr as it starts (as a
    library's warning or a traceback would)."""

    def on_start(self) -> None:
        print("chatty: plain words on stdout", flush=True)
        print("chatty: plain words on stderr", file=sys.stderr, flush=True)


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Path]:
    """The topology file; afterwards no `flotilla up` of it runs (a detached one is stopped)."""
    path = write_topology(tmp_path, TREE, nodes=("alpha", "beta"))
    yield path
    pid_file = tmp_path / "data" / "up.pid"
    if pid_file.exists():
        run_flotilla("down", "--topology", str(path), timeout=60)
    try:
        pid = int(pid_file.read_text(encoding="ascii"))
        os.kill(pid, signal.SIGKILL)  # still there: its nodes follow it (PDEATHSIG)
    except (OSError, ValueError):
        pass


@pytest.fixture
def processes() -> Iterator[list[FlotillaProcess]]:
    started: list[FlotillaProcess] = []
    yield started
    for process in started:
        process.kill()


def up(processes: list[FlotillaProcess], topology: Path, *args: str) -> FlotillaProcess:
    process = FlotillaProcess("up", "--topology", str(topology), *args)
    processes.append(process)
    return process


def status(topology: Path) -> dict[str, Any]:
    result = run_flotilla("status", "--json", "--topology", str(topology))
    answer = json.loads(result.stdout)
    assert (result.returncode == 0) == answer["running"], result
    return answer


def nodes_of(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["node"]: node for node in answer["nodes"]}


def test_every_line_of_up_is_a_json_object_through_start_output_crash_and_stop(
    topology: Path, processes: list[FlotillaProcess]
) -> None:
    launcher = up(processes, topology, "--log-format", "json")
    beta = launcher.wait_for_event("up.node_started", node="beta", start=1, timeout=30)
    launcher.wait_for_event("supervisor.child_started", node="alpha", child="alpha/root/far", timeout=30)
    os.kill(beta["pid"], signal.SIGKILL)
    launcher.wait_for_event("up.node_exited", node="beta", pid=beta["pid"], code=-9, level="warning")
    launcher.wait_for_event("up.node_started", node="beta", start=2)
    launcher.wait_for_event("supervisor.child_started", node="alpha", child="alpha/root/far", count=2, timeout=30)
    down = run_flotilla("down", "--topology", str(topology), timeout=60)
    assert down.returncode == 0, down.stderr
    assert launcher.wait(30) == 0

    events = [json.loads(line) for line in launcher.lines]  # every line, or this fails
    assert events and all(isinstance(event, dict) for event in events)
    assert all({"event", "level", "timestamp"} <= event.keys() for event in events), launcher.lines
    assert {e["node"] for e in events if e["event"] == "node.stopped"} == {"alpha", "beta"}
    ours = [e for e in events if e["event"].startswith("up.")]
    assert [e["event"] for e in ours][0] == "up.started" and ours[-1]["event"] == "up.stopped"
    assert ours[0]["pid"] == launcher.proc.pid
    assert [(e["node"], e["start"]) for e in ours if e["event"] == "up.node_started"] == [
        ("alpha", 1),
        ("beta", 1),
        ("beta", 2),
    ]
    assert [e["reason"] for e in ours if e["event"] == "up.stopping"] == ["SIGTERM"]
    assert sorted((e["node"], e["code"]) for e in ours if e["event"] == "up.node_stopped") == [
        ("alpha", 0),
        ("beta", 0),
    ]
    wrapped = [(e["node"], e["line"]) for e in events if e["event"] == "node.output"]
    assert ("alpha", "chatty: plain words on stdout") in wrapped
    assert ("alpha", "chatty: plain words on stderr") in wrapped


def test_a_second_up_is_refused_with_the_first_ones_pid_and_down_still_stops_the_first(
    topology: Path, processes: list[FlotillaProcess]
) -> None:
    first = up(processes, topology, "--log-format", "json")
    first.wait_for_event("node.started", node="alpha", timeout=30)
    pid_file = topology.parent / "data" / "up.pid"

    for extra in ((), ("--detach",)):
        second = run_flotilla("up", "--topology", str(topology), "--log-format", "json", *extra)
        assert second.returncode == 1, second
        assert f"'flotilla up' is already running for this data directory (pid {first.proc.pid}" in second.stderr
        assert "up.node_started" not in second.stdout
        assert first.proc.poll() is None
        assert pid_file.read_text(encoding="ascii").strip() == str(first.proc.pid)
    assert status(topology)["launcher"] == first.proc.pid
    assert len([e for e in first.events() if e["event"] == "up.node_started"]) == 2

    down = run_flotilla("down", "--topology", str(topology), timeout=60)
    assert down.returncode == 0, down.stderr
    assert f"'flotilla up' (pid {first.proc.pid}) stopped every node" in down.stdout
    assert first.wait(30) == 0
    assert not pid_file.exists()
    assert "Traceback" not in "\n".join(first.lines)
    again = run_flotilla("down", "--topology", str(topology))
    assert again.returncode == 1
    assert "no cluster running for" in again.stderr and "start it with flotilla up" in again.stderr


def test_a_stale_pid_file_is_taken_over_and_a_removed_one_does_not_break_the_stop(
    topology: Path, processes: list[FlotillaProcess]
) -> None:
    pid_file = topology.parent / "data" / "up.pid"
    pid_file.parent.mkdir(mode=0o700)
    pid_file.write_text("999999999\n", encoding="ascii")  # left by a launcher killed with SIGKILL
    assert status(topology) == {"running": False}
    launcher = up(processes, topology, "--log-format", "json")
    assert launcher.wait_for_event("up.started")["pid"] == launcher.proc.pid
    assert pid_file.read_text(encoding="ascii").strip() == str(launcher.proc.pid)
    launcher.wait_for_event("node.started", node="alpha", timeout=30)
    pid_file.unlink()  # removed by hand while it runs
    launcher.signal(signal.SIGTERM)
    assert launcher.wait(60) == 0
    assert launcher.events()[-1]["event"] == "up.stopped"
    assert "Traceback" not in "\n".join(launcher.lines)


def test_down_continues_a_frozen_node_before_asking_it_to_stop(
    topology: Path, processes: list[FlotillaProcess]
) -> None:
    launcher = up(processes, topology, "--log-format", "json")
    beta = launcher.wait_for_event("up.node_started", node="beta")["pid"]
    ready = run_flotilla("wait-ready", "--topology", str(topology), "--timeout", "60", timeout=90)
    assert ready.returncode == 0, ready.stderr
    os.kill(beta, signal.SIGSTOP)
    try:
        wait_until(lambda: nodes_of(status(topology))["beta"]["state"] == "stopped", 10, "beta seen stopped")
        not_ready = run_flotilla("wait-ready", "--topology", str(topology), "--timeout", "0.5")
        assert not_ready.returncode == 4
        assert "not ready after 0.5 s: beta (stopped)" in not_ready.stderr
        began = time.monotonic()
        down = run_flotilla("down", "--topology", str(topology), timeout=60)
        took = time.monotonic() - began
    finally:
        try:
            os.kill(beta, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert down.returncode == 0, down.stderr
    assert took < 10, f"down took {took:.1f} s"
    assert launcher.wait(30) == 0
    assert launcher.wait_for_event("up.node_stopped", node="beta", pid=beta)["code"] == 0
    assert not [e for e in launcher.events() if e["event"] == "up.node_killed"]


def test_status_and_wait_ready_before_during_and_after_a_detached_up(topology: Path) -> None:
    data = topology.parent / "data"
    began = time.monotonic()
    before = run_flotilla("status", "--topology", str(topology))
    took = time.monotonic() - began
    assert before.returncode == 1
    assert before.stderr.strip() == (
        f"no cluster running for {topology} (no 'flotilla up' holds {data / 'up.pid'}): start it with flotilla up"
    )
    assert took < 5, f"status took {took:.1f} s with no cluster"  # it reads files only
    assert run_flotilla("wait-ready", "--topology", str(topology)).returncode == 1

    detached = run_flotilla("up", "--detach", "--topology", str(topology), timeout=90)
    assert detached.returncode == 0, detached.stderr
    launcher = int(detached.stdout.split("pid ")[1].split(",")[0])
    assert detached.stdout.strip() == f"flotilla up running in the background: pid {launcher}, log {data / 'up.log'}"
    assert stat.S_IMODE((data / "up.log").stat().st_mode) == 0o600
    assert status(topology)["launcher"] == launcher

    ready = run_flotilla("wait-ready", "--topology", str(topology), "--timeout", "60", timeout=90)
    assert ready.returncode == 0, ready.stderr
    assert ready.stdout.strip() == "every node ready: alpha (root), beta (host)"
    answer = status(topology)
    nodes = nodes_of(answer)
    assert answer["ready"] and answer["launcher"] == launcher
    assert [(n["ready"], n["role"], n["restarts"]) for n in nodes.values()] == [(True, "root", 0), (True, "host", 0)]
    for node in nodes.values():
        os.kill(node["pid"], 0)  # alive
        assert json.loads((data / node["node"] / "ready").read_text(encoding="utf-8"))["pid"] == node["pid"]
    text = run_flotilla("status", "--topology", str(topology))
    assert text.returncode == 0
    assert f"flotilla up (pid {launcher}) runs {topology} since " in text.stdout
    assert "2 of 2 nodes ready" in text.stdout and "yes (root)" in text.stdout

    os.kill(nodes["beta"]["pid"], signal.SIGKILL)  # the launcher starts it again
    wait_until(
        lambda: nodes_of(status(topology))["beta"]["restarts"] == 1, timeout=30, what="beta started again, counted"
    )
    ready = run_flotilla("wait-ready", "--topology", str(topology), "--timeout", "60", timeout=90)
    assert ready.returncode == 0, ready.stderr
    assert nodes_of(status(topology))["beta"]["pid"] != nodes["beta"]["pid"]

    down = run_flotilla("down", "--topology", str(topology), timeout=60)
    assert down.returncode == 0, down.stderr
    assert status(topology) == {"running": False}
    assert not (data / "up.state").exists() and not (data / "alpha" / "ready").exists()
    log = (data / "up.log").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in log]
    assert events[0]["event"] == "up.started" and events[-1]["event"] == "up.stopped"


def test_console_lines_under_up_keep_their_colour_on_a_terminal(topology: Path) -> None:
    terminal = pexpect.spawn(
        flotilla_command()[0],
        [*flotilla_command()[1:], "up", "--topology", str(topology), "--log-format", "console"],
        cwd=str(ROOT),
        env=_env(),
        encoding="utf-8",
        codec_errors="replace",
        timeout=60,
    )
    try:
        started = [rf"\[{node}\] [^\r\n]*\x1b\[[0-9;]*m[^\r\n]*node\.started" for node in ("alpha", "beta")]
        seen = {terminal.expect(started), terminal.expect(started)}  # in either order
        assert seen == {0, 1}
        terminal.kill(signal.SIGTERM)
        terminal.expect(r"\[up\] every node stopped")
        terminal.expect(pexpect.EOF)
    finally:
        terminal.close(force=True)
    assert terminal.exitstatus == 0


class ScriptedLeases:
    """Answers every claim with `token` (None: another node holds the lease)."""

    def __init__(self) -> None:
        self.token: int | None = None

    def claim(self, name: str, holder: str, ttl: float) -> int | None:
        return self.token

    def release(self, name: str, holder: str, token: int) -> bool:
        return True

    def close(self) -> None:
        pass


def test_a_failover_candidates_ready_file_says_standby_or_owner_as_the_lease_goes(tmp_path: Path) -> None:
    ports = free_ports(2)
    path = tmp_path / "t.yaml"
    path.write_text(
        f"""
nodes:
  alpha: {{address: "tcp://127.0.0.1:{ports[0]}"}}
  gamma: {{address: "tcp://127.0.0.1:{ports[1]}"}}
failover: {{candidates: [alpha, gamma], lease: 1.0}}
journal: postgresql://flotilla@127.0.0.1:{ports[1]}/never  # failover needs one; the leases here are the test's
tree: {{children: [{{id: a, actor: tally}}]}}
""",
        encoding="utf-8",
    )
    topology = load_topology(path)
    system = ActorSystem("alpha")
    cluster = Cluster(topology, "alpha", system)
    cluster.start()
    ready = ReadyFile(tmp_path / "ready")
    leases = ScriptedLeases()
    heard: list[str] = []

    def on_role(role: str) -> None:
        heard.append(role)
        ready.role(role)

    ownership = TreeOwnership(topology, "alpha", system, cluster, leases, on_failure=print, on_role=on_role)

    def role() -> str | None:
        found = json.loads(ready.path.read_text(encoding="utf-8")) if ready.path.exists() else None
        assert found is None or found["pid"] == os.getpid()
        return found["role"] if found else None

    try:
        ownership.start()
        wait_until(lambda: ownership.token == 0 and leases.token is None, 5, "a refused claim")
        assert role() is None  # not written before the node serves
        ready.serving()
        wait_until(lambda: role() == "standby", 5, "standby: another node holds the lease")
        leases.token = 4
        wait_until(lambda: role() == "owner", 10, "owner once the tree has started")
        assert system.ref("alpha/root/a").is_alive()
        leases.token = None
        wait_until(lambda: role() == "standby", 10, "standby again after stepping down")
        assert not system.ref("alpha/root/a").is_alive()
        ready.clear()
        leases.token = 5
        wait_until(lambda: heard[-1] == "owner", 10, "the tree started again")
        assert role() is None  # a stopping node's file stays gone
    finally:
        ownership.close()
        cluster.close()
        system.stop(timeout=5)
