"""What runs: supervised actors, supervisors and the typed messages between them."""

from actors.actor import Actor
from actors.child_spec import Backoff, ChildSpec, PoolSpec, SupervisorFlags, SupervisorSpec
from actors.errors import ActorCrashed, AskError, SupervisorError, Timeout, Unavailable
from actors.registry import PathRef
from actors.system import ActorSystem, RootStartError

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
