"""Typed messages of the resilience actors: alerts, breakers, Hold, proxies and rate limits."""

from __future__ import annotations

from typing import Literal

from flotilla.actors.core.messages import Message

# --- alerts -------------------------------------------------------------------------------

AlertSeverity = Literal["info", "warning", "critical"]


class Alert(Message, frozen=True, tag=True):
    """Something an operator should know now: a target drifting, a breaker opening, the
    fleet entering Hold. Sent to the alert sink, which logs, counts and forwards it."""

    severity: AlertSeverity
    source: str
    title: str
    detail: str = ""
    at: float = 0.0


# --- resilience: node gates and the fleet's control actors --------------------------------
# Every node's gate reports what its fetchers saw, in batches, and gets the current state
# back; see actors/resilience/gate.py for the protocol.

BreakerStateName = Literal["closed", "open", "half_open"]


class TargetReport(Message, frozen=True, tag=True):
    """A gate's outcomes per target since its last report (True = success, in order; the
    half-open trial calls' apart), its extracted pages per target (True = the page had its
    required fields, False = drifted) with samples of the drifted ones, the latest failure
    seen per target, and the targets whose jobs wait for a trial call."""

    gate: str
    outcomes: dict[str, list[bool]] = {}
    trials: dict[str, list[bool]] = {}
    extractions: dict[str, list[bool]] = {}
    drifted: dict[str, list[str]] = {}
    last_failure: dict[str, str] = {}
    want_trials: list[str] = []


class BreakerStatus(Message, frozen=True, tag=True):
    """One target's breaker as a gate needs it: open for `open_for` more seconds, and the
    trial calls granted to this gate (new permits, to be added)."""

    state: BreakerStateName
    open_for: float = 0.0
    trials: int = 0
    reason: str = ""


class BreakerStates(Message, frozen=True, tag=True):
    """Every breaker of `shard` that is not closed (all others are)."""

    shard: int
    states: dict[str, BreakerStatus] = {}


class BreakerCommand(Message, frozen=True, tag=True):
    """An operator opens (`trip`) or closes (`reset`) the breaker of `target`."""

    target: str
    action: Literal["trip", "reset"]


class FleetReport(Message, frozen=True, tag=True):
    """A gate's fetch outcomes since its last report, for the fleet's health: successes and
    failures, of which probes, how many jobs it held back because of Hold, and per target
    [succeeded, failed] for the calls made while that target's breaker was closed."""

    gate: str
    succeeded: int = 0
    failed: int = 0
    probes_succeeded: int = 0
    probes_failed: int = 0
    held_back: int = 0
    targets: dict[str, list[int]] = {}


HoldMode = Literal["auto", "on", "off"]


class HoldStatus(Message, frozen=True, tag=True):
    """The fleet's Hold as a gate needs it: `probes` new probe permits for this gate."""

    on: bool
    mode: HoldMode = "auto"
    reason: str = ""
    since: float = 0.0
    success_rate: float | None = None
    probes: int = 0


class HoldCommand(Message, frozen=True, tag=True):
    """An operator forces Hold `on` or `off`, or gives it back to the fleet's health
    (`auto`); None only asks for the status. Answered with a `HoldStatus`."""

    mode: HoldMode | None = None


class ProxyReport(Message, frozen=True, tag=True):
    """A gate's outcomes per proxy since its last report (True = success, in order)."""

    gate: str
    outcomes: dict[str, list[bool]] = {}


class ProxyStatus(Message, frozen=True, tag=True):
    """A proxy's breaker state and health (share of recent successes, 1.0 when unknown)."""

    state: BreakerStateName
    health: float = 1.0
    open_for: float = 0.0


class ProxyStates(Message, frozen=True, tag=True):
    """Every proxy of the pool (in the topology's order) and its status."""

    states: dict[str, ProxyStatus] = {}


class TokenRequest(Message, frozen=True, tag=True):
    """A gate wants `wanted` fetch slots for `target` (its fetchers are waiting)."""

    gate: str
    target: str
    wanted: int


class TokenGrant(Message, frozen=True, tag=True):
    """`tokens` fetch slots for `target`, to be used within `ttl` seconds."""

    target: str
    tokens: int
    ttl: float


class SlowDown(Message, frozen=True, tag=True):
    """`target` answered 429 with Retry-After `seconds`: slow it down that long."""

    target: str
    seconds: float


WIRE_MESSAGES: tuple[type[Message], ...] = (
    Alert,
    TargetReport,
    BreakerStatus,
    BreakerStates,
    BreakerCommand,
    FleetReport,
    HoldStatus,
    HoldCommand,
    ProxyReport,
    ProxyStatus,
    ProxyStates,
    TokenRequest,
    TokenGrant,
    SlowDown,
)
"""The message types of the resilience actors that may cross between nodes: part of the wire
codec's table (`flotilla.nodes.cluster.codec`)."""
