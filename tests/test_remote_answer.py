"""The one-shot answer a remote ask waits on (set by the transport's I/O thread)."""

from __future__ import annotations

import threading

import pykka
import pytest

from flotilla.actors.core.errors import NodeUnreachable
from flotilla.actors.core.errors import Timeout as AskTimeout
from flotilla.actors.core.registry import PendingReply
from flotilla.nodes.cluster.membership import RemoteAnswer


def test_the_asker_wakes_with_the_answer_set_by_another_thread() -> None:
    answer = RemoteAnswer()
    setter = threading.Timer(0.05, answer.set, args=({"done": 3},))
    setter.start()
    assert answer.get(timeout=10) == {"done": 3}
    assert answer.get(timeout=0) == {"done": 3}  # again, at once
    setter.join()


def test_an_answer_not_set_in_time_times_out_and_a_late_one_is_kept() -> None:
    answer = RemoteAnswer()
    with pytest.raises(AskTimeout):
        PendingReply("beta/root/tally", answer, timeout=0.01).get()
    answer.set("late")  # the reply that arrives after the asker gave up harms nothing
    assert answer.get(timeout=0) == "late"


def test_the_first_answer_stands_and_errors_are_raised_typed() -> None:
    answer = RemoteAnswer()
    error = NodeUnreachable("beta/root/tally", "beta")
    answer.set_exception((NodeUnreachable, error, None))
    answer.set("too late")  # e.g. a reply racing the NodeDown that failed the ask
    for _ in range(2):
        with pytest.raises(NodeUnreachable):
            answer.get(timeout=0)
    with pytest.raises(pykka.Timeout):
        RemoteAnswer().get(timeout=0)
