"""The wire codec: node-to-node envelopes in MessagePack, decoded with every length bounded.

One ZeroMQ frame carries one envelope, a msgspec struct encoded as a MessagePack array
whose first item is its kind (see docs/protocol.md). A message body travels as raw bytes
inside the envelope and is decoded only at its destination:

* a *typed* body is a runtime message (a subclass of `flotilla.actors.core.messages.Message`)
  of a type in the codec's table; it is decoded against the union of the table's types, so
  an unknown tag is rejected, never guessed;
* any other body is plain data (None, bools, numbers, str, bytes, lists, maps); it is
  decoded by msgpack with explicit limits on every length and no extension types, and any
  map in it tagged with a known message class becomes that message again.

The table is explicit: every layer's `WIRE_MESSAGES` (`BUILT_IN_MESSAGES`), plus the types a
topology's actor classes declare in `Actor.wire_messages` (`declared_messages`). A message of
any other type cannot be sent to another node (`encode_body` raises `TypeError` naming it).

Anything malformed raises `FrameError` with a short reason; nothing else escapes.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Any, Union

import msgpack
import msgspec

from flotilla.actors.core import messages as core_messages
from flotilla.actors.core.messages import Crash, ExitReason, Message, NoProc, StartFailed
from flotilla.actors.demo import messages as demo_messages
from flotilla.actors.pipeline import messages as pipeline_messages
from flotilla.actors.resilience import messages as resilience_messages

MAX_FRAME_BYTES = 1 << 20
"""Default largest envelope accepted (ZeroMQ's MAXMSGSIZE on every node socket)."""
MAX_STR = 1 << 20
MAX_BIN = 1 << 20
MAX_ARRAY = 100_000
MAX_MAP = 100_000
MAX_PATH_CHARS = 512
"""A path longer than this is rejected."""

Path = typing.Annotated[str, msgspec.Meta(max_length=MAX_PATH_CHARS)]
Name = typing.Annotated[str, msgspec.Meta(max_length=128)]
Text = typing.Annotated[str, msgspec.Meta(max_length=32_768)]


class Envelope(msgspec.Struct, array_like=True, frozen=True, tag=True):
    """Base of every node-to-node envelope."""


class Tell(Envelope, tag=1, frozen=True):
    """Deliver `body` to the actor at `to`; no answer."""

    to: Path
    body: msgspec.Raw
    typed: bool


class Ask(Envelope, tag=2, frozen=True):
    """Deliver `body` to `to` and answer with `Reply` or `Fail` quoting `ref`. The asker
    stops waiting after `timeout` seconds (and forgets the ask a little later)."""

    to: Path
    body: msgspec.Raw
    typed: bool
    ref: int
    timeout: float


class Reply(Envelope, tag=3, frozen=True):
    """The answer to the ask `ref`."""

    ref: int
    body: msgspec.Raw
    typed: bool


FailKind = typing.Literal["unavailable", "crashed", "no_such_actor", "node_down", "undecodable", "unencodable"]


class Fail(Envelope, tag=4, frozen=True):
    """The ask `ref` got no answer: `kind` says why (see `flotilla.actors.core.errors`)."""

    ref: int
    kind: FailKind
    path: Path
    detail: Text = ""
    crash: Crash | None = None


class Heartbeat(Envelope, tag=5, frozen=True):
    """Sent by every node to every peer every heartbeat interval. `boot` changes when the
    node process restarts; `cluster` must match the receiver's. `owner` is the fencing token
    of the tree's lease while the sender owns the tree (0: it does not)."""

    node: Name
    boot: Name
    cluster: Name
    seq: int
    owner: int = 0


class Monitor(Envelope, tag=6, frozen=True):
    """Watch the incarnation now at `path`; answer `MonitorDown(ref, ...)` once it ends."""

    path: Path
    ref: int


class Demonitor(Envelope, tag=7, frozen=True):
    """Forget monitor `ref`."""

    ref: int


class MonitorDown(Envelope, tag=8, frozen=True):
    """The incarnation watched by monitor `ref` ended (or there was none: `NoProc`)."""

    ref: int
    path: Path
    reason: ExitReason | NoProc


class Spawn(Envelope, tag=9, frozen=True):
    """Start the topology's child at `path` on the receiver, supervised by `parent` on the
    sender. `urn` names this incarnation uniquely; `boot` is the sender's boot id, so the
    receiver stops the child if (and only if) that very process goes away."""

    path: Path
    incarnation: int
    parent: Path
    urn: Name
    boot: Name


class Halt(Envelope, tag=10, frozen=True):
    """Stop incarnation `urn` at `path`, waiting `shutdown` seconds (negative: brutal_kill,
    0: infinity)."""

    path: Path
    urn: Name
    shutdown: float


class Spawned(Envelope, tag=11, frozen=True):
    """The outcome of the `Spawn` of `urn`: started, or `failure`."""

    path: Path
    urn: Name
    failure: StartFailed | None = None


class Exited(Envelope, tag=12, frozen=True):
    """Incarnation `urn` at `path` ended: on its own, after a `Halt`, or because the link to
    its parent's node broke (`NodeDown`)."""

    path: Path
    urn: Name
    reason: ExitReason


AnyEnvelope = (
    Tell | Ask | Reply | Fail | Heartbeat | Monitor | Demonitor | MonitorDown | Spawn | Halt | Spawned | Exited
)


class FrameError(Exception):
    """A frame or body that cannot be decoded; `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


BUILT_IN_MESSAGES: tuple[type[Message], ...] = (
    *core_messages.WIRE_MESSAGES,
    *resilience_messages.WIRE_MESSAGES,
    *pipeline_messages.WIRE_MESSAGES,
    *demo_messages.WIRE_MESSAGES,
)
"""Every built-in message type that may cross between nodes, layer by layer."""


def declared_messages(actor_classes: Iterable[type]) -> tuple[type[Message], ...]:
    """The message types `actor_classes` declare in their `wire_messages`, in order, once each."""
    found: dict[type[Message], None] = {}
    for actor_class in actor_classes:
        for cls in getattr(actor_class, "wire_messages", ()):
            found[cls] = None
    return tuple(found)


def _table(extra: Iterable[type[Message]]) -> dict[str, type[Message]]:
    """The message types by wire tag: the built-in ones, then `extra`. A type that is not a
    tagged `Message` raises `TypeError`; a tag used by two different types, `ValueError`
    naming both."""
    table: dict[str, type[Message]] = {}
    for cls in (*BUILT_IN_MESSAGES, *extra):
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise TypeError(f"{cls!r} is not a Message type, so it cannot be a wire message")
        tag = cls.__struct_config__.tag
        if not isinstance(tag, str):
            raise TypeError(f"{_qualified(cls)} has no string tag")
        other = table.setdefault(tag, cls)
        if other is not cls:
            raise ValueError(f"{_qualified(cls)} and {_qualified(other)} share the wire tag {tag!r}; rename one")
    return table


class Codec:
    """Encodes and decodes envelopes and bodies for one node.

    Its message table is `BUILT_IN_MESSAGES` plus `messages` (the types the topology's actors
    declare, see `declared_messages`); every node of a cluster reads the same topology, so
    all of them agree on it.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES, messages: Iterable[type[Message]] = ()) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._tags = _table(messages)
        self.message_types: frozenset[type[Message]] = frozenset(self._tags.values())
        """Every message type this codec sends and receives as a typed body."""
        self._envelopes = msgspec.msgpack.Decoder(AnyEnvelope)
        self._messages = msgspec.msgpack.Decoder(Union[tuple(self._tags.values())])  # noqa: UP007  built from a runtime tuple
        self._encoder = msgspec.msgpack.Encoder()

    # --- envelopes ----------------------------------------------------------------------

    def encode(self, envelope: Envelope) -> bytes:
        """One frame for `envelope`; raises `FrameError` if it exceeds the frame limit."""
        data = self._encoder.encode(envelope)
        if len(data) > self.max_frame_bytes:
            raise FrameError(f"envelope of {len(data)} bytes exceeds the {self.max_frame_bytes}-byte limit")
        return data

    def decode(self, frame: bytes | memoryview) -> Envelope:
        """The envelope in `frame`, or `FrameError`."""
        if len(frame) > self.max_frame_bytes:
            raise FrameError(f"frame of {len(frame)} bytes exceeds the limit")
        try:
            return self._envelopes.decode(frame)
        except (msgspec.DecodeError, ValueError) as exc:  # ValueError: invalid UTF-8 in a str
            raise FrameError(f"bad envelope: {_short(exc)}") from None
        except RecursionError:
            raise FrameError("bad envelope: nested too deeply") from None

    # --- bodies -------------------------------------------------------------------------

    def encode_body(self, body: Any) -> tuple[msgspec.Raw, bool]:
        """The raw bytes for `body` and whether it is a typed message.

        Raises `TypeError` naming the offending type if `body` cannot travel (a `Message`
        whose type is not in the table cannot)."""
        typed = isinstance(body, Message)
        if typed and type(body) not in self.message_types:
            raise TypeError(
                f"cannot send {type(body).__name__} to another node: {_qualified(type(body))} is not a declared "
                "wire message (list it in the `wire_messages` of an actor class in the topology; see docs/protocol.md)"
            )
        try:
            data = self._encoder.encode(body)
        except (TypeError, OverflowError, msgspec.EncodeError) as exc:
            raise TypeError(f"cannot send {type(body).__name__} to another node: {exc}") from None
        return msgspec.Raw(data), typed

    def decode_body(self, raw: msgspec.Raw | bytes, typed: bool) -> Any:
        """The body back as a Python value, or `FrameError`."""
        data = bytes(raw) if isinstance(raw, msgspec.Raw) else raw
        if typed:
            try:
                return self._messages.decode(data)
            except (msgspec.DecodeError, ValueError) as exc:
                raise FrameError(f"bad message: {_short(exc)}") from None
            except RecursionError:
                raise FrameError("bad message: nested too deeply") from None
        try:
            value = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=False,
                ext_hook=_no_ext,
                max_str_len=MAX_STR,
                max_bin_len=MAX_BIN,
                max_array_len=MAX_ARRAY,
                max_map_len=MAX_MAP,
                max_ext_len=MAX_BIN,
            )
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            raise FrameError(f"bad body: {_short(exc)}") from None
        return self._revive(value) if b"_type" in data else value  # no tag, nothing to revive (or copy)

    def _revive(self, value: Any) -> Any:
        """Turn maps tagged with a known message class back into that message."""
        if isinstance(value, list):
            return [self._revive(item) for item in value]
        if isinstance(value, dict):
            tag = value.get("_type")
            if isinstance(tag, str) and tag in self._tags:
                try:
                    return msgspec.convert(value, self._tags[tag])
                except (msgspec.ValidationError, ValueError, TypeError) as exc:
                    raise FrameError(f"bad {tag}: {_short(exc)}") from None
            return {key: self._revive(item) for key, item in value.items()}
        return value


def _no_ext(code: int, _data: bytes) -> Any:
    raise ValueError(f"extension type {code} is not allowed")


def _short(exc: BaseException) -> str:
    return str(exc)[:200]


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
