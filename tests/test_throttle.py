"""The one log throttle: the first event of a kind at once, then one report per interval
with the number held back."""

from __future__ import annotations

import threading

from flotilla.actors.core.throttle import Throttle


def test_the_first_event_of_a_kind_is_reported_at_once_and_the_rest_once_per_interval() -> None:
    throttle = Throttle(10.0)
    assert throttle.hit("a", now=100.0) == 1
    assert [throttle.hit("a", now=100.0 + t) for t in (1, 2, 9.9)] == [0, 0, 0]
    assert throttle.hit("a", now=110.0) == 4  # three held back, and this one
    assert throttle.hit("a", now=115.0) == 0
    assert throttle.hit("b", now=115.0) == 1  # kinds are throttled apart


def test_due_reports_what_was_held_back_once_the_interval_has_passed() -> None:
    throttle = Throttle(10.0)
    assert throttle.due(now=0.0) == 0  # nothing held
    throttle.hold()
    assert throttle.due(now=0.0) == 1
    throttle.hold()
    throttle.hold()
    assert throttle.due(now=5.0) == 0
    assert throttle.due(now=10.0) == 2
    assert throttle.due(now=30.0) == 0  # reported already


def test_no_event_is_lost_or_counted_twice_across_threads() -> None:
    throttle = Throttle(3600.0)
    reported: list[int] = []
    lock = threading.Lock()

    def burst() -> None:
        for _ in range(2000):
            n = throttle.hit("k")
            if n:
                with lock:
                    reported.append(n)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert reported == [1]  # one report inside the hour
    assert throttle.due("k", now=float("inf")) == 4 * 2000 - 1  # every other one held back, once
