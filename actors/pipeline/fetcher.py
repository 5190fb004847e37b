"""The fetcher: real HTTP with pooled connections and many requests in flight per actor.

Each fetcher runs its own asyncio loop (on a thread of its own) with one aiohttp session.
A `FetchJob` starts a request and returns at once; when the answer is in, a 200 page goes to
the extractor pool with `ExtractJob` (the extractor reports it to the router: one message
back per job), and anything else comes back to the router as a `JobOutcome` with a typed
`Failure`:

* TRANSIENT — timeouts, connection errors and resets, 5xx, 408;
* BLOCKED — 403 and 429 (with the Retry-After they give, in seconds or as a date);
* HARD — 404, 410, 401 and other 4xx, a body over `max_body_bytes`, more than
  `max_redirects` redirects, a scheme other than http or https, and a URL or redirect the
  node's egress policy refuses (actors/pipeline/egress.py: checked after DNS resolution and on every
  redirect), with the reason.

Before each request the fetcher asks its node's resilience view (actors/resilience/view.py)
whether the target may be asked now and through which proxy, and takes a rate-limit slot
(waiting at most `slot_wait` seconds); a job that may not go now is handed back `Deferred`,
to wait in the journal without counting as an attempt. What each request gave is recorded in
the view (pages are recorded by the extractor, which knows whether they were real).

The fetcher's loop never waits for the network: a report (an outcome, a `Deferred`, a page
for the extractor) for an actor on this node is told from the loop (a mailbox put), one for
another node goes through the actor's own thread, in order. When that peer's backlog is full
the tell waits there for room (`Transport.send`): meanwhile the fetcher takes no new jobs
(they wait in its mailbox: a full backlog pushes back through its admission) while the
requests in flight go on and their reports queue up in the fetcher (none is dropped there).

A bug in the fetcher itself (an exception that is none of these) crashes the actor, as any
bug should. Its other requests in flight are cut and their jobs handed back `Returned` (due
again at once, no attempt spent: they did nothing wrong), as when it is stopped; the job whose
request raised reports nothing, so its lease runs out and counts it lost (a job that keeps
crashing fetchers ends dead as poison).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
import time
from collections import deque
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import aiohttp
import msgspec
from yarl import URL

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.registry import PathRef
from flotilla.actors.pipeline.credentials import CredentialError, CredentialSeal, has_userinfo
from flotilla.actors.pipeline.egress import EgressPolicy, EgressRefused
from flotilla.actors.pipeline.egress_hooks import EgressResolver, egress_trace
from flotilla.actors.pipeline.messages import (
    Deferred,
    ExtractJob,
    Failure,
    FetchJob,
    JobOutcome,
)
from flotilla.actors.pipeline.observations import FetcherLoad
from flotilla.actors.pipeline.rules import ExtractionRules, challenge_headers
from flotilla.actors.resilience.view import Go, Outcome, ResilienceView, Wait, target_of

EVIDENCE_BYTES = 300
"""How much of a failed response's body is kept as evidence."""


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, read to its end or to `limit` bytes, whichever comes first."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(min(256 * 1024, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _evidence(response: aiohttp.ClientResponse) -> str:
    """The headers that explain a failure and the start of the body."""
    headers = {
        k: response.headers[k] for k in ("Content-Type", "Retry-After", "Server", "Location") if k in response.headers
    }
    try:
        head = await response.content.read(EVIDENCE_BYTES)
    except (TimeoutError, aiohttp.ClientError):
        head = b""
    return f"HTTP {response.status} {headers} body: {head.decode('utf-8', 'replace')!r}"[:1000]


MAX_RETRY_AFTER = 3600.0
"""A Retry-After longer than this (seconds) is taken as this."""

DIRECT = Go()
"""The admission of every fetch when no resilience part is configured."""

CUT = "its fetcher stopped with the request in flight"
"""Why a job is handed back when its fetcher stops or crashes (the `Returned` reason)."""

LAUNCH_BURST = 64
"""Most jobs handed to the event loop in one cross-thread call."""


class _SendReports:
    """Reports for other nodes are waiting in the fetcher's queue: send them (from the loop)."""


class _Crashed:
    """A request coroutine raised something unexpected: crash the actor with it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now (it may be a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - (now if now is not None else time.time())))


def classify_status(status: int, retry_after: float | None) -> Failure | None:
    """The failure a non-200 status means (None for 200)."""
    if status == 200:
        return None
    if status in (403, 429):
        return Failure("BLOCKED", f"HTTP {status}", status, retry_after)
    if status >= 500 or status == 408:
        return Failure("TRANSIENT", f"HTTP {status}", status, retry_after)
    return Failure("HARD", f"HTTP {status}", status)


class FetcherSnapshot(msgspec.Struct, frozen=True):
    """A fetcher's `inspect()`."""

    in_flight: int
    done: int
    deferred: int
    max_in_flight: int


class Fetcher(Actor):
    """Fetches pages for the router; see the module docstring for the outcomes."""

    PATH_ARGS: ClassVar[dict[str, str]] = {"extractor": "extractor"}

    def __init__(
        self,
        extractor: str,
        max_in_flight: int = 64,
        timeout: float = 10.0,
        max_body_bytes: int = 2 * 1024 * 1024,
        max_redirects: int = 5,
        user_agent: str = "flotilla/0.1",
        slot_wait: float = 5.0,
    ) -> None:
        super().__init__()
        if max_in_flight < 1 or timeout <= 0 or max_body_bytes < 1 or max_redirects < 0 or slot_wait <= 0:
            raise ValueError("max_in_flight >= 1, timeout > 0, max_body_bytes >= 1, max_redirects >= 0, slot_wait > 0")
        self.slot_wait = slot_wait
        self.deferred = 0
        self.extractor_path = extractor
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.in_flight = 0
        self.done = 0
        self._counts = threading.Lock()
        self._arrived: list[FetchJob] = []
        self._reports: deque[tuple[PathRef, Any]] = deque()
        """Reports for other nodes, sent by the actor's thread (see the module docstring)."""
        self._reports_lock = threading.Lock()
        self._reports_told = False
        self._stopping = False
        """Set once the actor stops or crashes: requests cut from then on are handed back."""
        """A `_SendReports` is on its way to the actor (one per burst of reports)."""
        self._seal: CredentialSeal | None = None

    def on_start(self) -> None:
        self._publish_load()
        self.extractor = self.system.ref(self.extractor_path)
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, name=f"http {self.path}", daemon=True)
        self._loop_thread.start()
        self.session = asyncio.run_coroutine_threadsafe(self._open_session(), self.loop).result(10)

    async def _open_session(self) -> aiohttp.ClientSession:
        self._slots = asyncio.Semaphore(self.max_in_flight)  # the time limit starts once in a slot
        policy = EgressPolicy.of(self.system)
        self._resolver = EgressResolver(policy)
        connector = aiohttp.TCPConnector(
            limit=self.max_in_flight, limit_per_host=self.max_in_flight, ttl_dns_cache=300, resolver=self._resolver
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": self.user_agent},
            trace_configs=[egress_trace(policy)],
        )

    def _close_loop(self) -> None:
        """Stop the loop: requests in flight are cut and their jobs handed back uncounted
        (`Returned`: due again at once, no attempt spent — they did nothing wrong), as are jobs
        not started yet; the reports queued for other nodes are sent before the actor goes.
        The request whose own exception crashed the actor reports nothing: its lease runs out
        and counts as lost (a job that keeps crashing fetchers ends dead as poison)."""
        loop = getattr(self, "loop", None)
        if loop is None or loop.is_closed():
            return
        self._stopping = True
        with contextlib.suppress(Exception):  # a loop that no longer answers: leases bring the jobs back
            asyncio.run_coroutine_threadsafe(self._cut_requests(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._loop_thread.join(5)
        loop.close()
        for job in self._arrived:
            self._report(self.system.ref(job.reply_to), job.returned(CUT))
        self._arrived = []
        self._send_reports()

    async def _cut_requests(self) -> None:
        """Runs in the loop: cancel every request task, wait for them, close the session."""
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session = getattr(self, "session", None)
        if session is not None:
            await session.close()

    def on_stop(self) -> None:
        self._close_loop()

    def on_failure(self, *_exc_info: Any) -> None:
        self._close_loop()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, FetchJob):
            with self._counts:
                self.in_flight += 1
                self._publish_load()
            # Jobs go to the loop in bursts: one cross-thread wake-up per burst, not per job.
            self._arrived.append(message)
            if self.mailbox_depth == 0 or len(self._arrived) >= LAUNCH_BURST:
                self._flush_arrived()
            return None
        self._flush_arrived()
        if isinstance(message, _SendReports):
            self._send_reports()
            return None
        if isinstance(message, _Crashed):
            raise message.error
        if message == "in_flight":
            return self.in_flight
        return super().on_receive(message)

    def _flush_arrived(self) -> None:
        if self._arrived:
            burst, self._arrived = self._arrived, []
            self.loop.call_soon_threadsafe(self._launch, burst)

    def _report(self, ref: PathRef, message: Any) -> None:
        """Tell `message` to `ref` without holding up the loop (runs in the loop thread): at
        once to an actor on this node, else through the actor's thread (`_send_reports`)."""
        if ref.is_local():
            ref.tell(message)
            return
        with self._reports_lock:
            self._reports.append((ref, message))
            if self._reports_told or self._stopping:  # a stopping fetcher sends them itself
                return
            self._reports_told = True
        self.actor_ref.tell(_SendReports())

    def _send_reports(self) -> None:
        """Send the queued reports in order (actor thread). A tell to a peer whose backlog is
        full waits here for room: the jobs that arrive meanwhile wait in the mailbox."""
        while True:
            with self._reports_lock:
                if not self._reports:
                    self._reports_told = False
                    return
                ref, message = self._reports.popleft()
            ref.tell(message)

    def _launch(self, jobs: list[FetchJob]) -> None:
        """Runs in the loop thread: start one request task per job."""
        for job in jobs:
            task = self.loop.create_task(self._fetch(job))
            task.add_done_callback(self._finished)

    def _finished(self, future: Any) -> None:
        """Runs in the loop thread when a request task ends."""
        with self._counts:
            self.in_flight -= 1
            self.done += 1
            self._publish_load()
        if future.cancelled():
            return  # cut by `_close_loop`, its job handed back
        error = future.exception()
        if error is not None:
            with contextlib.suppress(Exception):  # the actor is already gone
                self.actor_ref.tell(_Crashed(error))

    async def _fetch(self, job: FetchJob) -> None:
        reply = self.system.ref(job.reply_to)
        try:
            await self._fetch_for(job, reply)
        except asyncio.CancelledError:
            self._report(reply, job.returned(CUT))
            raise

    async def _fetch_for(self, job: FetchJob, reply: PathRef) -> None:
        started = time.monotonic()
        if not job.url.startswith(("http://", "https://")):
            self._report(
                reply, JobOutcome(job.key, job.token, failure=Failure("HARD", "only http and https are fetched"))
            )
            return
        async with self._slots:  # admitted only once a connection slot is ours: then it goes at once
            if not ResilienceView.of(self.system).active:
                await self._request(job, "", DIRECT, reply, started)
                return
            target = target_of(job.url)
            admission = await self._admit(target, job, reply)
            if admission is None:
                return
            await self._request(job, target, admission, reply, started)

    async def _request(self, job: FetchJob, target: str, admission: Go, reply: Any, started: float) -> None:
        proxy_fault = False
        if admission.proxy:  # the topology's proxies are trusted; the target's name is resolved by the proxy
            self._resolver.trusted.add((URL(admission.proxy).host or "").lower())
        try:
            url, auth = self._credentials(job)
            async with self.session.get(
                url,
                auth=auth,
                max_redirects=self.max_redirects,
                proxy=admission.proxy,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                failure = classify_status(response.status, retry_after_seconds(response.headers.get("Retry-After")))
                if failure is not None:
                    failure = msgspec.structs.replace(failure, evidence=await _evidence(response))
                else:
                    length = response.content_length
                    if length is not None and length > self.max_body_bytes:
                        failure = Failure("HARD", f"body of {length} bytes exceeds {self.max_body_bytes}", 200)
                    else:
                        body = await _read_capped(response, self.max_body_bytes + 1)
                        if len(body) > self.max_body_bytes:
                            failure = Failure("HARD", f"body exceeds {self.max_body_bytes} bytes", 200)
        except EgressRefused as exc:
            failure = Failure("HARD", f"egress refused: {exc}"[:500])
        except CredentialError as exc:
            failure = Failure("HARD", f"credentials refused: {exc}"[:500])
        except aiohttp.TooManyRedirects:
            failure = Failure("HARD", f"more than {self.max_redirects} redirects")
        except aiohttp.RedirectClientError as exc:  # to file://, ftp:// or a URL that does not parse
            failure = Failure("HARD", f"redirect refused: {type(exc).__name__}: {exc}"[:500])
        except TimeoutError:
            failure = Failure("TRANSIENT", f"no complete answer within {self.timeout:g} s")
        except aiohttp.InvalidURL as exc:
            failure = Failure("HARD", f"invalid URL: {exc}"[:500])
        except aiohttp.ClientProxyConnectionError as exc:
            proxy_fault = True
            failure = Failure("TRANSIENT", f"proxy unreachable: {exc}"[:500])
        except aiohttp.ClientResponseError as exc:  # an answer that is not valid HTTP
            failure = Failure("TRANSIENT", f"bad answer: {type(exc).__name__}: {exc}"[:500])
        except (aiohttp.ClientError, ValueError) as exc:  # resets, refused, payload errors...
            failure = Failure("TRANSIENT", f"{type(exc).__name__}: {exc}"[:500])
        if failure is not None:
            outcome: Outcome = {"TRANSIENT": "transient", "BLOCKED": "blocked"}.get(failure.kind, "hard")  # type: ignore[assignment]
            ResilienceView.of(self.system).record(
                target,
                outcome,
                proxy=admission.proxy,
                trial=admission.trial,
                probe=admission.probe,
                proxy_fault=proxy_fault,
                retry_after=failure.retry_after,
                status=failure.status,
                detail=failure.detail,
                retry=job.tries > 1,
            )
            self._report(reply, JobOutcome(job.key, job.token, failure=failure, elapsed=time.monotonic() - started))
            return
        if target and not (admission.trial or admission.probe):  # the extractor judges trials and probes
            ResilienceView.of(self.system).record(target, "answered", proxy=admission.proxy, retry=job.tries > 1)
        self._report(
            self.extractor,
            ExtractJob(
                job.key,
                job.url,
                job.rules,
                job.token,
                200,
                body,
                hashlib.sha256(body).hexdigest(),
                job.reply_to,
                admission.proxy or "",
                admission.probe,
                admission.trial,
                challenge_headers(response.headers),
                final_url=str(response.url),
            ),
        )

    def _credentials(self, job: FetchJob) -> tuple[str, aiohttp.BasicAuth | None]:
        """The URL to request and the Basic auth to send: the job's sealed password opened
        (actors/pipeline/credentials.py) when its rule set allows credentials; raises CredentialError
        otherwise."""
        if not has_userinfo(job.url):
            return job.url, None
        rules = ExtractionRules.of(self.system).get(job.rules)
        if rules is None or not rules.credentials:
            raise CredentialError(f"rule set {job.rules!r} does not allow credentials in urls")
        if self._seal is None:
            if self.system.credentials_dir is None:
                raise CredentialError("this node has no key directory with the cluster's credentials key")
            self._seal = CredentialSeal.in_directory(self.system.credentials_dir)
        url, userinfo = self._seal.open_url(job.url)
        return url, aiohttp.BasicAuth(*userinfo) if userinfo else None

    async def _admit(self, target: str, job: FetchJob, reply: Any) -> Go | None:
        """The view's admission and a rate-limit slot, or None after handing the job back."""
        view = ResilienceView.of(self.system)
        admission = view.admit(target, fresh=job.tries <= 1)
        in_line = False  # waiting in line for a rate-limit slot spends no wait budget
        if isinstance(admission, Go):
            if await view.acquire(target, self.slot_wait):
                return admission
            view.cancel(target, admission)
            admission = Wait(
                self.slot_wait * (0.5 + random.random()), f"no rate-limit slot for {target} within {self.slot_wait:g} s"
            )
            in_line = True
        with self._counts:
            self.deferred += 1
            self._publish_load()
        self._report(reply, Deferred(job.key, job.token, admission.delay, admission.reason, budget=not in_line))
        return None

    def _publish_load(self) -> None:
        """Publish the current load (called with `_counts` held, so events keep their order)."""
        observers = self.system.observers
        if observers.active:
            observers.publish(FetcherLoad(self.path, self.incarnation, self.in_flight, self.deferred))

    def inspect(self) -> FetcherSnapshot:
        return FetcherSnapshot(self.in_flight, self.done, self.deferred, self.max_in_flight)
