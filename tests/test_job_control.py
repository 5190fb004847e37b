"""A job's story, knowing when a batch is done, and steering jobs and breakers — through the
CLI, the shell and the client, against real node processes, a real journal and the real demo
site (one cluster for the module; each test uses pages and targets of its own)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.actors.resilience.gate import shard_of
from flotilla.actors.resilience.messages import BreakerCommand
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import DemoSiteProcess, free_ports, wait_until
from tests.cluster_harness import LiveCluster, make_cluster
from tests.processes import FlotillaProcess, run_flotilla

TREE = """
children:
  - id: alerts
    actor: alerts
  - id: breakers
    pool: {actor: breakers, size: 2, args: {alerts: alpha/root/alerts, open_base: 120, open_cap: 120}}
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_in_flight: 100, max_attempts: 3,
           transient_base: 0.05, transient_cap: 0.2, blocked_delay: 0.1, visibility: 5}
  - id: fetching
    node: beta
    supervisor:
      children:
        - id: extractors
          pool: {actor: extractor, size: 2}
        - id: fetchers
          pool: {actor: fetcher, size: 2, args: {extractor: alpha/root/fetching/extractors, timeout: 5.0}}
"""

EXTRA = """
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
      price: {css: .price, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
resilience: {breakers: alpha/root/breakers}
"""


class Site(DemoSiteProcess):
    """The demo site on its main port (a target) and on three more ports (three more targets:
    tests that open a breaker, by hand or by drift, use one of their own)."""

    def __init__(self) -> None:
        self.targets = [f"127.0.0.1:{port}" for port in free_ports(3)]
        super().__init__(
            "--flaky-failures", "1", *[a for t in self.targets for a in ("--extra-port", t.rpartition(":")[2])]
        )


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    process = Site()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCluster]:
    live = make_cluster(
        tmp_path_factory.mktemp("cluster"), TREE, nodes=("alpha", "beta", "tester"), extra=EXTRA % free_ports(1)[0]
    )
    try:
        live.start_node("beta")
        live.start_node("alpha").wait_for_event("intake.listening", timeout=30)
        live.join("tester")
        live.wait_up("alpha", "beta")
        yield live
    finally:
        live.stop()


def flotilla(cluster: LiveCluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_flotilla(*args, "--topology", str(cluster.topology_path), timeout=timeout)


def client(cluster: LiveCluster) -> IntakeClient:
    assert cluster.topology.intakes
    return IntakeClient.for_topology(cluster.topology)


def trip(cluster: LiveCluster, target: str) -> None:
    """Open `target`'s breaker as an operator would (the shard that owns it, asked directly)."""
    assert cluster.system is not None
    shard = shard_of(target, 2)
    status = cluster.system.ask(f"alpha/root/breakers/{shard}", BreakerCommand(target, "trip"), timeout=5)
    assert status.state == "open"


def submitted_lines(stdout: str) -> list[list[str]]:
    return [
        line.split() for line in stdout.splitlines() if line.split()[:1] in (["accepted"], ["duplicate"], ["rejected"])
    ]


def test_submit_wait_ends_0_when_every_job_is_stored_and_job_tells_a_retried_pages_story(
    cluster: LiveCluster, site: Site
) -> None:
    urls = [f"{site.url}/flaky/1", *(f"{site.url}/product/{n}" for n in range(1, 6))]
    result = flotilla(cluster, "submit", *urls, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = submitted_lines(result.stdout)
    assert [(words[0], words[2]) for words in lines] == [("accepted", url) for url in urls]
    keys = [words[1] for words in lines]
    assert "6 jobs: 6 accepted, 0 duplicates, 0 rejected; batch " in result.stdout
    assert "all finished in" in result.stdout
    summary = {words[0]: words[-1] for words in (line.split() for line in result.stdout.splitlines()) if words}
    assert summary["stored"] == "6" and summary["dead"] == "0" and summary["parked"] == "0"
    assert summary["retries"] == "1" and float(summary["pages/s"]) > 0

    story = flotilla(cluster, "job", keys[0])
    assert story.returncode == 0, story.stderr
    text = story.stdout
    assert f"job {keys[0]}" in text and f"url      {urls[0]}" in text and "state    stored after 2 attempts" in text
    events = [line.split()[3] for line in text.split("events:\n")[1].split("result:")[0].splitlines()]
    assert events[0] == "submitted" and events[-1] == "stored"
    assert "TRANSIENT: HTTP 503" in text and "#2" in text
    assert "result: stored" in text and '"title": "Product 1"' in text

    by_url = flotilla(cluster, "job", urls[0], "--json")
    assert by_url.returncode == 0, by_url.stderr
    story_json = json.loads(by_url.stdout)
    assert story_json["job"]["key"] == keys[0] and story_json["result"]["fields"]["title"] == "Product 1"
    failed = [e for e in story_json["events"] if "HTTP 503" in e["detail"]]
    assert failed and failed[0]["attempt"] == 1

    shell = flotilla(cluster, "shell", "--exec", f"job {urls[0]}", "--json")
    assert json.loads(shell.stdout)["data"]["job"]["state"] == "stored", shell.stdout + shell.stderr
    with client(cluster) as intake:
        assert intake.job(keys[1]).job.url == urls[1]


def test_submit_jsonl_prints_one_object_per_job_and_the_summary_on_stderr(cluster: LiveCluster, site: Site) -> None:
    urls = [f"{site.url}/product/20", f"{site.url}/product/21", "ftp://nowhere/x", f"{site.url}/product/20#again"]
    result = flotilla(cluster, "submit", *urls, "--jsonl")
    assert result.returncode == 3, result.stderr  # one rejected
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["status"], r["url"]) for r in rows] == [
        ("accepted", urls[0]),
        ("accepted", urls[1]),
        ("rejected", urls[2]),
        ("duplicate", urls[3]),
    ]
    assert rows[0]["key"] == rows[3]["key"] and len({r["batch"] for r in rows}) == 1
    assert "unsupported scheme 'ftp'" in rows[2]["reason"]
    assert "4 jobs: 2 accepted, 1 duplicates, 1 rejected; batch " + rows[0]["batch"] in result.stderr


def test_submit_wait_ends_3_with_a_summary_naming_the_404(cluster: LiveCluster, site: Site) -> None:
    urls = [
        f"{site.url}/product/30",
        f"{site.url}/gone/31",
        f"{site.url}/gone/32",
        f"http://{site.targets[2]}/drift/33",
    ]
    result = flotilla(cluster, "submit", *urls, "--wait")
    assert result.returncode == 3, result.stdout + result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[lines.index(next(line for line in lines if line.startswith("stored")))].split()[-1] == "1"
    dead = next(line for line in lines if line.startswith("dead") and line.split()[-1] == "2")
    assert lines[lines.index(dead) + 1].startswith("HARD: HTTP 404") and lines[lines.index(dead) + 1].endswith(" 2")
    assert any(line.startswith("DRIFT: missing required fields") for line in lines)


def test_wait_from_another_terminal_follows_a_batch_until_it_is_done(cluster: LiveCluster, site: Site) -> None:
    urls = [f"{site.url}/slow/{n}?ms=400" for n in range(40, 50)]
    submitted = flotilla(cluster, "submit", *urls, "--jsonl")
    batch = json.loads(submitted.stdout.splitlines()[0])["batch"]
    waiting = FlotillaProcess("wait", batch, "--topology", str(cluster.topology_path))
    try:
        waiting.wait_for_event_line(f"^batch {batch}: 10 jobs, all finished in", timeout=60)
        assert waiting.wait(10) == 0, "\n".join(waiting.lines)
    finally:
        waiting.kill()
    assert any(line.startswith(f"batch {batch}: ") and "/10 finished" in line for line in waiting.lines)
    assert any(line.startswith(f"batch {batch}: 10 jobs, all finished in") for line in waiting.lines)
    unknown = flotilla(cluster, "wait", "nosuchbatch")
    assert unknown.returncode == 1 and "no batch 'nosuchbatch'" in unknown.stderr


def test_wait_on_a_terminal_shows_a_live_progress_bar(cluster: LiveCluster, site: Site) -> None:
    import os
    import pty
    import select
    import time

    from tests.processes import ROOT, _env, flotilla_command

    urls = [f"{site.url}/slow/{n}?ms=300" for n in range(80, 86)]
    batch = json.loads(flotilla(cluster, "submit", *urls, "--jsonl").stdout.splitlines()[0])["batch"]
    terminal, stderr = pty.openpty()  # stderr is a terminal: rich draws the bar there
    proc = subprocess.Popen(
        flotilla_command("wait", batch, "--topology", str(cluster.topology_path)),
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=ROOT,
        env=_env(),
        text=True,
    )
    os.close(stderr)
    drawn = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.5)[0]:
                try:
                    chunk = os.read(terminal, 65536)
                except OSError:  # the process closed its end
                    break
                if not chunk:
                    break
                drawn += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(terminal)
    assert proc.returncode == 0, drawn.decode(errors="replace")
    text = drawn.decode(errors="replace")
    assert "━" in text and "6/6" in text and f"batch {batch[:12]}" in text
    assert f"batch {batch}: 6 jobs, all finished in" in out


def test_cancel_ends_waiting_jobs_dead_and_a_timed_out_wait_says_what_still_waits(
    cluster: LiveCluster, site: Site
) -> None:
    target = site.targets[0]
    trip(cluster, target)
    urls = [f"http://{target}/product/{n}" for n in range(60, 66)]
    submitted = flotilla(cluster, "submit", *urls, "--jsonl")
    rows = [json.loads(line) for line in submitted.stdout.splitlines()]
    keys, batch = [r["key"] for r in rows], rows[0]["batch"]
    with client(cluster) as intake:
        wait_until(
            lambda: all("breaker open" in (j.reason or "") for j in intake.status(keys)),
            timeout=20,
            what="the jobs to wait behind the open breaker",
        )
        timed_out = flotilla(cluster, "wait", batch, "--timeout", "0.5")
        assert timed_out.returncode == 4, timed_out.stdout + timed_out.stderr
        assert "timed out after 0.5 s; still waiting: 6 pending" in timed_out.stderr

        two = flotilla(cluster, "cancel", keys[0], keys[1])
        assert two.returncode == 0 and two.stdout.startswith("2 jobs cancelled"), two.stdout + two.stderr
        rest = flotilla(cluster, "shell", "--exec", f"cancel --batch {batch}", "--json")
        assert json.loads(rest.stdout)["data"] == {"cancelled": 4}, rest.stdout
        states = {j.key: (j.state, j.reason) for j in intake.status(keys)}
        assert set(states.values()) == {("dead", "cancelled by an operator")}

        done = flotilla(cluster, "wait", batch)
        assert done.returncode == 3 and "cancelled by an operator" in done.stdout, done.stdout
        story = flotilla(cluster, "job", keys[0])
        assert "cancelled by an operator" in story.stdout
        assert flotilla(cluster, "cancel", keys[0]).stdout.startswith("0 jobs cancelled")  # already finished
    usage = flotilla(cluster, "cancel")
    assert usage.returncode == 2 and "cancel takes job keys or --batch BATCH" in usage.stderr
    audit = [
        json.loads(line) for line in (cluster.topology.node_data_dir("alpha") / "audit.log").read_text().splitlines()
    ]
    assert {"command": "cancel", "args": [keys[0], keys[1]], "outcome": "done", "via": "intake"}.items() <= next(
        e for e in audit if e.get("via") == "intake" and e["outcome"] == "done"
    ).items()


def test_breakers_reset_through_the_cli_closes_a_tripped_breaker(cluster: LiveCluster, site: Site) -> None:
    target = site.targets[1]
    trip(cluster, target)  # open for 120 s
    shown = json.loads(flotilla(cluster, "shell", "--exec", "breakers", "--json").stdout)["data"]
    assert (target, "open") in [(r["target"], r["state"]) for r in shown]
    with client(cluster) as intake:
        keys = [
            a.key for a in intake.submit([JobSpec(f"http://{target}/product/{n}", "product") for n in range(70, 74)])
        ]
        wait_until(
            lambda: all("breaker open" in (j.reason or "") for j in intake.status(keys)),
            timeout=20,
            what="the jobs to wait behind the open breaker",
        )

        reset = flotilla(cluster, "breakers", "reset", f"http://{target}/anything")
        assert reset.returncode == 0, reset.stderr
        assert reset.stdout.strip() == f"breaker of {target} reset: closed (it was open)"
        shown = json.loads(flotilla(cluster, "shell", "--exec", "breakers", "--json").stdout)["data"]
        assert target not in [r["target"] for r in shown]
        # they go now, not when the 120 s would have ended
        wait_until(
            lambda: {j.state for j in intake.status(keys)} == {"stored"},
            timeout=20,
            what="the waiting jobs to be stored once the breaker is reset",
        )

    trip(cluster, target)
    again = flotilla(cluster, "shell", "--exec", f"breakers reset {target}", "--json")
    assert json.loads(again.stdout)["data"] == {"target": target, "state": "closed", "was": "open", "reason": ""}
    closed = flotilla(cluster, "breakers", "reset", target)
    assert closed.stdout.strip() == f"breaker of {target} reset: closed (it was not open)"
    audit = (cluster.topology.node_data_dir("alpha") / "audit.log").read_text()
    assert f'"command": "breakers", "args": ["reset", "{target}"], "outcome": "done"' in audit


def test_submit_needs_rules_only_when_the_topology_has_several(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    node_port, intake_port = free_ports(2)
    path.write_text(
        f"nodes: {{a: {{address: 'tcp://127.0.0.1:{node_port}'}}}}\n"
        "rules: {product: {fields: {t: {css: h1}}}, article: {fields: {t: {css: h2}}}}\n"
        f"intake: {{node: a, address: 'tcp://127.0.0.1:{intake_port}', router: a/root/router}}\n"
        "tree: {children: [{id: router, actor: router, args: {fetchers: a/root/f}}, {id: x, actor: extractor},\n"
        "                  {id: f, pool: {actor: fetcher, args: {extractor: a/root/x}}}]}\n",
        encoding="utf-8",
    )
    result = run_flotilla("submit", "http://example.com/a", "--topology", str(path))
    assert result.returncode == 2
    assert "the topology has 2 rule sets (article, product): choose one with --rules" in result.stderr
    by_url = run_flotilla("job", "http://example.com/a", "--topology", str(path))
    assert by_url.returncode == 2 and "choose one with --rules" in by_url.stderr
