"""The supervised actor: a Pykka actor whose every failure ends its incarnation.

Pykka keeps an actor alive when a handler raises on the ask path and skips `on_failure`
when `on_start` raises. This runtime closes both holes by running its own loop through
Pykka's documented extension points (`_create_actor_inbox`, `_start_actor_loop`):

* an exception in `on_receive` — tell or ask — ends the incarnation with `Crash`; the
  asker gets `ActorCrashed`, after the supervisor has been told;
* an exception in `on_start` ends it with `StartFailed` (and `on_failure` runs);
* once an incarnation ends, its path is unbound first, then every message still queued is
  refused: queued asks fail with `Unavailable`, queued tells are counted as dead letters;
* a stop request takes effect after the message being handled, not behind the queue.

Each incarnation is a new object on a new daemon thread; its path stays the same. The
constructor runs in the supervisor's thread (as in Pykka) and should only store its
arguments: do I/O in `on_start`, which runs in the actor's thread within `start_timeout`.
"""

from __future__ import annotations

import dataclasses
import queue
import reprlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import msgspec
import pykka
import structlog

from flotilla.actors.core.errors import ActorCrashed, Unavailable
from flotilla.actors.core.messages import (
    ActorSummary,
    Crash,
    ExitReason,
    Inspect,
    Message,
    Normal,
    Refused,
    Shutdown,
    StartFailed,
    SupervisorRequest,
    Trace,
    TracedMessage,
)
from flotilla.actors.core.observers import IncarnationEnded

if TYPE_CHECKING:
    from flotilla.actors.core.registry import Slot
    from flotilla.actors.core.scheduler import TimerHandle
    from flotilla.actors.core.system import ActorSystem

ExitListener = Callable[["Actor", ExitReason], None]

_WAKE = object()
"""Put in an actor's own inbox to make its loop look at a stop request."""


class _WakeEnvelope:
    """An inbox entry carrying `_WAKE`, shaped like Pykka's envelope."""

    __slots__ = ()
    message = _WAKE
    reply_to = None


_WAKE_ENVELOPE = _WakeEnvelope()

_TRACE_REPR = reprlib.Repr()
_TRACE_REPR.maxstring = _TRACE_REPR.maxother = 60
_TRACE_REPR.maxlist = _TRACE_REPR.maxdict = 4
_TRACE_REPR.maxlevel = 2


def _short_repr(message: Any) -> str:
    """A bounded summary of a traced message (never the whole of a page's body): a struct,
    a dataclass or a plain object as its class name and fields (a plain object without
    fields as its class name alone, never ``<... object at 0x...>``), anything else as its
    own repr."""
    if isinstance(message, msgspec.Struct):
        names: Iterable[str] = message.__struct_fields__
    elif dataclasses.is_dataclass(message) and not isinstance(message, type):
        names = (f.name for f in dataclasses.fields(message))
    elif type(message).__repr__ is object.__repr__:
        names = [name for name in getattr(message, "__dict__", {}) if not name.startswith("_")]
        if not names:
            return type(message).__name__[:300]
    else:
        return _TRACE_REPR.repr(message)[:300]
    fields = ", ".join(f"{name}={_TRACE_REPR.repr(getattr(message, name))}" for name in names)
    return f"{type(message).__name__}({fields})"[:300]


_PYKKA_STOP = pykka.messages._ActorStop  # noqa: SLF001 - what pykka's own stop() sends

_log = structlog.get_logger("flotilla.actor")


class InboxEntry:
    """An inbox entry: a message and, for an ask, whatever receives the answer (anything
    with Pykka's future `set` / `set_exception`)."""

    __slots__ = ("message", "reply_to")

    def __init__(self, message: Any, reply_to: Any = None) -> None:
        self.message = message
        self.reply_to = reply_to


class _LastReply:
    """The answer (or `ActorCrashed`) owed to the ask whose handling ended an incarnation."""

    __slots__ = ("future", "value", "error")

    def __init__(self, future: Any, *, value: Any = None, error: ActorCrashed | None = None) -> None:
        self.future = future
        self.value = value
        self.error = error

    def deliver(self) -> None:
        if self.error is not None:
            self.future.set_exception((ActorCrashed, self.error, None))
        else:
            self.future.set(self.value)


class Actor(pykka.ThreadingActor):
    """Base class for supervised actors.

    Override `on_receive(message)` (its return value answers an ask), and optionally
    `on_start()`, `on_stop()` (clean exits) and `on_failure(...)` (after a crash or a failed
    start). The constructor gets the child spec's ``args`` as keyword arguments. Inside an
    actor, `self.path`, `self.system` (refs by path, the scheduler) and `self.log` are set.
    """

    use_daemon_thread: ClassVar[bool] = True
    PATH_ARGS: ClassVar[dict[str, str]] = {}
    """Constructor arguments that are paths of other actors, with the built-in actor name
    (actors/catalog.py) each must name (a worker or a pool of them); `flotilla check` checks them."""
    wire_messages: ClassVar[tuple[type[Message], ...]] = ()
    """This actor's own message types that may cross between nodes (the built-in layers'
    messages always may). A node adds the types every actor class of its topology declares
    to its wire codec's table; any other message type is refused on the way out (see
    docs/protocol.md, "Your own message types")."""

    path: str = "<unsupervised>"
    incarnation: int = 0
    system: ActorSystem
    actor_inbox: queue.SimpleQueue[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = threading.Event()
        self.exited = threading.Event()
        self.start_failure: StartFailed | None = None
        self.log = _log
        self._exit_reason: ExitReason | None = None
        self._final_reason: ExitReason | None = None
        self._failure_exc: BaseException | None = None
        self._abandoned = False
        self._killed = False
        self._started_at = time.monotonic()
        self._trace_until = 0.0
        self._traced: deque[TracedMessage] = deque()
        self._trace_limit = 0
        self._detached = False
        self._loop_done = False
        self._end_lock = threading.Lock()
        self._slot: Slot | None = None
        self._on_exit: ExitListener | None = None
        self._monitors: list[Callable[[ExitReason], None]] = []

    @classmethod
    def start(cls, *_args: Any, **_kwargs: Any) -> NoReturn:
        """Supervised actors are started by their supervisor, never on their own."""
        raise TypeError(
            f"{cls.__name__} is a supervised actor: put a ChildSpec for it in a "
            "SupervisorSpec and start that with ActorSystem.start()"
        )

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Any]:
        return queue.SimpleQueue()

    # --- hooks for subclasses ---------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle one message. The default refuses supervisor requests (this is not a
        supervisor) and treats any other message as a bug: it raises, which crashes."""
        if isinstance(message, SupervisorRequest):
            return Refused("not_a_supervisor", f"{self.path} is a {type(self).__name__}")
        raise TypeError(f"{type(self).__name__} does not handle {type(message).__name__}")

    def exit(self, reason: ExitReason | None = None) -> None:
        """End this incarnation after the current message (or now, if idle), with
        `reason` (default `Normal`)."""
        if self._exit_reason is None:
            self._exit_reason = reason if reason is not None else Normal()
        self.actor_inbox.put(_WAKE_ENVELOPE)

    def stop(self) -> None:
        """End this incarnation after the current message with `Shutdown`."""
        self.exit(Shutdown())

    def send_after(self, delay: float, message: Any) -> TimerHandle:
        """Tell `message` to this incarnation after `delay` seconds (dropped if it has
        ended by then: a timer never reaches a successor)."""
        ref = self.actor_ref

        def deliver() -> None:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                pass

        return self.system.scheduler.call_later(delay, deliver)

    def inspect(self) -> msgspec.Struct | Mapping[str, Any]:
        """A summary of this actor's own state for operators (`Inspect` sends it as plain
        data); override with a msgspec struct defined next to the actor, so that whoever
        reads it (the shell) can decode it back into that type."""
        return {}

    # --- wiring done by the supervisor ------------------------------------------------

    def attach(
        self, *, path: str, incarnation: int, system: ActorSystem, slot: Slot, on_exit: ExitListener | None
    ) -> None:
        """Give a fresh incarnation its address and whom to tell when it ends."""
        self.path = path
        self.incarnation = incarnation
        self.system = system
        self.log = _log.bind(path=path)
        self._slot = slot
        self._on_exit = on_exit

    def launch(self) -> None:
        """Bind the path to this incarnation and start its thread (on_start runs there)."""
        assert self._slot is not None, "attach() first"  # noqa: S101  a programming error, not input
        pykka.ActorRegistry.register(self.actor_ref)
        self._slot.bind(self)
        self._start_actor_loop()

    def _start_actor_loop(self) -> None:
        thread = threading.Thread(target=self._run, name=f"actor {self.path}", daemon=True)
        thread.start()

    def request_stop(self, reason: ExitReason) -> None:
        """Ask the incarnation to end with `reason` once its current message is done."""
        self.exit(reason)

    def abandon(self, reason: ExitReason) -> None:
        """Cut off an incarnation that will not stop (a Python thread cannot be killed).

        Its path is unbound and its mailbox emptied now; when its thread comes back, it
        finds the reason set, ends, and tells nobody.
        """
        with self._end_lock:
            if self.exited.is_set():
                return
            self._abandoned = True
            if self._exit_reason is None:
                self._exit_reason = reason
            self._final_reason = reason
        self._detach()
        self.drain()
        self.actor_inbox.put(_WAKE_ENVELOPE)
        self.started.set()
        with self._end_lock:
            monitors, self._monitors = self._monitors, []
        for monitor in monitors:
            monitor(reason)

    def kill(self, reason: ExitReason) -> None:
        """End the incarnation now, as OTP kills a process: abandon it, and run none of its
        cleanup — its `on_stop` / `on_failure` is skipped whenever its thread comes back (a
        hook already running cannot be stopped), so it never overlaps its successor."""
        with self._end_lock:
            self._killed = True
        self.abandon(reason)

    def add_monitor(self, callback: Callable[[ExitReason], None]) -> Callable[[], None]:
        """Call `callback(reason)` once this incarnation has ended (at once if it has);
        returns a function that cancels the monitor."""
        with self._end_lock:
            if not self.exited.is_set():
                self._monitors.append(callback)
                return lambda: self._cancel_monitor(callback)
        callback(self._final_reason or Shutdown())
        return lambda: None

    def _cancel_monitor(self, callback: Callable[[ExitReason], None]) -> None:
        with self._end_lock:
            if callback in self._monitors:
                self._monitors.remove(callback)

    @property
    def ending(self) -> bool:
        """True once the incarnation has been asked to end (or decided to)."""
        return self._exit_reason is not None

    @property
    def final_reason(self) -> ExitReason | None:
        """Why the incarnation ended, once it has."""
        return self._final_reason

    @property
    def mailbox_depth(self) -> int:
        """Entries waiting in the inbox."""
        return self.actor_inbox.qsize()

    def drain(self) -> int:
        """Empty the inbox: asks fail with `Unavailable`, tells become dead letters.
        Safe to call from any thread, any number of times."""
        inbox = self.actor_inbox
        drained = 0
        woken = False
        while True:
            try:
                envelope = inbox.get_nowait()
            except queue.Empty:
                break
            if envelope.message is _WAKE:
                woken = True
                continue
            drained += 1
            self._refuse(envelope)
        if woken and not self._loop_done:
            inbox.put(_WAKE_ENVELOPE)  # the loop still has to see it
        return drained

    def deliver(self, message: Any, reply_to: Any = None) -> bool:
        """Put `message` in the inbox (with `reply_to` for an ask); False if this
        incarnation has ended. A message that lands just as the incarnation ends is
        refused like any queued one, never stranded."""
        if self.actor_stopped.is_set():
            return False
        self.actor_inbox.put(InboxEntry(message, reply_to))
        if self.actor_stopped.is_set():
            self.drain()  # it may have landed after the final drain
        return True

    # --- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        last_reply: _LastReply | None = None
        try:
            self.on_start()
        except BaseException as exc:  # noqa: BLE001 - let it crash, uniformly
            self._failure_exc = exc
            failure = StartFailed.from_exception(exc)
            self.start_failure = failure
            reason: ExitReason = failure
        else:
            if not self._abandoned:  # else the start timed out and the supervisor moved on
                self._started_at = time.monotonic()
                self.started.set()
                reason, last_reply = self._loop()
            else:
                reason = Shutdown("abandoned after its start timed out")  # runs on_stop
        self._loop_done = True
        self._end(reason, last_reply)

    def _loop(self) -> tuple[ExitReason, _LastReply | None]:
        """Handle messages until the incarnation ends; return why, and the answer to the
        ask that ended it (delivered by `_end` once the supervisor has been told)."""
        get = self.actor_inbox.get
        receive = self.on_receive
        while True:
            envelope = get()
            if self._exit_reason is not None:
                if envelope.message is not _WAKE:
                    self._refuse(envelope)
                return self._exit_reason, None
            message = envelope.message
            if message.__class__ is _PYKKA_STOP:  # pykka's ActorRef.stop() / stop_all()
                self._exit_reason = Shutdown()
                return self._exit_reason, _LastReply(envelope.reply_to, value=True) if envelope.reply_to else None
            if message.__class__ is Inspect or message.__class__ is Trace:
                answer = self._start_trace(message) if isinstance(message, Trace) else self.summary()
                if envelope.reply_to is not None:
                    envelope.reply_to.set(answer)
                continue
            traced = self._trace_until and time.monotonic() < self._trace_until
            began = time.perf_counter() if traced else 0.0
            try:
                result = receive(message)
            except BaseException as exc:  # noqa: BLE001 - let it crash, uniformly
                crash = Crash.from_exception(exc)
                self._failure_exc = exc
                reply_to = envelope.reply_to
                return crash, (
                    _LastReply(reply_to, error=ActorCrashed(self.path, crash)) if reply_to is not None else None
                )
            if traced and len(self._traced) < self._trace_limit:
                self._traced.append(
                    TracedMessage(
                        time.time(), type(message).__name__, _short_repr(message), time.perf_counter() - began
                    )
                )
            reply_to = envelope.reply_to
            if self._exit_reason is not None:
                return self._exit_reason, _LastReply(reply_to, value=result) if reply_to else None
            if reply_to is not None:
                reply_to.set(result)

    def summary(self) -> ActorSummary:
        """This incarnation for operators (`Inspect`): class, mailbox, uptime, `inspect()`."""
        try:
            state = msgspec.to_builtins(self.inspect(), str_keys=True, enc_hook=repr)
        except Exception as exc:  # noqa: BLE001 - a broken inspect() must not crash the actor
            state = {"inspect_failed": f"{type(exc).__name__}: {exc}"[:300]}
        return ActorSummary(
            self.path,
            f"{type(self).__module__}:{type(self).__qualname__}",
            self.incarnation,
            self.mailbox_depth,
            round(time.monotonic() - self._started_at, 3),
            state,
        )

    def _start_trace(self, trace: Trace) -> list[TracedMessage]:
        """Record what is handled for the next `trace.seconds`; return the last recording."""
        recorded = list(self._traced)
        self._traced.clear()
        self._trace_limit = max(0, trace.limit)
        self._trace_until = time.monotonic() + max(0.0, trace.seconds)
        return recorded

    def _end(self, reason: ExitReason, last_reply: _LastReply | None) -> None:
        """Unbind, empty the mailbox, run the cleanup hook (unless killed), tell the
        supervisor, and only then answer the ask that ended the incarnation: an asker that
        sees the end can count on the supervisor knowing of it. Whatever fails on the way,
        the supervisor is told, the asker answered and `exited` set."""
        try:
            self._detach()
            self.drain()
            with self._end_lock:
                killed = self._killed
            if not killed:
                reason = self._run_cleanup_hook(reason)
        finally:
            with self._end_lock:
                tell_supervisor = not self._abandoned and self.start_failure is None
                if self._final_reason is None:
                    self._final_reason = reason
            try:
                self.started.set()
                if tell_supervisor and self._on_exit is not None:
                    self._on_exit(self, reason)
            finally:
                if last_reply is not None:
                    last_reply.deliver()
                with self._end_lock:
                    self.exited.set()
                    monitors, self._monitors = self._monitors, []
                for monitor in monitors:
                    try:
                        monitor(self._final_reason or reason)
                    except Exception:  # a watcher's bug is not this actor's
                        self.log.exception("actor.monitor_failed")

    def _run_cleanup_hook(self, reason: ExitReason) -> ExitReason:
        """`on_failure` after a crash or failed start, `on_stop` otherwise. A cleanup hook
        that raises turns a clean exit into that `Crash`."""
        try:
            if isinstance(reason, (Crash, StartFailed)):
                exc = self._failure_exc
                tb: TracebackType | None = exc.__traceback__ if exc is not None else None
                self.on_failure(type(exc) if exc is not None else None, exc, tb)
            else:
                self.on_stop()
        except BaseException as exc:  # noqa: BLE001
            cleanup_crash = Crash.from_exception(exc)
            self.log.error("actor.cleanup_failed", reason=cleanup_crash.message, exception=cleanup_crash.type)
            if not isinstance(reason, (Crash, StartFailed)):
                return cleanup_crash
        return reason

    def _detach(self) -> None:
        with self._end_lock:
            if self._detached:
                return
            self._detached = True
            self.actor_stopped.set()
        if self._slot is not None:
            self._slot.unbind(self)
        pykka.ActorRegistry.unregister(self.actor_ref)
        system = getattr(self, "system", None)
        if system is not None and system.observers.active:
            system.observers.publish(IncarnationEnded(self.path, self.incarnation))

    def _refuse(self, envelope: Any) -> None:
        if envelope.reply_to is not None:
            envelope.reply_to.set_exception((Unavailable, Unavailable(self.path), None))
        if self._slot is not None:
            self._slot.dead_letter(envelope.message, was_ask=envelope.reply_to is not None)
