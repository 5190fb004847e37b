"""A job's story, knowing when a batch is done, and steering jobs and breakers — through the
CLI, the shell and the client, against real node processes, a real journal and the real demo
site (one cluster for the module; each test uses pages and targets of its own)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
      tags: {css: li.tag, all: true}
      description: {css: p.description}
      url: {css: nav a, attr: href}
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


# --- outputs: results as CSV, exports ---------------------------------------------------------


def stored_results(cluster: LiveCluster) -> list[dict[str, Any]]:
    listed = flotilla(cluster, "results")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def test_results_as_csv_have_a_column_per_field_and_iso_times(cluster: LiveCluster, site: Site) -> None:
    """Product pages have a description and no nav link; the prose page has a nav link (the
    field `url`, named like a fixed column) and no `p.description`."""
    import csv
    import io
    import time
    from datetime import UTC, datetime

    urls = [f"{site.url}/product/{n}" for n in range(100, 103)] + [f"{site.url}/prose/103"]
    submitted = flotilla(cluster, "submit", *urls, "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    by_key = {r["key"]: r for r in stored_results(cluster)}
    for record in by_key.values():  # JSON lines: the same shape, stored_at an ISO 8601 UTC time
        assert set(record) == {
            "key", "url", "rules", "fields", "content_hash", "attempts", "stored_at", "revision", "extracted_at"
        }  # fmt: skip
        assert datetime.fromisoformat(record["stored_at"]).tzinfo == UTC and record["stored_at"].endswith("Z")
        assert record["extracted_at"] == record["stored_at"] and record["revision"] == 0  # never re-extracted

    table = flotilla(cluster, "results", "--format", "csv")
    assert table.returncode == 0, table.stderr
    rows = list(csv.reader(io.StringIO(table.stdout)))
    assert rows[0] == [
        "key", "url", "rules", "description", "price", "tags", "title", "fields.url",
        "content_hash", "attempts", "stored_at", "revision", "extracted_at",
    ]  # fmt: skip
    assert len(rows) == 1 + len(by_key)
    cells = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    for key, record in by_key.items():
        row, fields = cells[key], record["fields"]
        assert (row["url"], row["rules"], row["content_hash"]) == (record["url"], "product", record["content_hash"])
        assert (row["title"], row["price"]) == (fields["title"], fields["price"])
        assert (json.loads(row["tags"]) if row["tags"] else None) == fields.get("tags")  # a list: JSON
        assert row["attempts"] == str(record["attempts"])
        assert row["description"] == fields.get("description", "") and row["fields.url"] == fields.get("url", "")
        stored = datetime.fromisoformat(row["stored_at"])
        assert row["stored_at"] == record["stored_at"] and abs(stored.timestamp() - time.time()) < 3600
        assert (row["revision"], row["extracted_at"]) == ("0", record["extracted_at"])
    prose = next(r for r in by_key.values() if r["url"] == urls[3])
    # the page's relative href="/" is stored absolute (urljoin is on for href by default)
    assert cells[prose["key"]]["fields.url"] == f"{site.url}/" and cells[prose["key"]]["description"] == ""
    product = next(r for r in by_key.values() if r["url"] == urls[0])
    assert cells[product["key"]]["fields.url"] == "" and cells[product["key"]]["title"] == "Product 100"
    assert json.loads(cells[product["key"]]["tags"])[0] == "tools"


def exported(directory: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The export files in `directory` (by name) and every record in them, in order."""
    names = sorted(p.name for p in directory.glob("results-*.jsonl"))
    records = [json.loads(line) for name in names for line in (directory / name).read_text().splitlines()]
    return names, records


def wait_settled(cluster: LiveCluster, seconds: float = 1.0) -> None:
    """Until every stored result was stored more than `seconds` ago (an export takes it then)."""
    with client(cluster) as intake:
        newest = max(r.stored_at for r in intake.all_results())
    wait_until(lambda: time.time() > newest + seconds + 0.01, timeout=10, what="the results to settle")


def test_export_writes_rotating_files_and_each_run_only_what_is_new(
    cluster: LiveCluster, site: Site, tmp_path: Path
) -> None:
    first = flotilla(cluster, "submit", *(f"{site.url}/product/{n}" for n in range(110, 122)), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    out = tmp_path / "feed"
    wait_settled(cluster)
    run = flotilla(cluster, "export", "--output", str(out), "--max-lines", "5", "--settle", "1")
    assert run.returncode == 0, run.stderr
    before = stored_results(cluster)
    names, records = exported(out)
    assert len(names) == -(-len(before) // 5) and names[0] == "results-000001.jsonl"
    assert [len((out / n).read_text().splitlines()) for n in names[:-1]] == [5] * (len(names) - 1)
    assert sorted(r["key"] for r in records) == sorted(r["key"] for r in before)
    assert [(r["stored_at"], r["key"]) for r in records] == sorted((r["stored_at"], r["key"]) for r in records)
    assert run.stdout.strip() == (
        f"{len(before)} new results exported to {out} ({', '.join(names)}); {len(before)} in all"
    )

    again = flotilla(cluster, "export", "--output", str(out), "--max-lines", "5", "--settle", "1")
    assert again.stdout.strip() == f"0 new results exported to {out}; {len(before)} in all"
    assert exported(out)[0] == names

    second = flotilla(cluster, "submit", *(f"{site.url}/product/{n}" for n in range(122, 125)), "--wait")
    assert second.returncode == 0, second.stdout + second.stderr
    wait_settled(cluster)
    third = flotilla(cluster, "export", "--output", str(out), "--max-lines", "5", "--settle", "1")
    assert third.returncode == 0, third.stderr
    after_names, after = exported(out)
    new_keys = {r["key"] for r in stored_results(cluster)} - {r["key"] for r in before}
    assert len(new_keys) == 3
    assert after_names == [*names, f"results-{len(names) + 1:06d}.jsonl"]
    assert {r["key"] for r in after[len(records) :]} == new_keys
    assert len({r["key"] for r in after}) == len(after)  # nothing twice

    other = flotilla(cluster, "export", "--output", str(out), "--format", "csv")
    assert other.returncode == 2 and f"{out} holds an export as jsonl" in other.stderr
    as_csv = flotilla(cluster, "export", "--output", str(tmp_path / "csv"), "--format", "csv", "--settle", "1")
    assert as_csv.returncode == 0, as_csv.stderr
    table = (tmp_path / "csv" / "results-000001.csv").read_text().splitlines()
    assert table[0].startswith("key,url,rules,description,price,tags,title,") and len(table) == 1 + len(after)
    assert not list((tmp_path / "csv").glob(".results-*")) and not list(out.glob(".results-*"))


def test_an_export_killed_mid_way_resumes_with_nothing_lost_or_twice(
    cluster: LiveCluster, site: Site, tmp_path: Path
) -> None:
    import signal

    submitted = flotilla(cluster, "submit", *(f"{site.url}/product/{n}" for n in range(130, 160)), "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    everything = sorted(r["key"] for r in stored_results(cluster))
    wait_settled(cluster)
    out = tmp_path / "feed"
    options = ["--output", str(out), "--max-lines", "2", "--settle", "1", "--topology", str(cluster.topology_path)]
    export = FlotillaProcess("export", *options, "--page", "1")  # a request per result: a slow export
    try:
        wait_until(lambda: (out / "results-000002.jsonl").exists(), timeout=30, what="the export's second file")
        export.signal(signal.SIGKILL)
        assert export.wait(10) == -signal.SIGKILL  # killed mid-way, not finished
    finally:
        export.kill()
    names, partial = exported(out)
    assert 4 <= len(partial) < len(everything)
    resumed = run_flotilla("export", *options, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    names, records = exported(out)
    assert sorted(r["key"] for r in records) == everything  # each result once, none lost
    assert not list(out.glob(".results-*")), "the killed run's temporary file is gone"
    state = json.loads((out / ".flotilla-export.json").read_text())
    assert state["exported"] == len(everything) and state["next_file"] == len(names) + 1


# --- dead letters ---------------------------------------------------------------------------


def keys_listed(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def test_dlq_list_and_replay_cover_the_same_jobs_and_a_bad_key_replays_nothing(
    cluster: LiveCluster, site: Site
) -> None:
    urls = [f"{site.url}/gone/170", f"{site.url}/gone/171", f"http://{site.targets[2]}/drift/172"]
    submitted = flotilla(cluster, "submit", *urls, "--wait", "--jsonl")
    assert submitted.returncode == 3, submitted.stdout + submitted.stderr
    gone, _, drifted = [json.loads(line)["key"] for line in submitted.stdout.splitlines() if line.startswith("{")]
    with client(cluster) as intake:
        wait_until(
            lambda: not any(intake.counts().states[s] for s in ("pending", "fetching", "extracting", "retrying")),
            timeout=30,
            what="every job of the cluster to be finished",
        )
        dead = keys_listed(flotilla(cluster, "dlq", "list").stdout)
        parked = keys_listed(flotilla(cluster, "dlq", "list", "--parked").stdout)
        assert sorted(dead) == sorted(keys_listed(flotilla(cluster, "jobs", "--state", "dead").stdout)[1:])
        assert sorted(parked) == sorted(keys_listed(flotilla(cluster, "jobs", "--state", "parked").stdout)[1:])
        assert gone in dead and drifted in parked and drifted not in dead
        both = flotilla(cluster, "dlq", "list", "--all").stdout.splitlines()
        assert [line.split()[:2] for line in both] == [[k, "dead"] for k in dead] + [[k, "parked"] for k in parked]

        for keys, wrong in (
            ([drifted], f"{drifted} (parked)"),
            (["no-such-key"], "no-such-key (no such job)"),
            ([gone, "no-such-key"], "no-such-key (no such job)"),
        ):
            refused = flotilla(cluster, "dlq", "replay", *keys)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert refused.stderr.strip() == f"nothing replayed: not dead: {wrong}"
        assert {j.key: j.state for j in intake.status([gone, drifted])} == {gone: "dead", drifted: "parked"}
        as_parked = flotilla(cluster, "dlq", "replay", "--parked", gone)
        assert as_parked.returncode == 1 and as_parked.stderr.strip() == f"nothing replayed: not parked: {gone} (dead)"

        replayed = flotilla(cluster, "dlq", "replay")
        assert replayed.stdout.strip() == f"{len(dead)} job{'s' if len(dead) != 1 else ''} back to pending"
        assert intake.status([drifted])[0].state == "parked"  # parked jobs only with --parked
        replayed_parked = flotilla(cluster, "dlq", "replay", "--parked", drifted)
        assert replayed_parked.returncode == 0 and replayed_parked.stdout.strip() == "1 job back to pending"


# --- pipes that close early ---------------------------------------------------------------


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_output_into_a_pipe_closed_early_ends_without_a_traceback(
    cluster: LiveCluster, site: Site, tmp_path: Path, reader: str
) -> None:
    """`| true` closes the pipe before the first line is written (the write fails for sure);
    `| head -1` after the first line."""
    import shlex

    from tests.processes import ROOT, _env, flotilla_command

    stored = flotilla(cluster, "submit", *(f"{site.url}/product/{n}" for n in range(185, 188)), "--wait")
    assert stored.returncode == 0, stored.stdout + stored.stderr  # results to list, whatever ran before
    topology = ["--topology", str(cluster.topology_path)]
    for command in (
        ["results"],
        ["results", "--format", "csv"],
        ["jobs", "--state", "stored"],
        ["submit", *(f"{site.url}/product/{n}" for n in range(180, 184))],
        ["jobs"],
    ):
        line = shlex.join(flotilla_command(*command, *topology))
        script = f"{line} 2>{tmp_path}/stderr | {reader}; echo ${{PIPESTATUS[0]}}"
        ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60)
        status = int(ran.stdout.splitlines()[-1])
        stderr = (tmp_path / "stderr").read_text()
        assert "Traceback" not in stderr and "Error" not in stderr, (command, stderr)
        assert status in (0, 141) if reader == "head -1" else status == 141, (command, status, stderr)


def test_an_export_killed_around_renaming_a_file_neither_repeats_nor_loses_a_line(
    cluster: LiveCluster, site: Site, tmp_path: Path
) -> None:
    """A run killed after recording a file as pending: the next run accepts the file if it was
    renamed into place (a reader may have taken it) and writes it if it was not."""
    submitted = flotilla(cluster, "submit", *(f"{site.url}/product/{n}" for n in range(160, 167)), "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    wait_settled(cluster)
    whole = tmp_path / "whole"
    assert flotilla(cluster, "export", "--output", str(whole), "--max-lines", "3", "--settle", "1").returncode == 0
    names, records = exported(whole)
    with client(cluster) as intake:
        in_order = list(intake.results_since(settle=1.0))
    assert [r.key for r in in_order] == [r["key"] for r in records] and len(names) >= 2
    last = names[-1]
    before_last = len(records) - len((whole / last).read_text().splitlines())
    killed_state = {
        "format": "jsonl",
        "rules": None,
        "stored_at": in_order[before_last - 1].stored_at,
        "key": in_order[before_last - 1].key,
        "next_file": len(names),
        "exported": before_last,
        "pending": {
            "file": last,
            "stored_at": in_order[-1].stored_at,
            "key": in_order[-1].key,
            "lines": len(records) - before_last,
        },
    }
    for renamed in (True, False):
        out = tmp_path / f"renamed-{renamed}"
        out.mkdir()
        for name in names if renamed else names[:-1]:
            shutil.copy(whole / name, out / name)
        (out / ".flotilla-export.json").write_text(json.dumps(killed_state))
        if renamed:
            (out / f".{last}.spool.part").write_text("what the spool held\n")  # not yet unlinked either
        run = flotilla(cluster, "export", "--output", str(out), "--max-lines", "3", "--settle", "1")
        assert run.returncode == 0, run.stderr
        assert exported(out) == (names, records), renamed  # each line once, none lost
        assert not list(out.glob(".results-*"))
        state = json.loads((out / ".flotilla-export.json").read_text())
        assert (state["exported"], state["next_file"], state["pending"]) == (len(records), len(names) + 1, None)
        assert (state["stored_at"], state["key"]) == (in_order[-1].stored_at, in_order[-1].key)


def test_an_export_state_file_of_unknown_shape_is_refused_by_name(cluster: LiveCluster, tmp_path: Path) -> None:
    for text in ('{"format": "jsonl", "rules": null, "shards": 3}', '{"rules": null}', "[]", "{not json"):
        (tmp_path / ".flotilla-export.json").write_text(text)
        run = flotilla(cluster, "export", "--output", str(tmp_path))
        assert run.returncode == 2 and str(tmp_path / ".flotilla-export.json") in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
    unknown = flotilla(cluster, "export", "--output", str(tmp_path / "new"), "--settle", "0.5")
    assert unknown.returncode == 2 and "--settle at least 1" in unknown.stderr


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_quoted_unless_raw_csv() -> None:
    import csv
    import io

    from flotilla.nodes.cli.results import write_csv

    hostile = ['=HYPERLINK("http://evil")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    record = {
        "key": "k",
        "url": "http://127.0.0.1/=x",
        "rules": "product",
        "fields": {f"f{n}": text for n, text in enumerate(hostile)} | {"price": -5, "plain": "a=b", "tags": ["=x"]},
        "content_hash": "h",
        "attempts": 1,
        "stored_at": "2026-01-01T00:00:00Z",
        "revision": 0,
        "extracted_at": "2026-01-01T00:00:00Z",
    }
    safe, raw = io.StringIO(), io.StringIO()
    assert write_csv([record], safe) == 1 and write_csv([record], raw, raw=True) == 1
    safe_row, raw_row = (dict(zip(*csv.reader(io.StringIO(out.getvalue())), strict=True)) for out in (safe, raw))
    for n, text in enumerate(hostile):
        assert (safe_row[f"f{n}"], raw_row[f"f{n}"]) == ("'" + text, text)
    for column, value in (("price", "-5"), ("plain", "a=b"), ("tags", '["=x"]'), ("url", "http://127.0.0.1/=x")):
        assert safe_row[column] == raw_row[column] == value  # numbers, JSON and other text as they are
    assert safe_row["attempts"] == "1" and safe_row["stored_at"] == "2026-01-01T00:00:00Z"
