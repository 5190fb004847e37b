"""The intake socket with a real ZeroMQ client and a real SQLite journal."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from flotilla.actors import ActorSystem, ChildSpec, SupervisorSpec
from flotilla.actors.resilience.messages import HoldCommand, HoldMode, HoldStatus
from flotilla.nodes.intake.auth import ClientKey, IntakeAccess
from flotilla.nodes.intake.client import IntakeClient, IntakeError, IntakeRefused, IntakeUnavailable
from flotilla.nodes.intake.protocol import MAX_BATCH, JobSpec
from flotilla.nodes.intake.server import Intake
from flotilla.nodes.security.keys import CurveKeys, generate_keys, load_public, load_secret
from scripts.harness import free_ports
from tests.helpers import Block, Probe


def make_access(directory: Path, clients: tuple[str, ...] = ("alice", "bob")) -> IntakeAccess:
    """Real key pairs for the intake ("alpha"), the local user (an operator) and `clients`."""
    for name in ("alpha", "local", *clients):
        generate_keys(directory, name)
    public, secret = load_secret(directory, "alpha")
    roles = {"local": "operator", **{name: "client" for name in clients}}
    return IntakeAccess(CurveKeys(public, secret, {name: load_public(directory, name) for name in roles}), roles)  # type: ignore[arg-type]


def key_of(directory: Path, name: str) -> ClientKey:
    public, secret = load_secret(directory, name)
    return ClientKey(public, secret, load_public(directory, "alpha"))


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[tuple[Intake, list[int]]]:
    wakes: list[int] = []
    server = Intake(
        f"tcp://127.0.0.1:{free_ports(1)[0]}",
        tmp_path / "journal.sqlite",
        {"product"},
        lambda: wakes.append(1),
        access=make_access(tmp_path / "keys"),
    )
    server.start()
    yield server, wakes
    server.close()


@pytest.fixture
def client(intake: tuple[Intake, list[int]], tmp_path: Path) -> Iterator[IntakeClient]:
    with IntakeClient(intake[0].address, timeout=5, key=key_of(tmp_path / "keys", "local")) as c:
        yield c


def test_a_batch_is_acknowledged_job_by_job_once_on_disk(
    intake: tuple[Intake, list[int]], client: IntakeClient, tmp_path: Path
) -> None:
    acks = client.submit(
        [
            JobSpec("http://127.0.0.1:1/product/1", "product"),
            JobSpec("ftp://127.0.0.1/x", "product"),
            JobSpec("http://127.0.0.1:1/product/2", "nope"),
            JobSpec("", "product"),
            JobSpec("http://127.0.0.1:1/product/3", "product", key="mine-3"),
            JobSpec("http:///no-host", "product"),
        ]
    )
    assert [(a.index, a.status) for a in acks] == [
        (0, "accepted"),
        (1, "rejected"),
        (2, "rejected"),
        (3, "rejected"),
        (4, "accepted"),
        (5, "rejected"),
    ]
    assert acks[1].reason == "unsupported scheme 'ftp': only http and https"
    assert acks[2].reason == "unknown rules 'nope' (known: product)"
    assert acks[3].reason == "missing url"
    assert acks[4].key == "local:mine-3"  # every key is its client's
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 2
    db.close()
    assert intake[1] == [1]


def test_resubmitting_a_key_is_a_duplicate_and_does_no_work_twice(
    intake: tuple[Intake, list[int]], client: IntakeClient
) -> None:
    first = client.submit([JobSpec("http://Example.com:80/a#x", "product")])
    again = client.submit([JobSpec("http://example.com/a", "product")])
    assert first[0].status == "accepted" and again[0].status == "duplicate" and first[0].key == again[0].key
    assert client.counts().states["pending"] == 1
    assert intake[1] == [1]  # the router is woken only for new work


def test_queries_page_through_jobs_and_results(client: IntakeClient) -> None:
    for acks in client.submit_all(
        (JobSpec(f"http://127.0.0.1:1/product/{i}", "product") for i in range(2500)), batch=MAX_BATCH
    ):
        assert {a.status for a in acks} == {"accepted"}
    assert client.counts().states["pending"] == 2500
    assert len(list(client.all_jobs(state="pending"))) == 2500
    assert list(client.all_results()) == []
    keys = [job.key for job in client.jobs(limit=3)[0]]
    assert [j.state for j in client.status(keys + ["unknown"])] == ["pending"] * 3
    with pytest.raises(IntakeError, match="unknown state 'lost'"):
        client.jobs(state="lost")
    assert client.replay() == 0


def test_oversized_and_malformed_requests_get_an_error_and_the_intake_keeps_serving(
    intake: tuple[Intake, list[int]], client: IntakeClient, tmp_path: Path
) -> None:
    with pytest.raises(IntakeError, match="bad request"):
        client.submit([JobSpec("http://127.0.0.1/x", "product")] * (MAX_BATCH + 1))
    context = zmq.Context()
    raw = context.socket(zmq.DEALER)
    key = key_of(tmp_path / "keys", "local")
    raw.curve_publickey, raw.curve_secretkey, raw.curve_serverkey = key.public, key.secret, key.server
    raw.connect(intake[0].address)
    try:
        for frame in (b"\xc1", b"\x91" * 50_000, msgspec.msgpack.encode({"_type": "Submit", "id": 9, "jobs": "x"})):
            raw.send(frame)
            assert raw.poll(5000)
            answer = msgspec.msgpack.decode(raw.recv())
            assert answer["_type"] == "Error" and answer["reason"].startswith("bad request")
    finally:
        raw.close(0)
        context.term()
    assert client.submit([JobSpec("http://127.0.0.1/ok", "product")])[0].status == "accepted"


def test_a_client_with_no_intake_gives_up_with_a_clear_error() -> None:
    with IntakeClient(f"tcp://127.0.0.1:{free_ports(1)[0]}", timeout=0.2, retries=1) as client:
        with pytest.raises(IntakeUnavailable, match="no answer from tcp://127.0.0.1:.* after 2 tries"):
            client.counts()


def test_a_malformed_url_is_rejected_alone(client: IntakeClient) -> None:
    acks = client.submit(
        [
            JobSpec("http://[::1/x", "product"),
            JobSpec("http://127.0.0.1:99999/x", "product"),
            JobSpec("http://127.0.0.1/a b", "product"),
            JobSpec("http://127.0.0.1/fine", "product"),
        ]
    )
    assert [a.status for a in acks] == ["rejected", "rejected", "rejected", "accepted"]
    assert acks[0].reason.startswith("malformed url")


def test_a_retried_submission_gets_its_first_answer_again(intake: tuple[Intake, list[int]]) -> None:
    from flotilla.nodes.intake.protocol import Submit, Submitted, answer_decoder, encoder

    request = Submit(7, [JobSpec("http://127.0.0.1/retried", "product")], session="s1")
    first = answer_decoder.decode(encoder.encode(intake[0].handle(encoder.encode(request), "alice")))
    again = intake[0].handle(encoder.encode(request), "alice")  # the client lost the first answer
    assert isinstance(first, Submitted) and first.acks[0].status == "accepted"
    assert again.acks[0].status == "accepted"
    other = intake[0].handle(encoder.encode(Submit(8, request.jobs, session="s1")), "alice")
    assert other.acks[0].status == "duplicate"
    bob = intake[0].handle(encoder.encode(request), "bob")  # the same session and id: not alice's answer
    assert bob.acks[0].status == "accepted" and bob.acks[0].key.startswith("bob:")


def test_a_client_key_submits_and_reads_only_its_own_jobs(
    intake: tuple[Intake, list[int]], tmp_path: Path, client: IntakeClient
) -> None:
    address = intake[0].address
    with (
        IntakeClient(address, timeout=5, key=key_of(tmp_path / "keys", "alice")) as alice,
        IntakeClient(address, timeout=5, key=key_of(tmp_path / "keys", "bob")) as bob,
    ):
        mine = alice.submit([JobSpec("http://127.0.0.1:1/a", "product")])[0]
        theirs = bob.submit([JobSpec("http://127.0.0.1:1/b", "product")])[0]
        assert mine.key.startswith("alice:") and theirs.key.startswith("bob:")
        assert [j.key for j in alice.all_jobs()] == [mine.key]
        assert alice.status([theirs.key, mine.key])[0].key == mine.key and len(alice.status([theirs.key])) == 0
        assert alice.counts().states["pending"] == 1
    assert client.counts().states["pending"] == 2  # the local user is an operator: it sees every job


def test_a_client_key_cannot_force_hold_or_replay(
    intake: tuple[Intake, list[int]], tmp_path: Path, client: IntakeClient
) -> None:
    with IntakeClient(intake[0].address, timeout=5, key=key_of(tmp_path / "keys", "alice")) as alice:
        with pytest.raises(IntakeError, match="Hold needs an operator key; alice is a client"):
            alice.hold("on")
        with pytest.raises(IntakeError, match="Replay needs an operator key; alice is a client"):
            alice.replay()
    assert client.replay() == 0  # an operator may


def test_every_request_type_has_a_role_and_unlisted_ones_need_an_operator() -> None:
    import typing

    from flotilla.nodes.intake.protocol import REQUEST_ROLES, AnyRequest, Request, required_role

    assert set(REQUEST_ROLES) == set(typing.get_args(AnyRequest))

    class Future(Request, frozen=True, tag=True):
        """A request type added later and not yet given a role."""

    assert required_role(Future(1)) == "operator"


def test_a_squatted_key_does_not_capture_the_victims_url(intake: tuple[Intake, list[int]], tmp_path: Path) -> None:
    from flotilla.actors.pipeline.journal import natural_key

    victim_url = "http://127.0.0.1:1/victim"
    with (
        IntakeClient(intake[0].address, timeout=5, key=key_of(tmp_path / "keys", "alice")) as attacker,
        IntakeClient(intake[0].address, timeout=5, key=key_of(tmp_path / "keys", "bob")) as victim,
    ):
        squat = attacker.submit(
            [
                JobSpec("http://127.0.0.1:1/attacker", "product", key=natural_key(victim_url, "product")),
                JobSpec("http://127.0.0.1:1/attacker", "product", key=f"bob:{natural_key(victim_url, 'product')}"),
            ]
        )
        assert [a.status for a in squat] == ["accepted", "accepted"]
        ack = victim.submit([JobSpec(victim_url, "product")])[0]
        assert ack.status == "accepted" and ack.key == f"bob:{natural_key(victim_url, 'product')}"
        assert [(j.key, j.url) for j in victim.all_jobs()] == [(ack.key, victim_url)]


def test_an_unknown_key_or_no_key_is_refused_at_the_handshake_and_counted(
    intake: tuple[Intake, list[int]], tmp_path: Path
) -> None:
    generate_keys(tmp_path / "strangers", "mallory")
    public, secret = load_secret(tmp_path / "strangers", "mallory")
    stranger = ClientKey(public, secret, load_public(tmp_path / "keys", "alpha"))
    with IntakeClient(intake[0].address, timeout=10, key=stranger) as mallory:
        with pytest.raises(IntakeRefused, match="refused this client's key: it is not among the topology's clients"):
            mallory.submit([JobSpec("http://127.0.0.1:1/x", "product")])
    assert intake[0].auth.rejected == 1
    with IntakeClient(intake[0].address, timeout=10) as plaintext:
        with pytest.raises(IntakeRefused, match="refused a client without a CURVE key"):
            plaintext.counts()
    assert intake[0].journal.counts()["pending"] == 0


def test_a_url_with_credentials_is_rejected_and_not_stored(client: IntakeClient, tmp_path: Path) -> None:
    acks = client.submit(
        [
            JobSpec("http://user:secret@127.0.0.1:1/x", "product"),
            JobSpec("http://127.0.0.1:22082@169.254.169.254/", "product"),
        ]
    )
    assert {a.status for a in acks} == {"rejected"}
    assert all(a.reason.startswith("url carries credentials") for a in acks)
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    db.close()


def test_a_retry_after_an_intake_restart_is_answered_as_the_first_try_was(tmp_path: Path) -> None:
    from flotilla.nodes.intake.protocol import Submit, encoder

    address = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    request = Submit(
        3, [JobSpec("http://127.0.0.1/first", "product"), JobSpec("http://127.0.0.1/other", "product")], session="s9"
    )
    access = make_access(tmp_path / "keys")
    first = Intake(address, tmp_path / "journal.sqlite", {"product"}, lambda: None, access=access)
    first.start()
    try:
        first.handle(encoder.encode(Submit(1, [request.jobs[1]], session="someone-else")), "alice")
        first.handle(encoder.encode(request), "alice")  # accepted; the answer is lost with the restart
    finally:
        first.close()
    second = Intake(address, tmp_path / "journal.sqlite", {"product"}, lambda: None, access=access)
    second.start()
    try:
        again = second.handle(encoder.encode(request), "alice")
    finally:
        second.close()
    assert [a.status for a in again.acks] == ["accepted", "duplicate"]  # the other was someone else's


def test_a_submission_without_a_batch_gets_one_and_a_report_of_it(client: IntakeClient) -> None:
    acks = client.submit([JobSpec(f"http://127.0.0.1:1/product/{i}", "product") for i in range(3)])
    first = client.last_batch
    assert first and [a.status for a in acks] == ["accepted"] * 3
    client.submit([JobSpec("http://127.0.0.1:1/product/0", "product")])  # a duplicate, in a batch of its own
    assert client.last_batch != first
    report = client.batch(first)
    assert (report.total, report.states["pending"], report.done) == (3, 3, False)
    assert client.batch(client.last_batch).total == 1
    for batch in client.submit_all((JobSpec(f"http://127.0.0.1:1/p/{i}", "product") for i in range(5)), batch=2):
        assert len(batch) <= 2
    assert client.batch(client.last_batch).total == 5  # three requests, one batch
    with pytest.raises(IntakeError, match="no batch 'nope'"):
        client.batch("nope")


def test_a_story_of_an_unknown_job_is_an_error_and_a_long_one_keeps_its_first_and_latest_events(
    intake: tuple[Intake, list[int]], client: IntakeClient, tmp_path: Path
) -> None:
    import time

    from flotilla.actors.pipeline.journal import Journal
    from flotilla.nodes.intake.protocol import MAX_STORY_EVENTS

    with pytest.raises(IntakeError, match="no job with key 'nope'"):
        client.job("nope")
    key = client.submit([JobSpec("http://127.0.0.1:1/waits", "product")])[0].key
    writer = Journal(tmp_path / "journal.sqlite", durable=False)
    try:
        with writer.batch():
            for round_ in range(MAX_STORY_EVENTS):  # leased, then deferred: one event each round
                lease = writer.lease(1, 30)[0]
                writer.defer(key, lease.token, time.time() - 1, f"breaker open for 127.0.0.1:1 (round {round_})")
    finally:
        writer.close()
    story = client.job(key)
    assert len(story.events) == MAX_STORY_EVENTS and story.omitted == 1
    assert story.events[0].event == "submitted"
    assert story.events[-1].event == "deferred" and f"round {MAX_STORY_EVENTS - 1}" in story.events[-1].detail
    assert story.job.state == "pending" and story.result is None


def test_control_requests_are_audited_and_refused_when_the_audit_log_cannot_be_written(
    intake: tuple[Intake, list[int]], client: IntakeClient, tmp_path: Path
) -> None:
    import json

    keys = [a.key for a in client.submit([JobSpec(f"http://127.0.0.1:1/c/{i}", "product") for i in range(2)])]
    batch = client.last_batch
    with pytest.raises(IntakeError, match="cancel takes either keys or a batch"):
        client.cancel(keys[:1], batch=batch)
    assert client.cancel(batch=batch) == 2
    assert {(j.state, j.reason) for j in client.status(keys)} == {("dead", "cancelled by an operator")}
    with pytest.raises(IntakeError, match="this topology has no breakers"):
        client.reset_breaker("http://Example.com:80/x")
    audit = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(e["command"], e["args"], e["outcome"], e["via"]) for e in audit] == [
        ("cancel", [keys[0], "--batch", batch], "started", "intake"),
        ("cancel", [keys[0], "--batch", batch], "failed", "intake"),  # keys and a batch: refused
        ("cancel", ["--batch", batch], "started", "intake"),
        ("cancel", ["--batch", batch], "done", "intake"),
        ("breakers", ["reset", "http://Example.com:80/x"], "started", "intake"),
        ("breakers", ["reset", "http://Example.com:80/x"], "failed", "intake"),
    ]
    assert audit[-1]["error"] == "this topology has no breakers (resilience.breakers)"

    intake[0].audit_path = tmp_path  # a directory: the log cannot be written
    with pytest.raises(IntakeError, match="refused: the audit log cannot be written"):
        client.cancel(keys)
    assert client.replay(keys) == 2  # nothing was cancelled meanwhile; other requests are served


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://127.0.0.1:1/list?a=1&b=2", "http://127.0.0.1:1/list?b=2&a=1"),
        ("http://127.0.0.1:1/a%2fb", "http://127.0.0.1:1/a%2Fb"),
        ("http://bücher.example/katalog", "http://xn--bcher-kva.example/katalog"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com/a#reviews", "http://example.com/a#specs"),
    ],
)
def test_two_spellings_of_one_page_become_one_job(client: IntakeClient, first: str, second: str) -> None:
    acks = client.submit([JobSpec(first, "product")]) + client.submit([JobSpec(second, "product")])
    assert [a.status for a in acks] == ["accepted", "duplicate"]
    assert acks[0].key == acks[1].key
    assert client.counts().states["pending"] == 1
    assert [job.url for job in client.status([acks[0].key])] == [first]  # fetched as first written


def test_remembered_answers_are_bounded_and_an_older_retry_is_answered_from_the_journal(
    intake: tuple[Intake, list[int]],
) -> None:
    from flotilla.nodes.intake.protocol import Submit, encoder
    from flotilla.nodes.intake.server import REMEMBERED_ACKS

    server = intake[0]
    jobs = [JobSpec(f"http://127.0.0.1/bounded/{n}", "product") for n in range(MAX_BATCH - 1)] + [
        JobSpec("http://127.0.0.1/bounded/0", "product")  # the same page twice: a duplicate within the request
    ]
    first = server.handle(encoder.encode(Submit(1, jobs, session="s9")), "alice")
    for n in range(2, 2 + REMEMBERED_ACKS // MAX_BATCH + 1):  # enough to push the first answer out
        batch = [JobSpec(f"http://127.0.0.1/push/{n}/{k}", "product") for k in range(MAX_BATCH)]
        server.handle(encoder.encode(Submit(n, batch, session="s9")), "alice")
    assert server._remembered_acks <= REMEMBERED_ACKS  # noqa: SLF001 - the bound itself
    assert ("alice", "s9", 1) not in server._answers  # noqa: SLF001
    again = server.handle(encoder.encode(Submit(1, jobs, session="s9")), "alice")  # the first answer was lost
    assert [(a.key, a.status) for a in again.acks] == [(a.key, a.status) for a in first.acks]


def test_a_hold_waiting_on_a_slow_hold_monitor_holds_up_no_other_request(tmp_path: Path, system: ActorSystem) -> None:
    """The Hold monitor is busy (a real actor, blocked): an operator's `hold on` waits for
    it, while a submission on the same intake is answered at once."""
    system.start(SupervisorSpec("root", children=(ChildSpec("hold", Probe),)))
    busy = Block(threading.Event())
    system.ref("t/root/hold").tell(busy)
    assert busy.entered.wait(5)
    asking = threading.Event()

    def hold(mode: HoldMode | None) -> HoldStatus:
        if mode is None:
            return HoldStatus(on=False)
        asking.set()
        system.ask("t/root/hold", HoldCommand(mode), timeout=20)  # waits until the monitor is free
        return HoldStatus(on=mode == "on", mode=mode, reason="forced by an operator")

    keys = tmp_path / "keys"
    server = Intake(
        f"tcp://127.0.0.1:{free_ports(1)[0]}",
        tmp_path / "journal.sqlite",
        {"product"},
        lambda: None,
        hold,
        access=make_access(keys),
    )
    server.start()
    held: list[Any] = []
    operator = IntakeClient(server.address, timeout=20, key=key_of(keys, "local"))
    waiting = threading.Thread(target=lambda: held.append(operator.hold("on")))
    try:
        waiting.start()
        assert asking.wait(5)
        with IntakeClient(server.address, timeout=5, key=key_of(keys, "alice")) as alice:
            started = time.monotonic()
            acks = alice.submit([JobSpec("http://127.0.0.1:1/product/1", "product")])
            answered_in = time.monotonic() - started
            assert [a.status for a in acks] == ["accepted"]
            assert answered_in < 1.0, f"a submission waited {answered_in:.2f} s behind a Hold"
            assert alice.counts().states["pending"] == 1
        assert not held and waiting.is_alive()  # the Hold still waits for its monitor
        busy.release.set()
        waiting.join(20)
        assert not waiting.is_alive()
        assert held[0].on and held[0].mode == "on" and held[0].reason == "forced by an operator"
    finally:
        busy.release.set()
        waiting.join(20)
        operator.close()
        server.close()
