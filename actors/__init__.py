"""What runs: supervised actors, supervisors and the typed messages between them."""

from flotilla.actors.core.actor import Actor
from flotilla.actors.core.child_spec import Backoff, ChildSpec, PoolSpec, SupervisorFlags, SupervisorSpec
from flotilla.actors.core.errors import ActorCrashed, AskError, SupervisorError, Timeout, Unavailable
from flotilla.actors.core.registry import PathRef
from flotilla.actors.core.system import ActorSystem, RootStartError

__all__ = [
    "ActorCrashed",
    "Actor",
    "ActorSystem",
    "AskError",
    "Backoff",
    "ChildSpec",
    "PathRef",
    "PoolSpec",
    "RootStartError",
    "SupervisorError",
    "SupervisorFlags",
    "SupervisorSpec",
    "Timeout",
    "Unavailable",
]
