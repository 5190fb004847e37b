"""What each remote-shell command does on the node that serves the shell.

Commands reach the whole cluster through the node's actor system (supervisor requests and
`Inspect` asks go to whichever node runs a path), the control actors named in the
topology's `resilience:` section, and the intake (jobs, dead letters). Each returns plain
data; a problem a user can fix raises `CommandError` with a message that says what is wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from flotilla.actors.core.errors import (
    ActorCrashed,
    NodeUnreachable,
    NoSuchActor,
    SupervisorError,
    Timeout,
    Unavailable,
)
from flotilla.actors.core.messages import Inspect, Trace
from flotilla.actors.core.supervisor import SupervisorClient
from flotilla.actors.pipeline.journal import STATES
from flotilla.actors.resilience.breakers import ShardSnapshot
from flotilla.actors.resilience.limiter import LimiterSnapshot
from flotilla.actors.resilience.messages import HoldCommand
from flotilla.actors.resilience.proxies import ProxySnapshot
from flotilla.nodes.intake.client import IntakeClient, IntakeError, IntakeUnavailable
from flotilla.nodes.intake.protocol import EndedState
from flotilla.nodes.shell.protocol import COMMANDS, LogsPage, TraceStarted

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from flotilla.actors.core.system import ActorSystem
    from flotilla.actors.resilience.messages import BreakerStatus
    from flotilla.nodes.cluster.membership import Cluster
    from flotilla.nodes.config.topology import Topology

T = TypeVar("T")

ASK_TIMEOUT = 5.0
MAX_JOBS_LISTED = 50
MAX_TRACE_SECONDS = 60.0
MAX_COUNT_DIGITS = 9
"""Longest whole-number argument (a count, a size, a log position): larger is a usage error,
never a number the node would choke on."""


AUDIT_EVENTS = frozenset({"shell.command"})
"""The shell's own audit events (every command, as the audit log has it): `logs` leaves them
out unless asked (``--audit``), so reading the log does not show mostly one's own commands."""
EVERY_EVENT = 10**MAX_COUNT_DIGITS
"""More events than a node keeps: ask for this many to get all of them."""


def logs_arguments(args: list[str] | tuple[str, ...]) -> tuple[list[str], bool]:
    """The words of a `logs` request other than ``--audit``, and whether it was given."""
    return [arg for arg in args if arg != "--audit"], "--audit" in args


def _without_audit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event.get("event") not in AUDIT_EVENTS]


class CommandError(Exception):
    """The command cannot be done as asked; the message says why."""


def _whole(text: str) -> int | None:
    """`text` as a whole number of ASCII digits (at most `MAX_COUNT_DIGITS`), else None."""
    if not (text.isascii() and text.isdecimal() and len(text) <= MAX_COUNT_DIGITS):
        return None
    return int(text)


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value, str_keys=True, enc_hook=repr)


class MetricsSource(Protocol):
    """The node's Prometheus registry, which `metrics` prints."""

    @property
    def registry(self) -> CollectorRegistry: ...


class EventSource(Protocol):
    """The node's recent log events, numbered (`flotilla.nodes.runtime.logs.RecentEvents`)."""

    def newest(self, count: int) -> tuple[int, list[dict[str, Any]]]:
        """The last `count` events, and the number of the last event logged."""
        ...

    def since(self, seq: int, limit: int = ...) -> tuple[int, list[dict[str, Any]], int]:
        """Up to `limit` events numbered above `seq`, the number of the last of them, and
        how many after `seq` are gone from memory."""
        ...


class ShellHost(Protocol):
    """What the shell needs of the node it serves. The node runtime's `NodeRun` is one; the
    shell, a lower layer, names it only through this."""

    @property
    def node(self) -> str: ...
    @property
    def system(self) -> ActorSystem: ...
    @property
    def topology(self) -> Topology: ...
    @property
    def cluster(self) -> Cluster | None: ...
    @property
    def metrics(self) -> MetricsSource: ...
    @property
    def events(self) -> EventSource: ...

    def reset_breaker(self, target: str) -> tuple[str, BreakerStatus] | None:
        """Close `target`'s breaker: how it stood before and its status now (None: no breakers)."""
        ...


class ShellCommands:
    """The commands of one node's shell."""

    def __init__(self, run: ShellHost) -> None:
        self.run = run
        self.system = run.system
        self.topology = run.topology

    def execute(self, command: str, args: list[str], operator: str = "") -> Any:
        if command == "eval":
            return self._eval(" ".join(args), operator)
        handler = getattr(self, f"cmd_{command}", None)
        if command not in COMMANDS or handler is None:
            raise CommandError(f"unknown command {command!r}; try 'help'")
        try:
            return handler(*args)
        except TypeError as exc:
            if "positional argument" in str(exc):
                raise CommandError(f"usage: {COMMANDS[command]}") from None
            raise
        except (NoSuchActor, NodeUnreachable, Timeout, Unavailable, ActorCrashed, SupervisorError) as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from None
        except (IntakeError, IntakeUnavailable) as exc:
            raise CommandError(f"intake: {exc}") from None

    # --- the cluster -------------------------------------------------------------------

    def cmd_help(self) -> list[dict[str, str]]:
        return [{"command": name, "usage": usage} for name, usage in COMMANDS.items()]

    def cmd_nodes(self) -> list[dict[str, Any]]:
        cluster = self.run.cluster
        up = set(cluster.up_nodes()) if cluster is not None else set()
        return [
            {
                "node": name,
                "address": config.address,
                "up": name == self.run.node or name in up,
                "this": name == self.run.node,
                "description": config.description,
            }
            for name, config in self.topology.nodes.items()
        ]

    def cmd_paths(self) -> list[str]:
        paths = set(self.system.registry.paths())
        rows = self._walk(self.topology.root_path, 0, 0.5)
        return sorted(paths | {row["path"] for row in rows} | {self.topology.root_path})

    def cmd_tree(self, path: str = "") -> list[dict[str, Any]]:
        return self._walk(path or self.topology.root_path, 0, ASK_TIMEOUT)

    def _walk(self, path: str, depth: int, timeout: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        try:
            children = SupervisorClient(self.system.ref(path), timeout=timeout).which_children()
        except (NoSuchActor, NodeUnreachable, Timeout, Unavailable, SupervisorError) as exc:
            return [{"path": path, "depth": depth, "status": f"unreachable: {type(exc).__name__}"}]
        for child in children:
            row = {
                "path": child.path,
                "depth": depth,
                "node": self.system.whereis(child.path),
                **{
                    k: getattr(child, k)
                    for k in ("kind", "actor", "status", "restarts", "uptime", "mailbox", "last_exit", "waiting_for")
                },
            }
            rows.append(row)
            if child.kind in ("supervisor", "pool") and child.status == "running":
                rows.extend(self._walk(child.path, depth + 1, timeout))
        return rows

    def cmd_which_children(self, path: str) -> list[dict[str, Any]]:
        return [_plain(child) for child in self.system.supervisor(path).which_children()]

    def cmd_count_children(self, path: str) -> dict[str, Any]:
        return _plain(self.system.supervisor(path).count_children())

    def cmd_inspect(self, path: str) -> dict[str, Any]:
        return _plain(self.system.ask(path, Inspect(), timeout=ASK_TIMEOUT))

    def _inspected(self, path: str, shape: type[T]) -> T:
        """The `inspect()` state of the actor at `path`, decoded as `shape`: the snapshot
        struct its actor class defines (a renamed field is a type error here, not a KeyError
        at run time)."""
        summary = self.system.ask(path, Inspect(), timeout=ASK_TIMEOUT)
        try:
            return msgspec.convert(summary.state, shape)
        except msgspec.ValidationError as exc:
            raise CommandError(f"{path} is not the actor this command expects ({summary.actor}: {exc})") from None

    def _parent(self, path: str) -> tuple[str, str]:
        parent, _, child = path.rpartition("/")
        if not parent or parent.count("/") < 1:
            raise CommandError(f"{path!r} is not the path of a child (the root has no supervisor to ask)")
        return parent, child

    def cmd_restart(self, path: str) -> str:
        parent, child = self._parent(path)
        self.system.supervisor(parent).operator_restart(child)  # counted, not against its intensity
        return f"{path} restarted"

    def cmd_terminate(self, path: str) -> str:
        parent, child = self._parent(path)
        self.system.supervisor(parent).terminate_child(child)
        return f"{path} stopped; 'restart {path}' starts it again"

    def cmd_scale(self, pool: str, size: str) -> str:
        if _whole(size) is None:
            raise CommandError(f"size {size!r} must be a whole number >= 0 of at most {MAX_COUNT_DIGITS} digits")
        config = self.topology.resilience
        if config is not None and pool == config.breakers:
            raise CommandError(f"{pool} holds the breaker shards; their number is fixed by the topology")
        self.system.supervisor(pool).scale(int(size))
        return f"{pool} scaled to {size}"

    def cmd_trace(self, path: str, seconds: str = "5") -> TraceStarted:
        try:
            duration = min(MAX_TRACE_SECONDS, max(0.0, float(seconds)))
        except ValueError:
            raise CommandError(f"seconds {seconds!r} must be a number") from None
        recorded = self.system.ask(path, Trace(duration), timeout=ASK_TIMEOUT)
        return TraceStarted(path, duration, _plain(recorded))

    def cmd_logs(self, *args: str) -> LogsPage:
        """The last N events (default 20), or (with a position, as `logs --follow` asks) those
        after it; the shell's own audit events (`AUDIT_EVENTS`) only with ``--audit``."""
        words, audit = logs_arguments(args)
        count = words[0] if words else "20"
        since = words[1] if len(words) > 1 else ""
        number, position = _whole(count), _whole(since) if since else 0
        if number is None or position is None or len(words) > 2 or any(w.startswith("--") for w in words):
            raise CommandError(
                f"usage: logs [N] [--audit] | logs --follow [--audit] (N: a whole number of at most "
                f"{MAX_COUNT_DIGITS} digits)"
            )
        if not since:
            if audit:
                last, events = self.run.events.newest(number)
                return LogsPage(last, events, 0)
            last, events = self.run.events.newest(EVERY_EVENT)
            return LogsPage(last, _without_audit(events)[-number:] if number else [], 0)
        last, events, missed = self.run.events.since(position, limit=number)
        return LogsPage(last, events if audit else _without_audit(events), missed)

    def _eval(self, expression: str, operator: str) -> str:
        """Evaluate `expression` with `system` and `run` in scope, for an operator key the
        topology names in eval_operators (over TCP only: IPC operators are local users)."""
        allowed = {f"key:{name}" for name in self.topology.security.eval_operators}
        if operator not in allowed:
            raise CommandError(
                f"{operator or 'this operator'} may not evaluate Python (the topology's "
                "eval_operators names the operator keys that may, over a TCP shell)"
            )
        try:
            return repr(eval(expression, {"system": self.system, "run": self.run}))  # noqa: S307 - allowed above
        except Exception as exc:  # noqa: BLE001 - the operator's expression failed, not the node
            raise CommandError(f"{type(exc).__name__}: {exc}") from None

    def cmd_metrics(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.run.metrics.registry).decode()

    # --- resilience ------------------------------------------------------------------

    def _control(self, part: str) -> str:
        config = self.topology.resilience
        path = getattr(config, part, None) if config is not None else None
        if path is None:
            raise CommandError(f"this topology has no {part} (resilience.{part})")
        return path

    def cmd_breakers(self, action: str = "", target: str = "") -> Any:
        if action:
            if action != "reset" or not target:
                raise CommandError("usage: breakers | breakers reset TARGET")
            return self._reset_breaker(target)
        path = self._control("breakers")
        shards = self.topology.resilience.shards  # type: ignore[union-attr]
        rows = []
        for shard in range(shards):
            state = self._inspected(f"{path}/{shard}", ShardSnapshot)
            for target, breaker in state.not_closed.items():
                rows.append({"target": target, "shard": shard, **msgspec.structs.asdict(breaker)})
        return rows

    def _reset_breaker(self, target: str) -> dict[str, Any]:
        """Through the intake when there is one (it also makes the jobs waiting behind the
        breaker due now), else straight to the shard that owns the target."""
        from flotilla.nodes.intake.client import IntakeError
        from flotilla.nodes.intake.server import breaker_target

        self._control("breakers")
        name = breaker_target(target)
        if not name:
            raise CommandError("breakers reset takes a target: host:port, or a URL on it")
        if self.topology.intakes:
            with self._intake() as client:
                try:
                    info = client.reset_breaker(name)
                except IntakeError as exc:
                    raise CommandError(str(exc)) from None
            return {"target": info.target, "state": info.state, "was": info.was, "reason": info.reason}
        was, status = self.run.reset_breaker(name)  # type: ignore[misc]
        return {"target": name, "state": status.state, "was": was, "reason": status.reason}

    def cmd_limits(self) -> list[dict[str, Any]]:
        state = self._inspected(self._control("limiter"), LimiterSnapshot)
        rows: list[dict[str, Any]] = [{"target": "(default)", "rate": state.default_rate}]
        rows += [{"target": target, **msgspec.structs.asdict(info)} for target, info in state.targets.items()]
        return rows

    def cmd_proxies(self) -> list[dict[str, Any]]:
        state = self._inspected(self._control("proxies"), dict[str, ProxySnapshot])
        return [{"proxy": proxy, **msgspec.structs.asdict(info)} for proxy, info in state.items()]

    def cmd_hold(self, mode: str = "") -> dict[str, Any]:
        if mode not in ("", "on", "off", "auto"):
            raise CommandError(f"hold takes on, off or auto, not {mode!r}")
        status = self.system.ask(self._control("hold"), HoldCommand(mode or None), timeout=ASK_TIMEOUT)  # type: ignore[arg-type]
        return _plain(status)

    # --- jobs ------------------------------------------------------------------------

    def _intake(self) -> Any:
        if not self.topology.intakes:
            raise CommandError("this topology has no intake")
        return IntakeClient.for_topology(self.topology, timeout=5, retries=0)  # as the local user

    def cmd_jobs(self, state: str = "") -> dict[str, Any]:
        if state and state not in STATES:
            raise CommandError(f"unknown state {state!r}; usage: {COMMANDS['jobs']} (states: {', '.join(STATES)})")
        with self._intake() as client:
            counts = client.counts()
            listed = client.jobs(state, limit=MAX_JOBS_LISTED)[0] if state else []
        return {"states": counts.states, "results": counts.results, "jobs": [_plain(j) for j in listed]}

    def cmd_job(self, job: str, rules: str = "") -> dict[str, Any]:
        """A job's story, by key or by URL (its key computed with `rules`, default the
        topology's only rule set)."""
        from flotilla.actors.pipeline.journal import natural_key
        from flotilla.nodes.config.topology import rule_set
        from flotilla.nodes.intake.client import IntakeError

        key = job
        if "://" in job:
            try:
                key = natural_key(job, rule_set(self.topology, rules or None))
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        with self._intake() as client:
            try:
                return _plain(client.job(key))
            except IntakeError as exc:
                raise CommandError(f"{job}: {exc}") from None

    def cmd_cancel(self, *args: str) -> dict[str, int]:
        if args[:1] == ("--batch",) and len(args) == 2:
            keys, batch = None, args[1]
        elif args and "--batch" not in args:
            keys, batch = list(args), None
        else:
            raise CommandError("usage: cancel KEY... | cancel --batch BATCH")
        with self._intake() as client:
            return {"cancelled": client.cancel(keys, batch)}

    def cmd_dlq(self, action: str = "list", *args: str) -> Any:
        """As `flotilla dlq`: dead jobs, `--parked` parked ones, `--all` both; `replay` puts the
        same jobs back (named keys all or none: one in another state is an error)."""
        usage = "usage: dlq list [--parked|--all] | dlq replay [KEY...] [--parked|--all]"
        options = [a for a in args if a.startswith("--")]
        keys = [a for a in args if not a.startswith("--")]
        if action not in ("list", "replay") or len(options) > 1 or options[:1] not in ([], ["--parked"], ["--all"]):
            raise CommandError(usage)
        states: list[EndedState] = ["dead"]
        if options == ["--parked"]:
            states = ["parked"]
        elif options == ["--all"]:
            states = ["dead", "parked"]
        with self._intake() as client:
            if action == "list":
                if keys:
                    raise CommandError(usage)
                return [_plain(j) for state in states for j in client.jobs(state, limit=MAX_JOBS_LISTED)[0]]
            return {"replayed": client.replay(keys or None, states, strict=True)}
