"""Retention: what the journal keeps, and the pruner that deletes the rest in the background.

Stored jobs (with their attempts, events and batch memberships) are deleted once they have been
stored for `Retention.stored` seconds; dead and parked jobs after `Retention.dead`; results
after `Retention.results`. None keeps them forever. Results are kept by default: a result is
what a client came for, and it keeps a later submission of the same key from storing a
second one (a pruned job's key can be submitted again; its new attempt stores nothing twice).

The `Pruner` runs on a thread of its own next to each router, every `every` seconds, deleting
at most `batch` jobs (and `batch` results) per transaction until nothing is due, so that no
transaction holds the journal for long. Oban's pruner works the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flotilla.actors.core.system import ActorSystem
from flotilla.actors.pipeline.journal import Journal, Pruned

DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    """How long the journal keeps what ended (seconds; None: forever)."""

    stored: float | None = 7 * DAY
    dead: float | None = None
    """Dead and parked jobs (the dead-letter queue): kept until replayed, by default."""
    results: float | None = None
    every: float = 60.0
    batch: int = 5000

    def __post_init__(self) -> None:
        for name in ("stored", "dead", "results"):
            age = getattr(self, name)
            if age is not None and age <= 0:
                raise ValueError(f"retention {name} must be > 0 seconds (or kept)")
        if self.every <= 0 or self.batch < 1:
            raise ValueError("retention every must be > 0 and batch >= 1")

    @classmethod
    def of(cls, system: ActorSystem) -> Retention:
        """The system's retention: its topology's, else the defaults."""
        return system.extensions.setdefault(cls, cls)

    @property
    def prunes(self) -> bool:
        return any(age is not None for age in (self.stored, self.dead, self.results))

    def cutoffs(self, now: float) -> tuple[dict[str, float], float | None]:
        """For `Journal.prune`: the time before which each ended state's jobs go, and results."""
        ended: dict[str, float] = {}
        if self.stored is not None:
            ended["stored"] = now - self.stored
        if self.dead is not None:
            ended["dead"] = ended["parked"] = now - self.dead
        return ended, None if self.results is None else now - self.results


def prune_all(journal: Journal, retention: Retention, now: float, stop: threading.Event | None = None) -> Pruned:
    """Prune `journal` by `retention` as of `now`, a batch per transaction, until nothing is
    due (or `stop` is set), then fold its counting rows; returns what was deleted in all."""
    ended, results_before = retention.cutoffs(now)
    jobs = results = 0
    while retention.prunes and (stop is None or not stop.is_set()):
        pruned = journal.prune(ended, results_before, retention.batch)
        jobs, results = jobs + pruned.jobs, results + pruned.results
        if pruned.jobs < retention.batch and pruned.results < retention.batch:
            break
    journal.fold_counts()
    return Pruned(jobs, results)


class Pruner:
    """Prunes a journal by a retention, every `retention.every` seconds, on a daemon thread,
    through a connection of its own (`open_journal()`, opened on that thread). Failures are
    reported to `on_error` and retried at the next turn; `stop()` ends it."""

    def __init__(
        self,
        open_journal: Callable[[], Journal],
        retention: Retention,
        *,
        on_pruned: Callable[[Pruned, float], None],
        on_error: Callable[[BaseException], None],
        name: str = "journal pruner",
    ) -> None:
        self._open_journal = open_journal
        self.retention = retention
        self._on_pruned = on_pruned
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread (it also folds PostgreSQL's counting rows when nothing is pruned)."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        journal: Journal | None = None
        try:
            while not self._stop.is_set():
                try:
                    journal = journal or self._open_journal()
                    started = time.monotonic()
                    pruned = prune_all(journal, self.retention, time.time(), self._stop)
                    if pruned.jobs or pruned.results:
                        self._on_pruned(pruned, time.monotonic() - started)
                except Exception as exc:  # noqa: BLE001 - unreachable, fenced or broken: report, try again later
                    self._on_error(exc)
                    if journal is not None:
                        journal.close()
                        journal = None
                self._stop.wait(self.retention.every)
        finally:
            if journal is not None:
                journal.close()
