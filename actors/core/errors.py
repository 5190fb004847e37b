"""The typed errors an asker (or a caller of the supervisor API) can get."""

from __future__ import annotations

import pykka

from flotilla.actors.core.messages import Crash, SupervisorErrorCode


class AskError(Exception):
    """An ask to `path` got no reply; the subclass says why."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path


class Unavailable(AskError, pykka.ActorDeadError):
    """No live incarnation behind the path: the message became a dead letter. (Also a
    `pykka.ActorDeadError`, so Pykka's own calls treat it as "actor dead".)"""

    def __init__(self, path: str) -> None:
        super().__init__(path, "no live incarnation (dead letter)")


class ActorCrashed(AskError):
    """The handler raised while handling this very ask; its incarnation has ended."""

    def __init__(self, path: str, reason: Crash) -> None:
        super().__init__(path, f"crashed handling the ask: {reason.type}: {reason.message}")
        self.reason = reason


class Timeout(AskError, TimeoutError):
    """No reply within the ask's timeout. The message may still be handled later."""

    def __init__(self, path: str, seconds: float) -> None:
        super().__init__(path, f"no reply within {seconds:g} s")
        self.seconds = seconds


class SupervisorError(Exception):
    """A supervisor refused a request; `code` mirrors OTP's ``{error, Code}``."""

    def __init__(self, supervisor: str, code: SupervisorErrorCode, detail: str = "") -> None:
        text = f"{supervisor}: {code}" + (f" ({detail})" if detail else "")
        super().__init__(text)
        self.supervisor = supervisor
        self.code = code
        self.detail = detail


class NoSuchActor(AskError):
    """The path names nothing on the node that should run it (not in its tree)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "no such actor")


class NodeUnreachable(AskError):
    """The node that runs the path is down, or went down before answering."""

    def __init__(self, path: str, node: str) -> None:
        super().__init__(path, f"node {node} is down")
        self.node = node


class RemoteFailure(AskError):
    """The message or its answer could not cross between nodes (`detail` says why)."""
