"""The intake socket: where clients submit jobs and ask about them (docs/intake.md).

A ROUTER socket on the node the topology names, served by its own thread with its own
journal connection (`durable`: a job is acknowledged only once its row is on disk). Each job
of a batch is judged by itself: a bad one (no URL, a scheme other than http or https, an
unknown rule set, a bad key) is rejected with its reason, and the others go on; a key seen
before is acknowledged as a duplicate and changes nothing. After accepting new jobs the
intake wakes the router. While the fleet is in Hold, results are still served, marked stale.
Every submission belongs to a batch (the client's id, or one the intake makes), whose progress
`BatchStatus` reports; `History` tells one job's story. A `Hold` that sets the fleet's mode
asks the Hold monitor on a worker thread and is answered when it replies: the intake's own
thread goes on serving meanwhile. The control requests (`Cancel`,
`BreakerReset`) are written to the node's audit log before they run and after, like shell
commands, and refused if the log cannot be written.

`Reextract` (an operator's, audited like the control requests) applies the intake node's
rules — as its topology stood when it started — to the captured pages of stored results (the
topology's `captures` directory, which this node must reach: actors/pipeline/captures.py), in a
parse sandbox of its own with the extractors' default time budget; it fetches nothing
(relative URLs in fields are joined to the URL the page came from after redirects, as when it
was first extracted). Re-extractions run one at a time on a thread of their own (never on the
control threads: a long one does not hold up a Hold), and one request takes new results only
for `REEXTRACT_BUDGET` seconds, answering with what it did so far (the client asks again for
the rest). A result is updated only when its fields change, once per key
(`Journal.reextracted`), and the answer is remembered for a client that sends the request
again (a retry waits for the first answer without holding a thread).

The socket is a CURVE server: only the keys of `IntakeAccess` get through its handshake, and
each request is answered as the name of its key (the ZAP User-Id), within that name's role
(nodes/intake/auth.py). Every job is recorded with its client, under the key
``<client>:<key>``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
import zmq

from flotilla.actors.pipeline.captures import CaptureDamaged, CaptureMissing, PageStore
from flotilla.actors.pipeline.credentials import CredentialSeal, has_userinfo, redact
from flotilla.actors.pipeline.journal import STATES, Journal, NewJob, NotReplayable, StoredPage
from flotilla.actors.pipeline.parse_sandbox import ParseSandbox, Unparseable
from flotilla.actors.pipeline.rules import Blocked, Drift, RuleSet
from flotilla.actors.pipeline.urls import canonical_url, natural_key
from flotilla.actors.resilience.messages import BreakerStatus, HoldMode, HoldStatus
from flotilla.actors.resilience.view import target_of
from flotilla.nodes.intake.auth import IntakeAccess, IntakeGuard
from flotilla.nodes.intake.protocol import (
    MAX_KEY_CHARS,
    MAX_PAGE,
    MAX_REQUEST_BYTES,
    MAX_STORY_EVENTS,
    MAX_URL_CHARS,
    QUEUED_REQUESTS,
    Ack,
    Answer,
    BatchInfo,
    BatchStatus,
    BreakerInfo,
    BreakerReset,
    Cancel,
    Cancelled,
    CountList,
    Counts,
    Error,
    History,
    Hold,
    HoldInfo,
    JobEventInfo,
    JobInfo,
    JobList,
    Jobs,
    JobSpec,
    JobStory,
    KeyReextracted,
    Reextract,
    Reextracted,
    Replay,
    Replayed,
    ResultInfo,
    ResultList,
    Results,
    Status,
    Submit,
    Submitted,
    encoder,
    request_decoder,
)
from flotilla.nodes.security.audit import audit_entry
from flotilla.nodes.serving.refusals import refusals
from flotilla.nodes.serving.request_id import request_id
from flotilla.nodes.serving.router_server import Endpoint, Later, RouterServer

_log = structlog.get_logger("flotilla.intake")

REMEMBERED_ANSWERS = 1024
"""Answers to recent submissions kept for clients that retry (by session and request id)."""
REMEMBERED_ACKS = 20_000
"""Most acknowledgements kept in those answers, in all (about 4 MB): a retry of an older
request is answered from the journal instead, which knows what the same request recorded."""
CONTROL_THREADS = 2
"""Threads that run the requests which ask an actor (a `Hold` that sets the mode); more such
requests wait for one of them, while every other request is served at once."""
REEXTRACT_BUDGET = 3.0
"""Seconds one `Reextract` goes on taking results (the one in progress is finished, its parse
bounded by the sandbox's time limit): its answer comes well within a client's timeout."""


def check_job(job: JobSpec, rule_sets: set[str], credential_rules: AbstractSet[str] = frozenset()) -> str | None:
    """Why `job` cannot be accepted, or None. Only rule sets in `credential_rules` accept a
    URL with user info."""
    if not job.url:
        return "missing url"
    if len(job.url) > MAX_URL_CHARS:
        return f"url longer than {MAX_URL_CHARS} characters"
    try:
        parts = urlsplit(job.url)
        port = parts.port  # raises ValueError for a port out of range
        canonical_url(job.url)
    except ValueError as exc:
        return f"malformed url: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"unsupported scheme {parts.scheme or '(none)'!r}: only http and https"
    if not parts.hostname:
        return "url has no host"
    if (parts.username is not None or parts.password is not None) and job.rules not in credential_rules:
        return (
            f"url carries credentials (user:password@): rule set {job.rules!r} does not accept them "
            "(credentials: true), so they are not sent to the site nor kept"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in job.url):
        return "url contains spaces or control characters"
    del port
    if job.rules not in rule_sets:
        known = ", ".join(sorted(rule_sets)) or "none"
        return f"unknown rules {job.rules!r} (known: {known})"
    if job.key is not None and not (0 < len(job.key) <= MAX_KEY_CHARS and job.key.isprintable()):
        return f"key must be 1 to {MAX_KEY_CHARS} printable characters"
    return None


class Intake:
    """Serves the intake socket on its own thread."""

    def __init__(
        self,
        address: str,
        journal: Path | Journal,
        rule_sets: set[str],
        wake_router: Callable[[], None],
        hold: Callable[[HoldMode | None], HoldStatus | None] = lambda _mode: None,
        *,
        access: IntakeAccess,
        seal: CredentialSeal | None = None,
        credential_rules: AbstractSet[str] = frozenset(),
        reset_breaker: Callable[[str], tuple[str, BreakerStatus] | None] = lambda _target: None,
        audit_path: Path | None = None,
        node: str = "",
        on_give_up: Callable[[str], None] = lambda _reason: None,
        rules: Mapping[str, RuleSet] | None = None,
        pages: PageStore | None = None,
    ) -> None:
        """`hold(mode)` sets the fleet's Hold (None: leaves it) and returns its status, or
        None when the topology has no Hold. `access`: the keys let in, and their roles.
        `credential_rules`: the rule sets whose URLs may carry credentials, which `seal`
        seals before they are written. `reset_breaker(target)` closes a target's breaker
        and returns how it stood before and its status now, or None when the topology has no
        breakers. `journal`: an open journal (the intake closes it), or a SQLite file to open.
        Control requests are audited in `audit_path` (default: beside a SQLite journal).
        `on_give_up(reason)` is called if the serving loop keeps failing (`flotilla.nodes.serving.guard`):
        the node stops. `rules` and `pages`: the rule sets and the page store `Reextract`
        uses (without them it is refused)."""
        self.address = address
        self.access = access
        self.seal = seal
        self.credential_rules = credential_rules if seal is not None else frozenset()
        self._hold = hold
        self._reset_breaker = reset_breaker
        if audit_path is None and not isinstance(journal, Path):
            raise ValueError("an intake on an open journal needs its audit_path")
        self.audit_path = audit_path or Path(str(journal)).parent / "audit.log"
        self.node = node
        self.rule_sets = rule_sets
        self._wake_router = wake_router
        self.journal = journal if isinstance(journal, Journal) else Journal(journal, durable=True)
        context = zmq.Context()
        self.auth = IntakeGuard(context, access)
        self.server = RouterServer(
            "intake",
            context,
            [Endpoint(address, curve=access.keys)],
            self._answer,
            max_request_bytes=MAX_REQUEST_BYTES,
            listening_for="clients",
            queued=QUEUED_REQUESTS,
            authenticator=self.auth,
            on_give_up=on_give_up,
        )
        self.serving = self.server.guard
        self._control = ThreadPoolExecutor(CONTROL_THREADS, thread_name_prefix="intake control")
        """Where requests that ask an actor (and may wait for it) run, off the serving thread."""
        self._reextracting = ThreadPoolExecutor(1, thread_name_prefix="intake reextract")
        """Where `Reextract`s run, one at a time (more wait in its queue, not on a control thread)."""
        self._answers: OrderedDict[tuple[str, str, int], Submitted] = OrderedDict()
        self._remembered_acks = 0
        self.rules = dict(rules or {})
        self.pages = pages
        self._sandbox = ParseSandbox()
        """Where `Reextract` parses pages (one worker process, started when first needed)."""
        self._sandbox_lock = threading.Lock()
        self._reextracted: OrderedDict[tuple[str, str, int], Future[bytes]] = OrderedDict()
        """Answers to recent `Reextract`s (by user, session and request id), for retries."""
        self._reextracted_lock = threading.Lock()

    def _remember(self, request: tuple[str, str, int], answer: Submitted) -> None:
        """Keep `answer` for a retry of `request`, forgetting the oldest answers beyond
        `REMEMBERED_ANSWERS` answers or `REMEMBERED_ACKS` acknowledgements."""
        self._answers[request] = answer
        self._remembered_acks += len(answer.acks)
        while len(self._answers) > REMEMBERED_ANSWERS or self._remembered_acks > REMEMBERED_ACKS:
            _, forgotten = self._answers.popitem(last=False)
            self._remembered_acks -= len(forgotten.acks)

    @property
    def served(self) -> int:
        """Requests answered so far."""
        return self.server.served

    def start(self) -> None:
        """Serve on a thread of its own; raises `OSError` if the address cannot be bound."""
        self.server.start()

    def close(self) -> None:
        self.server.close()
        self._control.shutdown(wait=False, cancel_futures=True)
        self._reextracting.shutdown(wait=False, cancel_futures=True)
        with self._sandbox_lock:
            self._sandbox.close()
        self.journal.close()

    def _answer(self, frame: zmq.Frame, _endpoint: int) -> bytes | Later:
        """The answer frame to one request frame, as the name of the client's key (a `Later`
        for a request answered from a worker thread)."""
        answer = self.handle(frame.buffer, str(frame.get("User-Id")))
        return answer if isinstance(answer, Later) else _encode(answer)

    def handle(self, frame: bytes | memoryview, user: str) -> Answer | Later:
        """The answer to one request frame from `user` (the name of the peer's key, which the
        audit log names), or for a `Hold` that sets the mode (or a `Reextract`) a `Later` that
        gets the encoded answer once the Hold monitor replied (or the re-extraction ended).
        Never raises: a frame that does not decode is refused (counted, logged once per
        interval) and answered with its id if it has one; a request beyond the user's role is
        refused."""
        try:
            request = request_decoder.decode(frame)
        except Exception as exc:  # noqa: BLE001 - msgspec's DecodeError, bad UTF-8, nesting...
            refusals.refuse("intake", "malformed", str(exc), event="intake.bad_request")
            return Error(id=request_id(frame), reason=f"bad request: {str(exc)[:200]}")
        refusal = self.access.refusal(user, request)
        if refusal is not None:
            refusals.refuse("intake", "role", refusal, event="intake.refused")
            return Error(request.id, refusal)
        if isinstance(request, (Cancel, BreakerReset)):
            return self._audited(request, user)
        if isinstance(request, Reextract):
            return self._reextract_once(request, user)
        if isinstance(request, Hold) and request.mode is not None:
            return self._off_thread(request, lambda: self._hold_info(request))
        try:
            return self._dispatch(request, user, self.access.scope(user))
        except Exception as exc:  # noqa: BLE001 - a failed request must not stop the intake
            refusals.refuse(
                "intake", "failed", f"{type(exc).__name__}: {exc}", event="intake.request_failed", exc_info=True
            )
            return Error(id=request.id, reason=f"{type(exc).__name__}: {str(exc)[:500]}")

    def _audited(self, request: Cancel | BreakerReset | Reextract, operator: str) -> Answer:
        """Run a control request with an audit entry before (refused if it cannot be
        written) and one with its outcome after."""
        if isinstance(request, Cancel):
            command = "cancel"
            args = list(request.keys or []) + (["--batch", request.batch] if request.batch is not None else [])
        elif isinstance(request, Reextract):
            command = "reextract"
            args = ["--rules", request.rules, *(request.keys or ["--after", request.after])]
        else:
            command, args = "breakers", ["reset", request.target]
        try:
            self._audit(operator, command, args, "started")
        except OSError as exc:
            _log.error("intake.audit_failed", path=str(self.audit_path), error=str(exc))
            return Error(request.id, f"refused: the audit log cannot be written ({exc})")
        try:
            answer = self._dispatch(request, operator, None)
        except Exception as exc:  # noqa: BLE001 - a failed request must not stop the intake
            _log.exception("intake.request_failed")
            answer = Error(request.id, f"{type(exc).__name__}: {exc}")
        if isinstance(answer, Error):
            self._audit(operator, command, args, "failed", answer.reason)
        else:
            self._audit(operator, command, args, "done")
        return answer

    def _audit(self, operator: str, command: str, args: list[str], outcome: str, error: str = "") -> None:
        """One JSON line in the node's audit log (the shell's format, with ``via: intake``)."""
        entry = audit_entry(
            self.audit_path,
            {
                "node": self.node,
                "operator": operator,
                "via": "intake",
                "command": command,
                "args": args[:20] + ([f"... {len(args) - 20} more"] if len(args) > 20 else []),
                "outcome": outcome,
                **({"error": error} if error else {}),
            },
            failed_event="intake.audit_failed",
        )
        _log.info("intake.command", **entry)

    def _dispatch(self, request: Any, user: str, scope: str | None) -> Answer:
        """Answer `request` from `user`; queries see only `scope`'s jobs (None: all)."""
        limit = max(1, min(MAX_PAGE, getattr(request, "limit", MAX_PAGE)))
        match request:
            case Submit(jobs=jobs, session=session, batch=batch):
                remembered = self._answers.get((user, session, request.id)) if session else None
                if remembered is not None:
                    return remembered  # a retry of a request whose answer was lost
                origin = f"{user}:{session}:{request.id}" if session else ""
                answer = self._submit(request.id, jobs, user, origin, batch or origin or uuid.uuid4().hex)
                if session:
                    self._remember((user, session, request.id), answer)
                return answer
            case Status(keys=keys):
                rows = [self.journal.job(key, scope) for key in keys]
                return JobList(request.id, [_info(row) for row in rows if row is not None])
            case Jobs(state=state, after=after):
                if state is not None and state not in STATES:
                    return Error(request.id, f"unknown state {state!r} (states: {', '.join(STATES)})")
                page = self.journal.jobs(state, limit, after, scope)
                return JobList(request.id, [_info(row) for row in page], page[-1].key if len(page) == limit else "")
            case Results(after=after, stored_after=None):
                found = self.journal.results(limit, after, scope)
                return self._results(request.id, found, found[-1]["key"] if len(found) == limit else "")
            case Results(after=after, stored_after=stored_after, settle=settle, rules=rules):
                cursor, until = (stored_after or 0.0, after), time.time() - settle
                found = self.journal.results_in_store_order(cursor, until, limit, scope, rules)
                return self._results(request.id, found, found[-1]["key"] if len(found) == limit else "")
            case Hold():
                return self._hold_info(request)
            case Counts():
                return CountList(request.id, self.journal.counts(scope), self.journal.result_count(scope))
            case Replay(keys=keys, states=states, strict=strict):
                try:
                    count = self.journal.replay(keys, states or ("dead", "parked"), strict=strict)
                except NotReplayable as exc:
                    return Error(request.id, str(exc))
                if count:
                    self._wake_router()
                return Replayed(request.id, count)
            case History(key=key):
                return self._story(request.id, key, user, scope)
            case BatchStatus(batch=batch):
                report = self.journal.batch_report(batch, scope)
                if report is None:
                    return Error(request.id, f"no batch {batch!r} in this journal")
                return BatchInfo(
                    request.id,
                    report.batch,
                    report.total,
                    dict(report.states),
                    dict(report.reasons),
                    report.started_at,
                    report.last_change,
                    report.attempts,
                    report.done,
                )
            case Cancel(keys=keys, batch=batch):
                if (keys is None) == (batch is None):
                    return Error(request.id, "cancel takes either keys or a batch")
                return Cancelled(request.id, self.journal.cancel(keys=keys, batch=batch))
            case BreakerReset(target=target):
                return self._breaker_reset(request.id, target)
            case Reextract():
                return self._reextract(request)
        return Error(request.id, f"unhandled request {type(request).__name__}")

    def _results(self, request_id: int, found: list[dict[str, Any]], following: str) -> ResultList:
        """A page of results; while the fleet is in Hold, marked stale with the reason."""
        hold = self._hold(None)
        notice = (
            (
                f"the fleet is in Hold since {time.strftime('%H:%M:%S', time.localtime(hold.since))}"
                f" ({hold.reason}): no fresh fetches, results may be out of date"
            )
            if hold and hold.on
            else ""
        )
        return ResultList(
            request_id,
            [ResultInfo(**{**r, "url": redact(r["url"])}) for r in found],
            following,
            bool(notice),
            notice,
        )

    def _hold_info(self, request: Hold) -> Answer:
        """Set the fleet's Hold (if `request.mode`) and say how it stands (asks the Hold
        monitor when a mode is given: not on the serving thread)."""
        status = self._hold(request.mode)
        if status is None:
            return Error(request.id, "this topology has no Hold monitor (resilience.hold)")
        return HoldInfo(request.id, status.on, status.mode, status.reason, status.since, status.success_rate)

    def _off_thread(
        self, request: Any, work: Callable[[], Answer], executor: ThreadPoolExecutor | None = None
    ) -> Later:
        """Run `work` on a control thread (or on `executor`); its answer (or the Error of what
        it raised) is sent when it is ready."""
        later = Later()

        def run() -> None:
            later.send(_encode(_answered(request, work)))

        (executor or self._control).submit(run)
        return later

    def _reextract_once(self, request: Reextract, user: str) -> Later:
        """A `Reextract`, audited, run on the re-extraction thread; a retry of one (the same
        user, session and id: its client gave up waiting) gets the first one's answer when it
        is ready — no thread waits for it — instead of running it twice."""
        if not request.session:
            return self._off_thread(request, lambda: self._audited(request, user), self._reextracting)
        remembered = (user, request.session, request.id)
        with self._reextracted_lock:
            first = self._reextracted.get(remembered)
            answer: Future[bytes] = first or Future()
            if first is None:
                self._reextracted[remembered] = answer
                while len(self._reextracted) > REMEMBERED_ANSWERS:
                    self._reextracted.popitem(last=False)
        if first is None:

            def reextract() -> None:
                answer.set_result(_encode(_answered(request, lambda: self._audited(request, user))))

            self._reextracting.submit(reextract)
        later = Later()
        answer.add_done_callback(lambda done: later.send(done.result()))  # at once if it is done already
        return later

    def _reextract(self, request: Reextract) -> Answer:
        """Apply rule set `request.rules` as this node has it to the captured pages of its
        stored results (see the module docstring)."""
        rules = self.rules.get(request.rules)
        if rules is None:
            known = ", ".join(sorted(self.rules)) or "none"
            return Error(request.id, f"unknown rules {request.rules!r} on the intake's node (known: {known})")
        pages = self.pages
        if pages is None:
            return Error(request.id, "this intake has no page store: it cannot re-extract")
        deadline = time.monotonic() + REEXTRACT_BUDGET
        limit = max(1, min(MAX_PAGE, request.limit))
        found = self.journal.stored_pages(request.rules, request.keys, request.after, limit)
        if request.keys is not None:
            by_key = {page.key: page for page in found}
            keys: list[KeyReextracted] = []
            for key in dict.fromkeys(request.keys):
                if keys and time.monotonic() >= deadline:
                    break  # the client asks again for the keys not answered
                page = by_key.get(key)
                keys.append(
                    self._reextract_one(page, rules, pages)
                    if page is not None
                    else KeyReextracted(key, "no result", detail=f"no stored result of rules {rules.name!r}")
                )
            return Reextracted(request.id, keys)
        outcomes: list[KeyReextracted] = []
        for page in found:
            if outcomes and time.monotonic() >= deadline:
                break
            outcomes.append(self._reextract_one(page, rules, pages))
        more = outcomes[-1].key if len(outcomes) < len(found) or len(found) == limit else ""
        return Reextracted(request.id, outcomes, more)

    def _reextract_one(self, page: StoredPage, rules: RuleSet, pages: PageStore) -> KeyReextracted:
        """Extract one result's fields again from its captured page in `pages`, and store them
        if they changed."""
        try:
            body = pages.get(page.content_hash)
        except CaptureMissing as exc:
            return KeyReextracted(page.key, "no capture", page.revision, str(exc))
        except CaptureDamaged as exc:
            return KeyReextracted(page.key, "failed", page.revision, str(exc))
        with self._sandbox_lock:
            parsed = self._sandbox.apply(body, rules, url=page.base)  # relative URLs: as when first extracted
        if isinstance(parsed, Drift):
            return KeyReextracted(page.key, "drifted", page.revision, "missing required fields: " + parsed.describe())
        if isinstance(parsed, Blocked):
            return KeyReextracted(page.key, "failed", page.revision, f"challenge page ({parsed.signal})")
        if isinstance(parsed, Unparseable):
            return KeyReextracted(page.key, "failed", page.revision, f"unparseable page: {parsed.reason}")
        revision = self.journal.reextracted(page.key, page.content_hash, parsed.fields)
        if revision is None:
            return KeyReextracted(page.key, "unchanged", page.revision)
        return KeyReextracted(page.key, "changed", revision)

    def _story(self, request_id: int, key: str, user: str, scope: str | None) -> Answer:
        """The story of job `key`: a stored key, or a key as the caller submitted it (its own
        or the natural key of a URL), in the caller's namespace."""
        asked, row = key, self.journal.job(key, scope)
        if row is None:
            key = f"{user}:{key}"
            row = self.journal.job(key, scope)
        if row is None:
            return Error(request_id, f"no job with key {asked!r}")
        events = [JobEventInfo(e.at, e.event, e.attempt, e.detail) for e in self.journal.history(key)]
        omitted = max(0, len(events) - MAX_STORY_EVENTS)
        if omitted:
            events = events[:1] + events[len(events) - MAX_STORY_EVENTS + 1 :]
        result = self.journal.result(key)
        found = ResultInfo(**{**result, "url": redact(result["url"])}) if result else None
        return JobStory(request_id, _info(row), events, omitted, found)

    def _breaker_reset(self, request_id: int, target: str) -> Answer:
        target = breaker_target(target)
        if not target:
            return Error(request_id, "breakers reset takes a target: host:port, or a URL on it")
        done = self._reset_breaker(target)
        if done is None:
            return Error(request_id, "this topology has no breakers (resilience.breakers)")
        was, status = done
        if was != "closed":
            # Jobs that wait behind it go now, not when its open period would have ended; a job
            # that waits for something else (another breaker, Hold, a slot) is deferred again at
            # once, uncounted, its wait budget running on from its first wait.
            self.journal.wake_waiting()
        self._wake_router()
        return BreakerInfo(request_id, target, status.state, was, status.reason)

    def _submit(self, request_id: int, jobs: list[JobSpec], client: str, origin: str, batch: str) -> Submitted:
        """Judge and record each of `client`'s jobs under ``<client>:<key>`` (its own key, or
        the natural key of the URL and rules): no client can take another's key. A job
        already recorded by this same request (`origin`: the client's session and request id
        — a retry whose answer was lost, even across an intake restart) is reported
        accepted, as the first try would have been. Every job, new or duplicate, is recorded
        as part of `batch`."""
        acks: list[Ack] = []
        new: list[tuple[int, NewJob]] = []
        seen: set[str] = set()
        for index, job in enumerate(jobs):
            reason = check_job(job, self.rule_sets, self.credential_rules)
            if reason is not None:
                acks.append(Ack(index, job.key or "", "rejected", reason))
                continue
            key = f"{client}:{job.key or natural_key(redact(job.url), job.rules)}"
            if key in seen:  # the same page twice in one request: the second is its duplicate
                acks.append(Ack(index, key, "duplicate"))
                continue
            seen.add(key)
            url = self.seal.seal_url(job.url) if self.seal is not None and has_userinfo(job.url) else job.url
            new.append((index, NewJob(key, url, job.rules, client)))
        fresh = self.journal.submit([job for _, job in new], batch=batch, origin=origin)
        for (index, entry), is_new in zip(new, fresh, strict=True):
            acks.append(Ack(index, entry.key, "accepted" if is_new else "duplicate"))
        if any(fresh):
            self._wake_router()
        acks.sort(key=lambda ack: ack.index)
        return Submitted(request_id, acks, batch)


def breaker_target(text: str) -> str:
    """The breaker target an operator means: ``host:port`` as given, or the target of a URL."""
    text = text.strip()
    return target_of(text) if "://" in text else text.lower()


def _info(row: Any) -> JobInfo:
    return JobInfo(row.key, redact(row.url), row.rules, row.state, row.attempts, row.reason)


def _answered(request: Any, work: Callable[[], Answer]) -> Answer:
    """What `work` answers to `request`, or the Error of what it raised (a failed request must
    not go unanswered)."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - a failed request must not go unanswered
        refusals.refuse(
            "intake", "failed", f"{type(exc).__name__}: {exc}", event="intake.request_failed", exc_info=True
        )
        return Error(id=request.id, reason=f"{type(exc).__name__}: {str(exc)[:500]}")


def _encode(answer: Answer) -> bytes:
    """The answer's frame; an answer that cannot be encoded becomes an `Error` saying so."""
    try:
        return encoder.encode(answer)
    except Exception as exc:  # noqa: BLE001 - e.g. a value out of MessagePack's range
        refusals.refuse("intake", "unencodable", f"{type(exc).__name__}: {exc}", event="intake.answer_unencodable")
        return encoder.encode(Error(id=0, reason=f"the answer cannot be encoded: {type(exc).__name__}"))
