"""A node's local view of the fleet's resilience state, read by its fetchers without asking anyone.

Every actor system keeps one `ResilienceView` in its extensions (`ResilienceView.of(system)`). The node's gate
(actors/resilience/gate.py) keeps it current from the breaker shards, the Hold monitor, the proxy pool
and the rate limiter, and collects from it what the node's fetchers and extractors saw. The
fetchers call it before and after each request, from their own event loops:

* `admit(target)` — may the target be asked now, and through which proxy? A lock and a few
  dict lookups: an open breaker, Hold or no usable proxy answer `Wait` (the job goes back to
  the journal and waits there, uncounted); half-open breakers and Hold let through only the
  trial calls and probes granted to this node.
* `acquire(target, timeout)` — a rate-limit slot: one of the tokens leased to this node, at
  once if one is there, otherwise waited for in arrival order until the gate brings more.
* `record(...)` — the outcome, for the gate's next report.

Parts that are not configured do not restrict anything: with no gate at all, every target is
admitted directly and slots are free.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from flotilla.actors.resilience.messages import BreakerStatus, HoldStatus, ProxyStatus

if TYPE_CHECKING:
    from flotilla.actors.core.system import ActorSystem

Outcome = Literal["answered", "ok", "transient", "blocked", "drift", "hard"]

TRIAL_WAIT = 1.0
"""A job for a half-open target with no trial permit here waits about this long."""
PROBE_WAIT = 2.0
"""A job held back by Hold waits about this long (probes decide when Hold ends)."""
NO_PROXY_WAIT = 5.0
"""A job with no usable proxy waits about this long."""
PROXY_AVOID = 60.0
"""After a target blocked a proxy, that target avoids that proxy this long."""
PROXY_TRIAL_AGAIN = 10.0
"""A half-open proxy whose trial from this node never reported gets another after this long."""
STICKY_IDLE = 600.0
"""A target not fetched for this long forgets its proxy (and memory stays bounded)."""
TRIAL_FRESH_FIRST = 1.0
"""A half-open breaker's trial permits go to jobs that have not failed at the target yet; a
job that has may take one only after the permit went unused this long (none fresher came)."""
DRIFT_SAMPLES = 3
"""Drifted pages per target whose URL is kept between two reports (evidence for the alert)."""
PRUNE_EVERY = 100
"""The view forgets expired entries every this many reports."""
MAX_RECORDED = 200
"""Most outcomes per target (or proxy) kept between two reports (the newest)."""


DEFAULT_PORTS = {"http": 80, "https": 443}


def target_of(url: str) -> str:
    """The target a URL belongs to, for breakers and rate limits: its host, with the port if
    it is not the scheme's default (``example.com``, ``127.0.0.1:8800``)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port == DEFAULT_PORTS.get(parts.scheme.lower()):
        port = None  # http://x.com:80/ and http://x.com/ are one target
    return f"{host}:{port}" if port is not None else host


@dataclass(frozen=True)
class Go:
    """Ask the target now, through `proxy` (None: directly); `trial`, `probe` and
    `proxy_trial` say which permits this call used."""

    proxy: str | None = None
    trial: bool = False
    probe: bool = False
    proxy_trial: bool = False


@dataclass(frozen=True)
class Wait:
    """Do not ask the target now; the job should wait about `delay` seconds."""

    delay: float
    reason: str


@dataclass
class _Breaker:
    state: str
    open_until: float
    trials: int = 0
    reason: str = ""
    granted_at: float = 0.0  # when its current trial permits came


@dataclass
class _Proxy:
    status: ProxyStatus
    open_until: float = 0.0
    trials: int = 0
    armed_at: float = 0.0  # when this node last got a trial permit for it (half-open)


@dataclass
class _Reports:
    """What happened since the gate's last report."""

    targets: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    trials: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    extractions: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    """Pages extracted per target: True if it had the required fields, False if it drifted."""
    drifted: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """Samples of drifted pages per target ("URL: missing fields")."""
    last_failure: dict[str, str] = field(default_factory=dict)
    """The latest failed call per target (what it saw), for the breaker's reason."""
    fleet: dict[str, list[int]] = field(default_factory=dict)
    """Per target [succeeded, failed] calls made while its breaker was closed (for Hold)."""
    want_trials: set[str] = field(default_factory=set)
    proxies: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    slowdowns: dict[str, float] = field(default_factory=dict)
    succeeded: int = 0
    failed: int = 0
    probes_succeeded: int = 0
    probes_failed: int = 0
    held_back: int = 0
    urgent: bool = False
    """A 429 slow-down is among them: report now, not on the next tick."""


class ResilienceView:
    """See the module docstring. Thread-safe: fetchers, extractors and the gate share it."""

    @classmethod
    def of(cls, system: ActorSystem) -> ResilienceView:
        """The view `system` holds (put there by the node runtime; a system without one
        gets an empty one, which restricts nothing until a gate configures it)."""
        return system.extensions.setdefault(cls, cls)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random()
        self.breakers_on = False
        self.limiter_on = False
        self.proxies_on = False
        self.hold_on = False
        """Set by the gate for the parts the topology configures."""
        self._breakers: dict[str, _Breaker] = {}
        self._hold = HoldStatus(on=False)
        self._probes = 0
        self._proxies: dict[str, _Proxy] = {}
        self._proxy_list: list[str] = []
        self._proxies_known = False
        self._sticky: dict[str, tuple[str, float]] = {}  # target -> (proxy, last used)
        self._avoid: dict[tuple[str, str], float] = {}
        self._next_proxy = 0
        self._wallets: dict[str, deque[list[float]]] = defaultdict(deque)  # [tokens, expires_at]
        self._waiters: dict[str, deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]]] = defaultdict(deque)
        self._reports = _Reports()
        self.slot_waits: Counter[str] = Counter()
        """Fetches that had to wait for a rate-limit slot, by target (and how long in all)."""
        self.slot_wait_seconds: defaultdict[str, float] = defaultdict(float)
        self.slot_timeouts: Counter[str] = Counter()
        self._rounds = 0
        self._signalled = False
        self.notify: Callable[[], None] = lambda: None
        """Called (outside the lock) when the gate should act before its next tick: slots
        are wanted, or something urgent happened. Set by the gate."""

    # --- fetchers ---------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Is any part configured? (If not, fetchers skip the view altogether.)"""
        return self.breakers_on or self.limiter_on or self.hold_on or self.proxies_on

    def admit(self, target: str, fresh: bool = True) -> Go | Wait:
        """May `target` be asked now, and how? (See the module docstring.) `fresh`: the job
        has not failed at the target yet — a half-open breaker's trials go to such jobs first."""
        now = self._clock()
        with self._lock:
            trial = False
            breaker = self._breakers.get(target) if self.breakers_on else None
            if breaker is not None:
                if breaker.state == "open" and now < breaker.open_until:
                    return Wait(self._spread(breaker.open_until - now), f"breaker open for {target}: {breaker.reason}")
                if breaker.trials <= 0:
                    self._reports.want_trials.add(target)
                    return Wait(self._spread(TRIAL_WAIT), f"breaker half-open for {target}: waiting for a trial call")
                if not fresh and now - breaker.granted_at < TRIAL_FRESH_FIRST:
                    return Wait(
                        self._spread(TRIAL_WAIT),
                        f"breaker half-open for {target}: trial calls go first to jobs that have not failed there",
                    )
                breaker.trials -= 1
                trial = True
            probe = False
            if self.hold_on and self._hold.on:
                if self._probes <= 0:
                    self._reports.held_back += 1
                    self._give_back(target, Go(None, trial))
                    return Wait(self._spread(PROBE_WAIT), "the fleet is in Hold")
                self._probes -= 1
                probe = True
            proxy, proxy_trial = None, False
            if self.proxies_on:
                proxy, proxy_trial = self._choose_proxy(target, now)
                if proxy is None:
                    self._give_back(target, Go(None, trial, probe))
                    why = "no proxy is usable" if self._proxies_known else "the proxy list is not known yet"
                    return Wait(self._spread(NO_PROXY_WAIT), f"{why} for {target}")
            return Go(proxy, trial, probe, proxy_trial)

    def cancel(self, target: str, go: Go) -> None:
        """An admitted call was not made after all: give its permits back."""
        with self._lock:
            self._give_back(target, go)

    def _give_back(self, target: str, go: Go) -> None:
        """Return unused permits to what granted them, if it still stands."""
        breaker = self._breakers.get(target)
        if go.trial and breaker is not None and breaker.state == "half_open":
            breaker.trials += 1
        if go.probe and self._hold.on:
            self._probes += 1
        entry = self._proxies.get(go.proxy or "")
        if go.proxy_trial and entry is not None and entry.status.state == "half_open":
            entry.trials += 1

    def _spread(self, delay: float) -> float:
        """Stretch a wait by up to 20 %, so waiting jobs do not all come back at once."""
        return max(0.05, delay) * (1 + 0.2 * self._rng.random())

    def breaker_reason(self, target: str) -> str:
        """Why the breaker of `target` is not closed ('' if it is)."""
        with self._lock:
            breaker = self._breakers.get(target)
            return breaker.reason if breaker is not None else ""

    def open_for(self, target: str) -> float:
        """Seconds the breaker of `target` stays open (0 if it may be asked, or tried)."""
        if not self.breakers_on:
            return 0.0
        with self._lock:
            breaker = self._breakers.get(target)
            if breaker is None or breaker.state != "open":
                return 0.0
            return max(0.0, breaker.open_until - self._clock())

    def holding(self) -> HoldStatus:
        """The fleet's Hold as this node last heard of it."""
        with self._lock:
            return self._hold

    def breaker_states(self) -> dict[str, str]:
        """The state of each breaker this node has heard of, by target."""
        with self._lock:
            return {t: b.state for t, b in self._breakers.items()}

    def slot_waiters(self) -> dict[str, int]:
        """Fetches waiting for a rate-limit slot now, by target (targets with none are absent)."""
        with self._lock:
            return {t: len(w) for t, w in self._waiters.items() if w}

    def record(
        self,
        target: str,
        outcome: Outcome,
        *,
        proxy: str | None = None,
        trial: bool = False,
        probe: bool = False,
        proxy_fault: bool = False,
        retry_after: float | None = None,
        status: int = 0,
        detail: str = "",
        url: str = "",
        retry: bool = False,
        page: bool = False,
    ) -> None:
        """What one call to `target` gave, as the fetcher saw it when the answer came
        (`answered`: a page came; HARD answers count as the target answering too; a block
        through a proxy, or a proxy that could not be reached, count against the proxy, not
        the target) — or, with `page`, the extractor's verdict on the page it got (`ok`,
        `drift`, `blocked` for a challenge page, `hard` for an unparseable one). A page's
        verdict counts towards the target's drift; it is the call's outcome only for trial
        calls and probes (whose fetch the fetcher leaves to the extractor to judge: a
        drifted trial page fails the trial) and for a challenge page (a failure). So the
        breakers see each call when its answer comes, however far the extractors lag.
        `trial` and `probe` say which permit the call used; `detail` says what a failure or
        a drift saw, `url` which page drifted. A failed `retry` (the job had failed before)
        does not count against the target: a page that keeps failing tells about that page,
        not its host. Nothing is kept when no part is configured (nobody would collect it)."""
        if not self.active:
            return
        now = self._clock()
        urgent = False
        with self._lock:
            reports = self._reports
            if page and outcome in ("ok", "drift"):
                _append(reports.extractions[target], outcome == "ok")
                if outcome == "drift" and len(reports.drifted[target]) < DRIFT_SAMPLES:
                    reports.drifted[target].append(f"{url}: {detail}" if url else detail)
            if page and not (trial or probe or outcome == "blocked"):
                return  # the fetcher counted the call when its answer came
            success = outcome in ("answered", "ok", "hard", "drift")
            if proxy and (outcome == "blocked" or proxy_fault):
                pass  # the proxy was blocked, or could not be reached: not the target's doing
            elif retry and not success and not trial:
                pass  # the same page failing again: its own retries handle it
            elif trial:  # a trial call's page must be a real one: a drifted page fails the trial
                _append(reports.trials[target], outcome in ("answered", "ok", "hard"))
            else:
                _append(reports.targets[target], success)
            if not success and detail:
                reports.last_failure[target] = detail[:300]
            if success:
                reports.succeeded += 1
            else:
                reports.failed += 1
            if probe:
                if success:
                    reports.probes_succeeded += 1
                else:
                    reports.probes_failed += 1
            breaker = self._breakers.get(target)
            if not trial and not (retry and not success) and (breaker is None or breaker.state == "closed"):
                tally = reports.fleet.setdefault(target, [0, 0])  # the fleet's health: isolated targets excluded
                tally[0 if success else 1] += 1
            if proxy:
                blamed = outcome == "blocked" or proxy_fault
                _append(reports.proxies[proxy], not blamed)
                if outcome == "blocked":
                    self._avoid[(target, proxy)] = now + PROXY_AVOID
                if blamed and self._sticky.get(target, ("",))[0] == proxy:
                    del self._sticky[target]
            if status == 429 and retry_after:
                reports.slowdowns[target] = max(retry_after, reports.slowdowns.get(target, 0.0))
                self._wallets.pop(target, None)
                urgent = reports.urgent = True
        if urgent:
            self._signal()

    # --- rate-limit slots ----------------------------------------------------------------

    async def acquire(self, target: str, timeout: float) -> bool:
        """Take a slot for `target`, waiting up to `timeout` seconds behind earlier callers;
        False if none came in time."""
        if not self.limiter_on:
            return True
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._take(target, self._clock()):
                return True
            future: asyncio.Future[bool] = loop.create_future()
            self._waiters[target].append((loop, future))
        self._signal()
        began = time.monotonic()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            with self._lock:
                waiting = self._waiters.get(target)
                try:
                    waiting.remove((loop, future))  # type: ignore[union-attr]
                except (AttributeError, ValueError):
                    pass  # a slot is on its way to the cancelled future: _resolve gives it back
                if not waiting:
                    self._waiters.pop(target, None)
                self.slot_timeouts[target] += 1
            return False
        finally:
            with self._lock:
                self.slot_waits[target] += 1
                self.slot_wait_seconds[target] += time.monotonic() - began

    def _take(self, target: str, now: float) -> bool:
        if self._waiters.get(target):
            return False  # first come, first served
        wallet = self._wallets.get(target)
        while wallet:
            batch = wallet[0]
            if batch[1] <= now or batch[0] < 1:
                wallet.popleft()
                continue
            batch[0] -= 1
            return True
        self._wallets.pop(target, None)
        return False

    def wanted(self) -> dict[str, int]:
        """Slots wanted per target: the callers waiting for one."""
        with self._lock:
            self._signalled = False
            return {target: len(waiting) for target, waiting in self._waiters.items() if waiting}

    def grant(self, target: str, tokens: int, ttl: float) -> None:
        """The limiter leased `tokens` slots for `target`, usable for `ttl` seconds: hand
        them to waiting callers in arrival order, keep the rest."""
        now = self._clock()
        with self._lock:
            self._hand_out(target, tokens, now + ttl)

    def _hand_out(self, target: str, tokens: int, expires: float) -> None:
        """Give slots valid until `expires` to the waiting callers in order; keep the rest."""
        waiting = self._waiters.get(target)
        while tokens > 0 and waiting:
            loop, future = waiting.popleft()
            tokens -= 1
            try:
                loop.call_soon_threadsafe(self._resolve, target, future, expires)
            except RuntimeError:  # that loop is closed: its caller is gone
                tokens += 1
        if waiting is not None and not waiting:
            self._waiters.pop(target, None)
        if tokens > 0:
            self._wallets[target].append([float(tokens), expires])

    def _resolve(self, target: str, future: asyncio.Future[bool], expires: float) -> None:
        """In the caller's loop: deliver the slot, or give it back if the caller gave up."""
        if not future.done():
            future.set_result(True)
            return
        with self._lock:
            if expires > self._clock():
                self._hand_out(target, 1, expires)

    # --- the gate ------------------------------------------------------------------------

    def _signal(self) -> None:
        with self._lock:
            if self._signalled:
                return
            self._signalled = True
        self.notify()

    @property
    def urgent(self) -> bool:
        """Something recorded should be reported before the gate's next tick."""
        return self._reports.urgent

    def take_reports(self) -> _Reports:
        """Everything recorded since the last call (for the gate's reports)."""
        with self._lock:
            self._signalled = False
            reports, self._reports = self._reports, _Reports()
            self._rounds += 1
            if self._rounds % PRUNE_EVERY == 0:
                self._prune(self._clock())
            return reports

    def _prune(self, now: float) -> None:
        """Forget what has run out: proxy avoidances, idle stickiness, spent wallets."""
        for key in [k for k, until in self._avoid.items() if until <= now]:
            del self._avoid[key]
        for target in [t for t, (_, used) in self._sticky.items() if now - used > STICKY_IDLE]:
            del self._sticky[target]
        for target in [t for t, w in self._wallets.items() if all(b[1] <= now for b in w)]:
            del self._wallets[target]

    def apply_breakers(self, owns: Callable[[str], bool], states: dict[str, BreakerStatus]) -> None:
        """A shard's answer: `states` are its breakers that are not closed; every other
        target it `owns` is closed (trial permits granted to this node are added)."""
        now = self._clock()
        with self._lock:
            for target in [t for t in self._breakers if owns(t) and t not in states]:
                del self._breakers[target]
            for target, status in states.items():
                old = self._breakers.get(target)
                kept = old.trials if old is not None and old.state == status.state == "half_open" else 0
                granted_at = now if status.trials else (old.granted_at if old is not None else now)
                self._breakers[target] = _Breaker(
                    status.state, now + status.open_for, kept + status.trials, status.reason, granted_at
                )

    def apply_hold(self, status: HoldStatus) -> None:
        """The Hold monitor's answer (probe permits granted to this node are added)."""
        with self._lock:
            self._hold = status
            self._probes = self._probes + status.probes if status.on else 0

    def apply_proxies(self, states: dict[str, ProxyStatus]) -> None:
        """The proxy pool's answer: every proxy and its state."""
        now = self._clock()
        with self._lock:
            self._proxy_list = list(states)
            for proxy, status in states.items():
                old = self._proxies.get(proxy)
                trials, armed_at = 0, 0.0
                if status.state == "half_open":  # one trial per node at a time
                    if old is not None and old.status.state == "half_open":
                        trials, armed_at = old.trials, old.armed_at
                        if trials == 0 and now - armed_at > PROXY_TRIAL_AGAIN:
                            trials, armed_at = 1, now  # the last trial never reported
                    else:
                        trials, armed_at = 1, now
                self._proxies[proxy] = _Proxy(status, now + status.open_for, trials, armed_at)
            for proxy in [p for p in self._proxies if p not in states]:
                del self._proxies[proxy]
            self._proxies_known = True

    def _choose_proxy(self, target: str, now: float) -> tuple[str | None, bool]:
        """The target's proxy (and whether this is a half-open proxy's trial): the one it
        sticks to while that stays usable, else the healthiest usable one not recently
        blocked by the target (round robin among equals)."""
        sticky = self._sticky.get(target)
        if sticky is not None and self._usable(sticky[0], target, now, trial=False):
            self._sticky[target] = (sticky[0], now)
            return sticky[0], False
        for proxy in self._proxy_list:  # a half-open proxy's trial goes first
            entry = self._proxies[proxy]
            if entry.status.state == "half_open" and entry.trials > 0 and self._usable(proxy, target, now, trial=True):
                entry.trials -= 1
                return proxy, True
        candidates = [p for p in self._proxy_list if self._usable(p, target, now, trial=False)]
        if not candidates:
            return None, False
        best = max(self._proxies[p].status.health for p in candidates)
        healthiest = [p for p in candidates if self._proxies[p].status.health >= best - 0.05]
        chosen = healthiest[self._next_proxy % len(healthiest)]  # the topology's order, in turn
        self._next_proxy += 1
        self._sticky[target] = (chosen, now)
        return chosen, False

    def _usable(self, proxy: str, target: str, now: float, *, trial: bool) -> bool:
        entry = self._proxies.get(proxy)
        if entry is None or self._avoid.get((target, proxy), 0.0) > now:
            return False
        return entry.status.state == "closed" or (trial and entry.status.state == "half_open")

    def snapshot(self) -> dict[str, Any]:
        """What this node currently believes (for operators and tests)."""
        now = self._clock()
        with self._lock:
            return {
                "breakers": {
                    t: {
                        "state": b.state,
                        "open_for": round(max(0.0, b.open_until - now), 3),
                        "trials": b.trials,
                        "reason": b.reason,
                    }
                    for t, b in self._breakers.items()
                },
                "hold": {
                    "on": self._hold.on,
                    "mode": self._hold.mode,
                    "reason": self._hold.reason,
                    "probes": self._probes,
                },
                "proxies": {p: {"state": e.status.state, "health": e.status.health} for p, e in self._proxies.items()},
                "sticky": {t: p for t, (p, _) in self._sticky.items()},
                "slots": {t: sum(b[0] for b in w if b[1] > now) for t, w in self._wallets.items()},
                "waiting_for_slots": {t: len(w) for t, w in self._waiters.items() if w},
            }


def _append(outcomes: list[bool], success: bool) -> None:
    outcomes.append(success)
    if len(outcomes) > MAX_RECORDED:
        del outcomes[: len(outcomes) - MAX_RECORDED]
