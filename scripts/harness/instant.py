"""A fetcher that fetches nothing: it answers every `FetchJob` at once with a result, so that
part 5 of the benchmarks measures the router and the journal, not HTTP."""

from __future__ import annotations

from typing import Any

from flotilla.actors.core.actor import Actor
from flotilla.actors.pipeline.messages import FetchJob, JobOutcome


class InstantFetcher(Actor):
    """Reports every job stored with one field, its URL, in the one message a job sends back."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, FetchJob):
            self.system.ref(message.reply_to).tell(
                JobOutcome(message.key, message.token, fields={"url": message.url}, content_hash="-")
            )
            return None
        return super().on_receive(message)
