"""Property test: the supervisor against a small reference model of OTP's rules.

Hypothesis draws a supervisor (strategy, intensity, children with restart types) and a
sequence of operations: children crashing or exiting normally or with shutdown, time
passing, and the operator calls terminate/restart/delete. After every step the real
supervisor's children (status and incarnation number) and its fate (running or gave up)
must equal what the model computes from supervisor.erl's rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from flotilla.actors import (
    ActorCrashed,
    ActorSystem,
    ChildSpec,
    SupervisorError,
    SupervisorFlags,
    SupervisorSpec,
    Unavailable,
)
from flotilla.actors.core.messages import Shutdown, WhichChildren
from flotilla.actors.core.supervisor import GAVE_UP
from tests.helpers import Crash, ExitNormally, ExitShutdown, FakeClock, Probe

PERIOD = 10.0
IDS = ("c0", "c1", "c2", "c3")


@dataclass
class ModelChild:
    id: str
    restart: str
    running: bool = True
    incarnation: int = 1


@dataclass
class Model:
    """OTP's supervisor rules, written as plainly as possible."""

    strategy: str
    intensity: int
    children: list[ModelChild]
    now: float = 0.0
    restarts: list[float] = field(default_factory=list)
    gave_up: bool = False

    def find(self, child_id: str) -> ModelChild | None:
        return next((c for c in self.children if c.id == child_id), None)

    def child_exits(self, child: ModelChild, clean: bool) -> None:
        child.running = False
        if child.restart == "temporary":
            self.children.remove(child)
            return
        if child.restart == "transient" and clean:
            return
        self.restarts = [t for t in self.restarts if t >= self.now - PERIOD] + [self.now]
        if len(self.restarts) > self.intensity:
            self.gave_up = True
            for c in self.children:
                c.running = False
            return
        if self.strategy == "one_for_one":
            group = [child]
        else:
            start = 0 if self.strategy == "one_for_all" else self.children.index(child)
            group = self.children[start:]
            for sibling in group:
                if sibling is not child and sibling.restart == "temporary":
                    self.children.remove(sibling)
            group = [c for c in group if c in self.children]
        for c in group:
            c.running = True
            c.incarnation += 1

    def terminate(self, child_id: str) -> str:
        child = self.find(child_id)
        if child is None:
            return "not_found"
        child.running = False
        if child.restart == "temporary":
            self.children.remove(child)
        return "ok"

    def restart(self, child_id: str) -> str:
        child = self.find(child_id)
        if child is None:
            return "not_found"
        if child.running:
            return "running"
        child.running = True
        child.incarnation += 1
        return "ok"

    def delete(self, child_id: str) -> str:
        child = self.find(child_id)
        if child is None:
            return "not_found"
        if child.running:
            return "running"
        self.children.remove(child)
        return "ok"


def outcome(call, child_id: str) -> str:  # noqa: ANN001
    try:
        call(child_id)
    except SupervisorError as exc:
        return exc.code
    return "ok"


class SupervisorMatchesOtp(RuleBasedStateMachine):
    system: ActorSystem | None = None

    @initialize(
        strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
        intensity=st.integers(0, 4),
        restarts=st.lists(st.sampled_from(["permanent", "transient", "temporary"]), min_size=1, max_size=len(IDS)),
    )
    def start(self, strategy: str, intensity: int, restarts: list[str]) -> None:
        self.clock = FakeClock()
        self.system = ActorSystem("m", clock=self.clock)
        children = tuple(ChildSpec(IDS[i], Probe, restart=r) for i, r in enumerate(restarts))
        flags = SupervisorFlags(strategy=strategy, intensity=intensity, period=PERIOD)
        self.root = self.system.start(SupervisorSpec("root", children=children, flags=flags))
        self.model = Model(
            strategy, intensity, [ModelChild(IDS[i], r) for i, r in enumerate(restarts)], now=self.clock.now
        )

    def teardown(self) -> None:
        if self.system is not None:
            self.system.stop(timeout=10)

    def settle(self) -> None:
        """Wait for the supervisor to handle everything queued before this call."""
        try:
            self.system.ask("m/root", WhichChildren())
        except Unavailable:
            pass

    @precondition(lambda self: not self.model.gave_up)
    @rule(index=st.integers(0, len(IDS) - 1), how=st.sampled_from(["crash", "normal", "shutdown"]))
    def child_exits(self, index: int, how: str) -> None:
        child_id = IDS[index]
        child = self.model.find(child_id)
        message = {"crash": Crash(), "normal": ExitNormally(), "shutdown": ExitShutdown()}[how]
        try:
            self.system.ask(f"m/root/{child_id}", message)
        except ActorCrashed:
            assert how == "crash"
        except Unavailable:
            assert child is None or not child.running
            return
        assert child is not None and child.running
        self.model.child_exits(child, clean=how != "crash")
        self.settle()

    @precondition(lambda self: not self.model.gave_up)
    @rule(seconds=st.sampled_from([1.0, 5.0, PERIOD, 11.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now = self.clock.now

    @precondition(lambda self: not self.model.gave_up)
    @rule(index=st.integers(0, len(IDS) - 1), call=st.sampled_from(["terminate", "restart", "delete"]))
    def operator(self, index: int, call: str) -> None:
        child_id = IDS[index]
        real = {
            "terminate": self.root.terminate_child,
            "restart": self.root.restart_child,
            "delete": self.root.delete_child,
        }[call]
        expected = {"terminate": self.model.terminate, "restart": self.model.restart, "delete": self.model.delete}[
            call
        ](child_id)
        assert outcome(real, child_id) == expected

    @precondition(lambda self: self.model.gave_up)
    @rule(index=st.integers(0, len(IDS) - 1))
    def nothing_answers_after_giving_up(self, index: int) -> None:
        try:
            self.system.ask(f"m/root/{IDS[index]}", "anyone?")
        except Unavailable:
            return
        raise AssertionError("a child of a supervisor that gave up answered")

    @invariant()
    def same_children_and_fate(self) -> None:
        if self.system is None:
            return
        if self.model.gave_up:
            assert self.system.wait(5) == Shutdown(GAVE_UP)
            return
        assert self.system.wait(0) is None
        real = [(c.id, c.status == "running", c.incarnation) for c in self.root.which_children()]
        expected = [(c.id, c.running, c.incarnation) for c in self.model.children]
        assert real == expected


SupervisorMatchesOtp.TestCase.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
test_supervisor_matches_otp_reference_model = SupervisorMatchesOtp.TestCase
