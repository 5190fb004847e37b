"""Actors and tools shared by the tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flotilla.actors import Actor, ActorSystem
from flotilla.actors.core.messages import Normal, Shutdown, SupervisorReport


class Crash:
    """Ask or tell this to a `Probe` to make its handler raise."""


class ExitNormally:
    """Ask this to a `Probe` to make it end with `Normal`."""


class ExitShutdown:
    """Ask this to a `Probe` to make it end with `Shutdown`."""


class Block:
    """Ask this to a `Probe` to block its handler until `release` is set; `entered` is set
    once the handler runs."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.entered = threading.Event()


@dataclass
class Journal:
    """A thread-safe list of (event, path, incarnation) shared by probes of one test."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, event: str, path: str, incarnation: int) -> None:
        with self.lock:
            self.entries.append((event, path, incarnation))

    def events(self, event: str) -> list[str]:
        with self.lock:
            return [path.rsplit("/", 1)[-1] for e, path, _ in self.entries if e == event]


class Probe(Actor):
    """A worker for tests: echoes, crashes, exits or blocks on request, and can be told to
    fail or stall in its constructor, `on_start` or `on_stop`."""

    def __init__(
        self,
        journal: Journal | None = None,
        fail_start: Callable[[], bool] | None = None,
        fail_init: bool = False,
        stop_delay: float = 0.0,
        start_delay: float = 0.0,
    ) -> None:
        super().__init__()
        if fail_init:
            raise RuntimeError("constructor failed on purpose")
        self.journal = journal
        self.fail_start = fail_start
        self.stop_delay = stop_delay
        self.start_delay = start_delay
        self.failures: list[str] = []

    def on_start(self) -> None:
        if self.start_delay:
            threading.Event().wait(self.start_delay)
        if self.fail_start is not None and self.fail_start():
            raise RuntimeError("on_start failed on purpose")
        if self.journal is not None:
            self.journal.add("start", self.path, self.incarnation)

    def on_stop(self) -> None:
        if self.stop_delay:
            threading.Event().wait(self.stop_delay)
        if self.journal is not None:
            self.journal.add("stop", self.path, self.incarnation)

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.journal is not None:
            self.journal.add("failure", self.path, self.incarnation)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise ValueError(f"crash requested in {self.path}")
        if isinstance(message, ExitNormally):
            self.exit(Normal())
            return "exiting"
        if isinstance(message, ExitShutdown):
            self.exit(Shutdown("done"))
            return "exiting"
        if isinstance(message, Block):
            message.entered.set()
            message.release.wait(30)
            return "released"
        if message == "whoami":
            return (self.path, self.incarnation)
        if message == "crash":  # the plain-data forms, for other nodes
            raise ValueError(f"crash requested in {self.path}")
        if message == "exit":
            self.exit(Normal())
            return "exiting"
        return message


class Inbox(Actor):
    """Keeps every message told to it, in order (a stand-in for a node's gate)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.received.append(message)
        return None


class Reports:
    """Records supervisor reports and waits for the ones a test expects."""

    def __init__(self, system: ActorSystem) -> None:
        self.items: list[SupervisorReport] = []
        self._changed = threading.Condition()
        system.add_report_listener(self._add)

    def _add(self, report: SupervisorReport) -> None:
        with self._changed:
            self.items.append(report)
            self._changed.notify_all()

    def of(self, event: str, child_suffix: str | None = None) -> list[SupervisorReport]:
        with self._changed:
            return [
                r
                for r in self.items
                if r.event == event and (child_suffix is None or r.child.endswith("/" + child_suffix))
            ]

    def wait_for(
        self, event: str, child_suffix: str | None = None, *, count: int = 1, timeout: float = 5.0
    ) -> list[SupervisorReport]:
        """Wait until at least `count` matching reports exist; fail the test past `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [
                    r
                    for r in self.items
                    if r.event == event and (child_suffix is None or r.child.endswith("/" + child_suffix))
                ]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(r.event, r.child) for r in self.items]
                    raise AssertionError(f"no {count}x {event} {child_suffix or ''} within {timeout}s; saw {seen}")
                self._changed.wait(remaining)


class FakeClock:
    """A clock the test advances by hand (supervisors read it for intensity windows)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def crash(system: ActorSystem, path: str) -> None:
    """Crash the incarnation at `path` through an ask, then wait until its supervisor has
    handled the exit (the exit is queued at the supervisor before the asker hears)."""
    from flotilla.actors import ActorCrashed, Unavailable
    from flotilla.actors.core.messages import WhichChildren

    try:
        system.ask(path, Crash())
    except ActorCrashed:
        pass
    else:
        raise AssertionError(f"{path} did not crash")
    try:
        system.ask(path.rsplit("/", 1)[0], WhichChildren())
    except Unavailable:
        pass  # the supervisor gave up


class CrashingFetcher(Actor):
    """A fetcher with a bug: it crashes on any job whose URL contains "/poison/" and
    answers every other job at once with a page's worth of fields."""

    def on_receive(self, message: Any) -> Any:
        from flotilla.actors.pipeline.messages import FetchJob, JobOutcome

        if isinstance(message, FetchJob):
            if "/poison/" in message.url:
                raise RuntimeError(f"bug triggered by {message.url}")
            self.system.ref(message.reply_to).tell(
                JobOutcome(message.key, message.token, fields={"title": "ok"}, content_hash="h")
            )
            return None
        return super().on_receive(message)
