"""The intake socket: where clients submit jobs and ask about them (docs/intake.md).

A ROUTER socket on the node the topology names, served by its own thread with its own
journal connection (`durable`: a job is acknowledged only once its row is on disk). Each job
of a batch is judged by itself: a bad one (no URL, a scheme other than http or https, an
unknown rule set, a bad key) is rejected with its reason, and the others go on; a key seen
before is acknowledged as a duplicate and changes nothing. After accepting new jobs the
intake wakes the router. While the fleet is in Hold, results are still served, marked stale.

The socket is a CURVE server: only the keys of `IntakeAccess` get through its handshake, and
each request is answered as the name of its key (the ZAP User-Id), within that name's role
(nodes/intake_auth.py). Every job is recorded with its client, under the key
``<client>:<key>``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import structlog
import zmq

from actors.credentials import CredentialSeal, has_userinfo, redact
from actors.journal import STATES, Journal, NewJob, canonical_url, natural_key
from actors.messages import HoldMode, HoldStatus
from nodes.intake_auth import IntakeAccess, IntakeGuard
from nodes.intake_protocol import (
    MAX_KEY_CHARS,
    MAX_PAGE,
    MAX_REQUEST_BYTES,
    MAX_URL_CHARS,
    Ack,
    Answer,
    CountList,
    Counts,
    Error,
    Hold,
    HoldInfo,
    JobInfo,
    JobList,
    Jobs,
    JobSpec,
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
from nodes.security import ZAP_DOMAIN

_log = structlog.get_logger("flotilla.intake")

REMEMBERED_ANSWERS = 1024
"""Answers to recent submissions kept for clients that retry (by session and request id)."""


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
        return (f"url carries credentials (user:password@): rule set {job.rules!r} does not accept them "
                "(credentials: true), so they are not sent to the site nor kept")
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

    def __init__(self, address: str, journal_path: Path, rule_sets: set[str], wake_router: Callable[[], None],
                 hold: Callable[[HoldMode | None], HoldStatus | None] = lambda _mode: None, *,
                 access: IntakeAccess, seal: CredentialSeal | None = None,
                 credential_rules: AbstractSet[str] = frozenset()) -> None:
        """`hold(mode)` sets the fleet's Hold (None: leaves it) and returns its status, or
        None when the topology has no Hold. `access`: the keys let in, and their roles.
        `credential_rules`: the rule sets whose URLs may carry credentials, which `seal`
        seals before they are written."""
        self.address = address
        self.access = access
        self.seal = seal
        self.credential_rules = credential_rules if seal is not None else frozenset()
        self._hold = hold
        self.rule_sets = rule_sets
        self._wake_router = wake_router
        self.journal = Journal(journal_path, durable=True)
        self._context = zmq.Context()
        self.guard = IntakeGuard(self._context, access)
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self.served = 0
        self._answers: OrderedDict[tuple[str, str, int], Submitted] = OrderedDict()

    def start(self) -> None:
        self.guard.start()
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self.guard.stop()
            raise self._error

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self.guard.stop()
        self._context.term()
        self.journal.close()

    def _run(self) -> None:
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        socket.curve_server = True
        socket.curve_secretkey = self.access.keys.secret
        socket.curve_publickey = self.access.keys.public
        socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        try:
            socket.bind(self.address)
        except zmq.ZMQError as exc:
            self._error = OSError(f"cannot listen for clients on {self.address}: {exc}")
            self._ready.set()
            socket.close()
            return
        self._ready.set()
        try:
            while not self._closing.is_set():
                if not socket.poll(200):
                    continue
                parts = socket.recv_multipart(copy=False)
                if len(parts) != 2:
                    continue
                answer = self.handle(parts[1].bytes, str(parts[1].get("User-Id")))
                try:
                    socket.send_multipart([parts[0].bytes, encoder.encode(answer)], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass  # the client left; it will ask again (submissions are idempotent)
                self.served += 1
        finally:
            socket.close()

    def handle(self, frame: bytes, user: str) -> Answer:
        """The answer to one request frame from `user` (the name of the peer's key)."""
        try:
            request = request_decoder.decode(frame)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            _log.warning("intake.bad_request", reason=str(exc)[:200])
            return Error(id=_request_id(frame), reason=f"bad request: {str(exc)[:200]}")
        refusal = self.access.refusal(user, request)
        if refusal is not None:
            _log.warning("intake.refused", user=user, request=type(request).__name__, reason=refusal)
            return Error(request.id, refusal)
        try:
            return self._dispatch(request, user, self.access.scope(user))
        except Exception as exc:  # noqa: BLE001 - a failed request must not stop the intake
            _log.exception("intake.request_failed")
            return Error(id=request.id, reason=f"{type(exc).__name__}: {exc}")

    def _dispatch(self, request: Any, user: str, scope: str | None) -> Answer:
        """Answer `request` from `user`; queries see only `scope`'s jobs (None: all)."""
        limit = max(1, min(MAX_PAGE, getattr(request, "limit", MAX_PAGE)))
        match request:
            case Submit(jobs=jobs, session=session):
                remembered = self._answers.get((user, session, request.id)) if session else None
                if remembered is not None:
                    return remembered  # a retry of a request whose answer was lost
                answer = self._submit(request.id, jobs, user, f"{session}:{request.id}" if session else "")
                if session:
                    self._answers[(user, session, request.id)] = answer
                    while len(self._answers) > REMEMBERED_ANSWERS:
                        self._answers.popitem(last=False)
                return answer
            case Status(keys=keys):
                rows = [self.journal.job(key, scope) for key in keys]
                return JobList(request.id, [_info(row) for row in rows if row is not None])
            case Jobs(state=state, after=after):
                if state is not None and state not in STATES:
                    return Error(request.id, f"unknown state {state!r} (states: {', '.join(STATES)})")
                rows = self.journal.jobs(state, limit, after, scope)  # type: ignore[arg-type]
                return JobList(request.id, [_info(row) for row in rows], rows[-1].key if len(rows) == limit else "")
            case Results(after=after):
                found = self.journal.results(limit, after, scope)
                hold = self._hold(None)
                notice = (f"the fleet is in Hold since {time.strftime('%H:%M:%S', time.localtime(hold.since))}"
                          f" ({hold.reason}): no fresh fetches, results may be out of date") if hold and hold.on else ""
                return ResultList(request.id, [ResultInfo(**{**r, "url": redact(r["url"])}) for r in found],
                                  found[-1]["key"] if len(found) == limit else "", bool(notice), notice)
            case Hold(mode=mode):
                status = self._hold(mode)
                if status is None:
                    return Error(request.id, "this topology has no Hold monitor (resilience.hold)")
                return HoldInfo(request.id, status.on, status.mode, status.reason, status.since, status.success_rate)
            case Counts():
                return CountList(request.id, self.journal.counts(scope), self.journal.result_count(scope))
            case Replay(keys=keys):
                count = self.journal.replay(keys)
                if count:
                    self._wake_router()
                return Replayed(request.id, count)
        return Error(request.id, f"unhandled request {type(request).__name__}")

    def _submit(self, request_id: int, jobs: list[JobSpec], client: str, origin: str) -> Submitted:
        """Judge and record each of `client`'s jobs under ``<client>:<key>`` (its own key, or
        the natural key of the URL and rules): no client can take another's key. A job
        already recorded by this same request (`origin`: the client's session and request id
        — a retry whose answer was lost, even across an intake restart) is reported
        accepted, as the first try would have been."""
        acks: list[Ack] = []
        new: list[tuple[int, NewJob]] = []
        for index, job in enumerate(jobs):
            reason = check_job(job, self.rule_sets, self.credential_rules)
            if reason is not None:
                acks.append(Ack(index, job.key or "", "rejected", reason))
                continue
            key = f"{client}:{job.key or natural_key(redact(job.url), job.rules)}"
            url = self.seal.seal_url(job.url) if self.seal is not None and has_userinfo(job.url) else job.url
            new.append((index, NewJob(key, url, job.rules, client)))
        fresh = self.journal.submit([job for _, job in new], origin=origin)
        for (index, job), is_new in zip(new, fresh, strict=True):
            acks.append(Ack(index, job.key, "accepted" if is_new else "duplicate"))
        if any(fresh):
            self._wake_router()
        acks.sort(key=lambda ack: ack.index)
        return Submitted(request_id, acks)


def _info(row: Any) -> JobInfo:
    return JobInfo(row.key, redact(row.url), row.rules, row.state, row.attempts, row.reason)


def _request_id(frame: bytes) -> int:
    """The id of a request that failed to decode, if it can be read at all."""
    try:
        value = msgspec.msgpack.decode(frame)
        return int(value.get("id", 0)) if isinstance(value, dict) else 0
    except Exception:  # noqa: BLE001
        return 0
