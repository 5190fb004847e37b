"""The wire codec: node-to-node envelopes in MessagePack, decoded with every length bounded.

One ZeroMQ frame carries one envelope, a msgspec struct encoded as a MessagePack array
whose first item is its kind (see docs/protocol.md). A message body travels as raw bytes
inside the envelope and is decoded only at its destination:

* a *typed* body is a runtime message (a subclass of `flotilla.actors.core.messages.Message`); it is
  decoded against the union of every message class the node knows, so an unknown tag is
  rejected, never guessed;
* any other body is plain data (None, bools, numbers, str, bytes, lists, maps); it is
  decoded by msgpack with explicit limits on every length and no extension types, and any
  map in it tagged with a known message class becomes that message again.

Anything malformed raises `FrameError` with a short reason; nothing else escapes.
"""

from __future__ import annotations

import typing
from typing import Any, Union

import msgpack
import msgspec

from flotilla.actors.core.messages import Crash, ExitReason, Message, NoProc, StartFailed

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
    node process restarts; `cluster` must match the receiver's."""

    node: Name
    boot: Name
    cluster: Name
    seq: int


class Monitor(Envelope, tag=6, frozen=True):
    """Watch the incarnation now at `path`; answer `Down(ref, ...)` once it ends."""

    path: Path
    ref: int


class Demonitor(Envelope, tag=7, frozen=True):
    """Forget monitor `ref`."""

    ref: int


class Down(Envelope, tag=8, frozen=True):
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


AnyEnvelope = Tell | Ask | Reply | Fail | Heartbeat | Monitor | Demonitor | Down | Spawn | Halt | Spawned | Exited


class FrameError(Exception):
    """A frame or body that cannot be decoded; `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _message_classes() -> list[type[Message]]:
    found: list[type[Message]] = []
    pending = [Message]
    while pending:
        for cls in pending.pop().__subclasses__():
            found.append(cls)
            pending.append(cls)
    return found


class Codec:
    """Encodes and decodes envelopes and bodies for one node.

    Message classes are collected when the codec is made (after the topology's actor modules
    are imported), so every node decodes exactly the message types its code defines.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        classes = _message_classes()
        self._tags = {cls.__name__: cls for cls in classes}
        self._envelopes = msgspec.msgpack.Decoder(AnyEnvelope)
        self._messages = msgspec.msgpack.Decoder(Union[tuple(classes)])  # noqa: UP007  built from a runtime tuple
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

        Raises `TypeError` naming the offending type if `body` cannot travel."""
        try:
            data = self._encoder.encode(body)
        except (TypeError, OverflowError, msgspec.EncodeError) as exc:
            raise TypeError(f"cannot send {type(body).__name__} to another node: {exc}") from None
        return msgspec.Raw(data), isinstance(body, Message)

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
