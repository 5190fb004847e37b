"""Every runtime message round-trips through MessagePack as the same typed value."""

from __future__ import annotations

import msgspec
import pytest

from flotilla.actors.core import messages as m
from flotilla.actors.demo.messages import Done, Work


def encode(message: m.Message) -> bytes:
    return msgspec.msgpack.encode(message)


def decode(data: bytes, kind: object) -> m.Message:
    return msgspec.msgpack.decode(data, type=kind)  # type: ignore[no-any-return]


def sample_messages() -> list[m.Message]:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        crash = m.Crash.from_exception(exc)
    return [
        m.Normal(),
        m.Shutdown(),
        m.Shutdown("reached_max_restart_intensity"),
        crash,
        m.StartFailed("StartTimeout", "on_start did not finish within 5 s"),
        m.Killed("brutal_kill"),
        m.NodeDown("beta"),
        m.ChildExited("a/root/x", 3, crash),
        m.ChildInfo("x", "a/root/x", "worker", "pkg:X", "running", "permanent", 2, 3, 0, 1.5, ""),
        m.ChildCounts(1, 1, 0, 1),
        m.WhichChildren(),
        m.CountChildren(),
        m.RestartChild("x"),
        m.TerminateChild("x"),
        m.DeleteChild("x"),
        m.ScalePool(4),
        m.SupervisorReport("a/root", "child_exited", "a/root/x", crash, 0.0, 2),
        Work(7),
        Done(7, "a/root/pool/0"),
    ]


@pytest.mark.parametrize("message", sample_messages(), ids=lambda x: type(x).__name__)
def test_message_round_trips_through_messagepack(message: m.Message) -> None:
    assert decode(encode(message), type(message)) == message


def test_exit_reasons_decode_through_their_union() -> None:
    for reason in (m.Normal(), m.Shutdown("x"), m.Killed(), m.NodeDown("n")):
        assert decode(encode(reason), m.ExitReason) == reason


def test_decoding_the_wrong_type_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(encode(Work(1)), m.ExitReason)


def test_crash_text_is_bounded() -> None:
    try:
        raise ValueError("x" * 10 * m.MAX_EXCEPTION_MESSAGE_CHARS)
    except ValueError as exc:
        crash = m.Crash.from_exception(exc)
    assert len(crash.message) == m.MAX_EXCEPTION_MESSAGE_CHARS
    assert len(crash.traceback) == m.MAX_TRACEBACK_CHARS
    assert crash.traceback.endswith("xxx\n")  # the tail, where the raise is, is what is kept


def test_clean_exits_are_normal_and_shutdown_only() -> None:
    assert m.is_clean_exit(m.Normal()) and m.is_clean_exit(m.Shutdown("x"))
    assert not any(m.is_clean_exit(r) for r in (m.Killed(), m.NodeDown("n"), m.StartFailed("T", "")))
