"""Child specs: what a supervisor starts, how it restarts it and how long it waits.

Three kinds, as in the topology: a worker (`ChildSpec`), a nested supervisor
(`SupervisorSpec`) and a pool of identical replicas (`PoolSpec`). Specs are immutable and
checked when built; a bad value raises `ValueError` naming the field.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from flotilla.actors.core.backoff import backoff_delay

if TYPE_CHECKING:
    from flotilla.actors.core.actor import Actor

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
ShutdownPolicy = float | Literal["brutal_kill", "infinity"]

RESTART_TYPES: tuple[str, ...] = get_args(RestartType)
STRATEGIES: tuple[str, ...] = get_args(Strategy)

DEFAULT_RESTART: RestartType = "permanent"
"""Restart type of every kind of child unless its spec says otherwise."""
DEFAULT_INTENSITY = 3
"""Restarts allowed within `DEFAULT_PERIOD` before a supervisor gives up (Elixir's 3 in
5 s; OTP's 1 in 5 s takes a supervisor down on the second crash of a network glitch)."""
DEFAULT_PERIOD = 5.0
DEFAULT_WORKER_SHUTDOWN = 5.0
"""Seconds a worker gets to stop before it is abandoned (OTP's 5000 ms)."""
DEFAULT_SUPERVISOR_SHUTDOWN: ShutdownPolicy = "infinity"
"""A supervisor or pool waits for its children, each bounded by its own shutdown."""
DEFAULT_START_TIMEOUT = 5.0
"""Seconds a worker's `on_start` may take before the start counts as failed. (The
constructor runs in the supervisor's thread, as in Pykka, and should only store its
arguments.)"""


def _check_id(kind: str, value: str) -> None:
    if not value or "/" in value:
        raise ValueError(f"{kind} id {value!r} must be non-empty and contain no '/'")


def _check_restart(value: str) -> None:
    if value not in RESTART_TYPES:
        raise ValueError(f"restart {value!r} is not one of {', '.join(RESTART_TYPES)}")


def _check_shutdown(value: ShutdownPolicy, *, allow_infinity: bool) -> None:
    if value == "brutal_kill" or (value == "infinity" and allow_infinity):
        return
    if isinstance(value, str) or isinstance(value, bool) or not value > 0:
        allowed = "a number of seconds > 0, brutal_kill" + (" or infinity" if allow_infinity else "")
        raise ValueError(f"shutdown {value!r} must be {allowed}")


@dataclass(frozen=True)
class Backoff:
    """Delay before a restart: ``min(max, min_delay * 2**n) * (1 + U(0,1) * random_factor)``.

    `n` counts restarts in a row; it goes back to 0 once the child has run for
    `reset_after` seconds (default: halfway between `min` and `max`, as in Akka).
    """

    min: float = 0.1
    max: float = 10.0
    random_factor: float = 0.2
    reset_after: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min <= self.max:
            raise ValueError(f"backoff needs 0 < min <= max, got min={self.min} max={self.max}")
        if not 0 <= self.random_factor <= 1:
            raise ValueError(f"backoff random_factor {self.random_factor} must be in [0, 1]")
        if self.reset_after is not None and self.reset_after <= 0:
            raise ValueError(f"backoff reset_after {self.reset_after} must be > 0")

    @property
    def healthy_after(self) -> float:
        """Seconds of running after which the restart count goes back to zero."""
        return self.reset_after if self.reset_after is not None else (self.min + self.max) / 2

    def delay(self, restarts_in_a_row: int, rng: random.Random) -> float:
        """Seconds to wait before restart number `restarts_in_a_row` (0-based)."""
        return backoff_delay(self.min, self.max, restarts_in_a_row, jitter=self.random_factor, rng=rng)


@dataclass(frozen=True)
class ChildSpec:
    """A worker: `actor(**args)` started under a supervisor."""

    id: str
    actor: type[Actor]
    args: Mapping[str, Any] = field(default_factory=dict)
    restart: RestartType = DEFAULT_RESTART
    shutdown: ShutdownPolicy = DEFAULT_WORKER_SHUTDOWN
    start_timeout: float = DEFAULT_START_TIMEOUT

    kind = "worker"

    def __post_init__(self) -> None:
        _check_id("child", self.id)
        _check_restart(self.restart)
        _check_shutdown(self.shutdown, allow_infinity=False)
        if not self.start_timeout > 0:
            raise ValueError(f"start_timeout {self.start_timeout!r} must be > 0")

    @property
    def actor_name(self) -> str:
        """The actor class as ``module:Class``."""
        return f"{self.actor.__module__}:{self.actor.__qualname__}"


@dataclass(frozen=True)
class SupervisorFlags:
    """How a supervisor restarts its children and when it gives up."""

    strategy: Strategy = "one_for_one"
    intensity: int = DEFAULT_INTENSITY
    period: float = DEFAULT_PERIOD
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if isinstance(self.intensity, bool) or not isinstance(self.intensity, int) or self.intensity < 0:
            raise ValueError(f"intensity {self.intensity!r} must be an integer >= 0")
        if not self.period > 0:
            raise ValueError(f"period {self.period!r} must be > 0")


@dataclass(frozen=True)
class SupervisorSpec:
    """A nested supervisor and the children it starts, in order."""

    id: str
    children: tuple[Spec, ...] = ()
    flags: SupervisorFlags = SupervisorFlags()
    restart: RestartType = DEFAULT_RESTART
    shutdown: ShutdownPolicy = DEFAULT_SUPERVISOR_SHUTDOWN
    node: str | None = None

    kind = "supervisor"

    def __post_init__(self) -> None:
        _check_id("supervisor", self.id)
        _check_restart(self.restart)
        _check_shutdown(self.shutdown, allow_infinity=True)
        ids = [child.id for child in self.children]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"supervisor {self.id!r} has duplicate child ids: {', '.join(duplicates)}")

    @property
    def actor_name(self) -> str:
        return "supervisor"


@dataclass(frozen=True)
class PoolSpec:
    """`size` replicas of one worker spec, scalable at run time, under their own supervisor.

    Replicas get ids ``0``..``size-1``; a message sent to the pool's path goes to one live
    replica (round-robin; one on the sender's node first, if any lives there). With
    `replica_nodes`, replica ``i`` runs on ``replica_nodes[i % len(replica_nodes)]``;
    otherwise on the pool's node.
    """

    id: str
    worker: ChildSpec
    size: int = 1
    flags: SupervisorFlags = SupervisorFlags()
    restart: RestartType = DEFAULT_RESTART
    shutdown: ShutdownPolicy = DEFAULT_SUPERVISOR_SHUTDOWN
    node: str | None = None
    replica_nodes: tuple[str, ...] = ()

    kind = "pool"

    def __post_init__(self) -> None:
        _check_id("pool", self.id)
        _check_restart(self.restart)
        _check_shutdown(self.shutdown, allow_infinity=True)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"pool size {self.size!r} must be an integer >= 0")
        if self.flags.strategy != "one_for_one":
            raise ValueError("a pool restarts its replicas one_for_one")

    @property
    def actor_name(self) -> str:
        return f"pool of {self.worker.actor_name}"

    def replica(self, index: int) -> ChildSpec:
        """The spec of replica `index`."""
        w = self.worker
        return ChildSpec(
            id=str(index),
            actor=w.actor,
            args=w.args,
            restart=w.restart,
            shutdown=w.shutdown,
            start_timeout=w.start_timeout,
        )


Spec = ChildSpec | SupervisorSpec | PoolSpec


def actor_classes(spec: Spec) -> Iterator[type[Actor]]:
    """The actor class of every worker in `spec`'s tree (a pool's once), in start order."""
    if isinstance(spec, ChildSpec):
        yield spec.actor
    elif isinstance(spec, PoolSpec):
        yield spec.worker.actor
    else:
        for child in spec.children:
            yield from actor_classes(child)
