"""The extractor: applies a job's rule set to its fetched page and reports the outcome.

Runs next to the fetchers (bodies never cross nodes). A page with the required fields gives
its fields; one without them is a DRIFT failure naming the missing fields; a challenge page
served with 200 (actors/rules.py says how one is told) is BLOCKED. Each verdict is recorded in
the node's resilience view (the breaker shard judges a target's drift over its recent pages).
"""

from __future__ import annotations

import time
from typing import Any

from actors.actor import Actor
from actors.messages import ExtractJob, Failure, JobOutcome
from actors.resilience_view import target_of
from actors.rules import Blocked, Drift, apply_rules


class Extractor(Actor):
    """Turns `ExtractJob`s into `JobOutcome`s for the router named in each job."""

    def __init__(self) -> None:
        super().__init__()
        self.done = 0

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, ExtractJob):
            return super().on_receive(message)
        started = time.monotonic()
        rules = self.system.extraction_rules.get(message.rules)
        reply = self.system.ref(message.reply_to)
        self.done += 1
        if rules is None:
            reply.tell(JobOutcome(message.key, message.token,
                                  failure=Failure("HARD", f"no rule set named {message.rules!r} on this node")))
            return None
        result = apply_rules(message.body, rules, message.headers)
        elapsed = time.monotonic() - started
        view, proxy = self.system.resilience, message.proxy or None
        target = target_of(message.url) if view.active else ""
        if isinstance(result, Drift):
            failure = Failure("DRIFT", "missing required fields: " + ", ".join(result.missing), 200)
            view.record(target, "drift", proxy=proxy, trial=message.trial, probe=message.probe,
                        detail=failure.detail, url=message.url)
            reply.tell(JobOutcome(message.key, message.token, failure=failure, elapsed=elapsed))
        elif isinstance(result, Blocked):
            failure = Failure("BLOCKED", f"challenge page ({result.signal})", 200)
            view.record(target, "blocked", proxy=proxy, trial=message.trial, probe=message.probe)
            reply.tell(JobOutcome(message.key, message.token, failure=failure, elapsed=elapsed))
        else:
            view.record(target, "ok", proxy=proxy, trial=message.trial, probe=message.probe)
            reply.tell(JobOutcome(message.key, message.token, fields=result.fields,
                                  content_hash=message.content_hash, elapsed=elapsed))
        return None

    def inspect(self) -> dict[str, Any]:
        return {"done": self.done}
