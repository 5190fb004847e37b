"""The wire codec: envelopes round-trip; hostile bytes never raise anything but FrameError."""

from __future__ import annotations

import typing

import msgpack
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.actors.core.messages import ChildInfo, Crash, NodeDown, Shutdown
from flotilla.actors.demo.messages import Done, Work
from flotilla.nodes.cluster.codec import (
    AnyEnvelope,
    Ask,
    Codec,
    Envelope,
    Exited,
    Fail,
    FrameError,
    Heartbeat,
    Reply,
    Spawned,
    Tell,
)

codec = Codec(max_frame_bytes=64 * 1024)


def test_envelopes_round_trip() -> None:
    body, typed = codec.encode_body(Work(3))
    for envelope in (
        Tell("a/root/x", body, typed),
        Ask("a/root/x", body, typed, 7, 5.0),
        Heartbeat("alpha", "b00t", "demo", 12),
        Exited("a/root/x", "urn:2", NodeDown("beta")),
        Spawned("a/root/x", "urn:1", None),
        Fail(3, "crashed", "a/root/x", "boom", Crash("ValueError", "boom", "tb")),
    ):
        decoded = codec.decode(codec.encode(envelope))
        if isinstance(envelope, (Tell, Ask)):
            assert bytes(decoded.body) == bytes(envelope.body)
        else:
            assert decoded == envelope


@pytest.mark.parametrize(
    "body",
    [
        None,
        True,
        3,
        -2.5,
        "text",
        b"bytes",
        [1, "two", [3]],
        {"k": {"nested": [1, 2]}},
        Work(5),
        Done(5, "a/root/w/0"),
        [Work(1), {"x": Done(2, "w")}],
        [ChildInfo("x", "a/root/x", "worker", "m:C", "running", "permanent", 0, 1, 0, 0.5, "")],
    ],
)
def test_bodies_come_back_as_sent(body: object) -> None:
    raw, typed = codec.encode_body(body)
    assert codec.decode_body(raw, typed) == body


def test_tuples_travel_as_lists() -> None:
    raw, typed = codec.encode_body(("a", 1))
    assert codec.decode_body(raw, typed) == ["a", 1]


def test_a_body_that_cannot_travel_is_refused_at_the_sender() -> None:
    with pytest.raises(TypeError, match="cannot send object to another node"):
        codec.encode_body(object())


def test_an_unknown_message_type_is_rejected_not_guessed() -> None:
    forged = msgspec.msgpack.encode({"_type": "LaunchMissiles", "target": "x"})
    with pytest.raises(FrameError, match="bad message"):
        codec.decode_body(forged, True)
    assert codec.decode_body(forged, False) == {"_type": "LaunchMissiles", "target": "x"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (msgpack.packb(msgpack.ExtType(42, b"xyz")), "extension type 42 is not allowed"),
        (b"\xdd\xff\xff\xff\xff", "bad body"),  # an array claiming 2**32-1 items
        (b"\xdb\x7f\xff\xff\xff", "bad body"),  # a str claiming 2 GiB
        (b"\x91" * 200_000 + b"\xc0", "bad body"),  # nested 200,000 deep
        (b"\xc1", "bad body"),  # a reserved byte
        (msgpack.packb([1]) + b"\x00", "bad body"),  # trailing bytes
    ],
)
def test_hostile_bodies_raise_frame_error(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        codec.decode_body(data, False)


def test_a_frame_over_the_limit_is_refused_both_ways() -> None:
    raw, typed = codec.encode_body("x" * 70_000)
    with pytest.raises(FrameError, match="exceeds"):
        codec.encode(Tell("a/root/x", raw, typed))
    with pytest.raises(FrameError, match="exceeds"):
        codec.decode(b"\x00" * 70_000)


def test_a_path_longer_than_the_limit_is_refused() -> None:
    frame = msgspec.msgpack.encode([1, "x" * 600, b"", False])
    with pytest.raises(FrameError, match="bad envelope"):
        codec.decode(frame)


ENVELOPES = typing.get_args(AnyEnvelope)
WITH_BODY = (Tell, Ask, Reply)


def decoded_or_refused(frame: bytes) -> Envelope | None:
    """The envelope `frame` decodes into, once its body (if it has one) decoded too, as the
    envelope says (typed or plain data); None if the codec refuses the frame or the body with
    `FrameError`. Any other exception escapes, and fails the test."""
    try:
        envelope = codec.decode(frame)
    except FrameError:
        return None
    assert isinstance(envelope, ENVELOPES), type(envelope)
    if isinstance(envelope, WITH_BODY):
        try:
            codec.decode_body(envelope.body, envelope.typed)
        except FrameError:
            return None
    return envelope


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_random_frames_only_ever_raise_frame_error(data: bytes) -> None:
    envelope = decoded_or_refused(data)
    if envelope is not None:  # what the codec accepts travels on unchanged
        assert codec.decode(codec.encode(envelope)) == envelope


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    ),
    st.integers(0, 40),
)
def test_mutated_valid_frames_only_ever_raise_frame_error(value: object, cut: int) -> None:
    try:
        raw, typed = codec.encode_body(value)
    except TypeError:
        return  # e.g. an integer beyond 64 bits: refused at the sender, as it should be
    frame = codec.encode(Ask("a/root/x", raw, typed, 1, 5.0))
    assert decoded_or_refused(frame) == Ask("a/root/x", raw, typed, 1, 5.0)  # the frame as sent comes back
    assert decoded_or_refused(frame + b"\x00") is None  # trailing bytes are refused
    for mutated in (frame[:cut], frame[:cut] + b"\xff" + frame[cut + 1 :]):
        envelope = decoded_or_refused(mutated)  # refused, or a frame that still decodes
        if envelope is not None:
            assert codec.decode(codec.encode(envelope)) == envelope


def test_exit_reasons_keep_their_types_across() -> None:
    decoded = codec.decode(codec.encode(Exited("a/root/x", "urn:1", Shutdown("reached_max_restart_intensity"))))
    assert decoded.reason == Shutdown("reached_max_restart_intensity")
