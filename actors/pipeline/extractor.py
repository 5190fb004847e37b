"""The extractor: applies a job's rule set to its fetched page and reports the outcome.

Runs next to the fetchers (bodies never cross nodes). A page with the required fields gives
its fields; one without them is a DRIFT failure naming the missing fields; a challenge page
served with 200 (actors/pipeline/rules.py says how one is told) is BLOCKED; a page that cannot be
parsed within the parse budget (`flotilla.actors.pipeline.parse_sandbox`: `parse_timeout` seconds, in a worker
process killed when it overruns) is HARD "unparseable page", with the start of the page as
evidence. Each verdict is recorded in the node's resilience view (the breaker shard judges a
target's drift over its recent pages).

A page of a rule set with `capture: true` is captured first (the node's `PageStore`,
actors/pipeline/captures.py; in this actor's thread, which a write of a few milliseconds holds
up no more than a parse does), so it is on disk before its outcome reaches the router; every
outcome then names the page (`content_hash`, `captured`, and `page_url`: the URL it came from
after redirects, the base of its relative URLs). A page that cannot be written
(a full disk, no capture directory on this node) is a TRANSIENT failure: it is fetched again
later rather than stored without its page.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from flotilla.actors.core.actor import Actor
from flotilla.actors.pipeline.captures import PageStore
from flotilla.actors.pipeline.messages import ExtractJob, Failure, JobOutcome
from flotilla.actors.pipeline.parse_sandbox import MAX_PARSE_TIMEOUT, PARSE_TIMEOUT, ParseSandbox, Unparseable
from flotilla.actors.pipeline.rules import Blocked, Drift, ExtractionRules
from flotilla.actors.resilience.view import ResilienceView, target_of


class ExtractorSnapshot(msgspec.Struct, frozen=True):
    """An extractor's `inspect()`."""

    done: int
    unparseable: int
    parser_killed: int
    captured: int = 0


class Extractor(Actor):
    """Turns `ExtractJob`s into `JobOutcome`s for the router named in each job."""

    def __init__(self, parse_timeout: float = PARSE_TIMEOUT) -> None:
        if not 0 < parse_timeout <= MAX_PARSE_TIMEOUT:
            raise ValueError(f"parse_timeout must be within 0..{MAX_PARSE_TIMEOUT:g} seconds")
        super().__init__()
        self.done = 0
        self.unparseable = 0
        self.captured = 0
        """Pages written to the page store (a page kept already is not counted)."""
        self.sandbox = ParseSandbox(parse_timeout)

    def on_start(self) -> None:
        self.sandbox.start()  # its parser imports now, not while the first large page waits

    def on_stop(self) -> None:
        self.sandbox.close()

    def on_failure(self, *_exc_info: Any) -> None:
        self.sandbox.close()

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, ExtractJob):
            return super().on_receive(message)
        started = time.monotonic()
        rules = ExtractionRules.of(self.system).get(message.rules)
        reply = self.system.ref(message.reply_to)
        self.done += 1
        if rules is None:
            reply.tell(
                JobOutcome(
                    message.key,
                    message.token,
                    failure=Failure("HARD", f"no rule set named {message.rules!r} on this node"),
                )
            )
            return None
        page: dict[str, Any] = {}
        base = message.final_url or message.url  # relative URLs in fields are joined to it
        if rules.capture:
            problem = self._capture(message)
            if problem is not None:
                reply.tell(JobOutcome(message.key, message.token, failure=problem))
                return None
            page = {"content_hash": message.content_hash, "captured": True, "page_url": base}
        result = self.sandbox.apply(message.body, rules, message.headers, url=base)
        elapsed = time.monotonic() - started
        view, proxy = ResilienceView.of(self.system), message.proxy or None
        target = target_of(message.url) if view.active else ""
        if isinstance(result, Unparseable):
            self.unparseable += 1
            evidence = f"{len(message.body)} bytes: {message.body[:300]!r}"
            failure = Failure("HARD", f"unparseable page: {result.reason}", 200, evidence=evidence)
            view.record(
                target,
                "hard",
                proxy=proxy,
                trial=message.trial,
                probe=message.probe,
                status=200,
                page=True,
                detail=failure.detail,
                url=message.url,
            )
            reply.tell(JobOutcome(message.key, message.token, failure=failure, elapsed=elapsed, **page))
        elif isinstance(result, Drift):
            failure = Failure("DRIFT", "missing required fields: " + result.describe(), 200)
            view.record(
                target,
                "drift",
                proxy=proxy,
                trial=message.trial,
                probe=message.probe,
                detail=failure.detail,
                url=message.url,
                page=True,
            )
            reply.tell(JobOutcome(message.key, message.token, failure=failure, elapsed=elapsed, **page))
        elif isinstance(result, Blocked):
            failure = Failure("BLOCKED", f"challenge page ({result.signal})", 200)
            view.record(
                target,
                "blocked",
                proxy=proxy,
                trial=message.trial,
                probe=message.probe,
                page=True,
                detail=failure.detail,
            )
            reply.tell(JobOutcome(message.key, message.token, failure=failure, elapsed=elapsed, **page))
        else:
            view.record(target, "ok", proxy=proxy, trial=message.trial, probe=message.probe, page=True)
            reply.tell(
                JobOutcome(
                    message.key,
                    message.token,
                    fields=result.fields,
                    content_hash=message.content_hash,
                    elapsed=elapsed,
                    captured=bool(page),
                    page_url=page.get("page_url", ""),
                )
            )
        return None

    def _capture(self, message: ExtractJob) -> Failure | None:
        """Capture the page of `message` (a no-op if it is kept already); the failure to
        report instead if it cannot be."""
        store = PageStore.of(self.system)
        if store is None:
            return Failure("TRANSIENT", f"rule set {message.rules!r} captures pages, but this node has no page store")
        try:
            _, written = store.put(message.body, message.content_hash)
        except (OSError, ValueError) as exc:
            self.log.warning("extractor.capture_failed", job=message.key, error=f"{type(exc).__name__}: {exc}")
            return Failure("TRANSIENT", f"page capture failed: {type(exc).__name__}: {exc}"[:500], 200)
        if written:
            self.captured += 1
        return None

    def inspect(self) -> ExtractorSnapshot:
        return ExtractorSnapshot(self.done, self.unparseable, self.sandbox.killed, self.captured)
