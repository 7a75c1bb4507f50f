"""The circuit breaker: when it opens, how it probes, when it closes; a state machine."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from consumer.breaker import (
    Admission,
    BreakerConfig,
    Circuit,
    CircuitBreaker,
    Verdict,
    verdict_of,
)
from tests.helpers import examples


def state_of(breaker: CircuitBreaker) -> Circuit:
    """Return the breaker's state (read through a call, so type narrowing does not stick)."""
    return breaker.state


def test_verdicts_of_statuses() -> None:
    """No answer is down; 502-504 refuse; every other answer (429 too) shows a working server."""
    assert verdict_of(None) is Verdict.DOWN
    for status in (502, 503, 504):
        assert verdict_of(status) is Verdict.REFUSED
    for status in (200, 204, 400, 404, 422, 429, 500, 501):
        assert verdict_of(status) is Verdict.UP


def test_consecutive_failures_open_the_circuit_and_an_answer_resets_the_count() -> None:
    """``failures`` requests in a row without an answer open it; any answer between restarts."""
    breaker = CircuitBreaker(BreakerConfig(failures=3, window=100))
    for verdict in (Verdict.DOWN, Verdict.DOWN, Verdict.UP, Verdict.DOWN, Verdict.DOWN):
        breaker.record(verdict, 1.0)
    assert state_of(breaker) is Circuit.CLOSED
    breaker.record(Verdict.DOWN, 2.0)
    assert state_of(breaker) is Circuit.OPEN
    assert breaker.open_since == 2.0
    assert breaker.opens == 1


def test_a_high_share_of_refusals_opens_the_circuit() -> None:
    """At least ``error_share`` of the last ``window`` requests refused or unanswered opens it.

    Not before the window is full; 500s do not count (a model's answer to one bad input).
    """
    breaker = CircuitBreaker(BreakerConfig(failures=5, error_share=0.5, window=10))
    for _ in range(4):
        breaker.record(Verdict.REFUSED, 0.0)
    for _ in range(5):
        breaker.record(verdict_of(500), 0.0)
    assert state_of(breaker) is Circuit.CLOSED
    breaker.record(Verdict.REFUSED, 0.0)  # 5 of 10
    assert state_of(breaker) is Circuit.OPEN


def test_open_circuit_sends_nothing_then_admits_one_probe_per_interval() -> None:
    """Open: no request until the probe interval passed; then exactly one probe at a time."""
    breaker = CircuitBreaker(BreakerConfig(failures=1, probe_interval_s=1.0))
    breaker.record(Verdict.DOWN, 10.0)
    assert breaker.admit(10.5) == Admission(send=False, wait_s=0.5)
    assert breaker.admit(11.0) == Admission(send=True, probe=True)
    assert state_of(breaker) is Circuit.HALF_OPEN
    assert not breaker.admit(11.1).send  # the probe is on the wire
    breaker.record(Verdict.DOWN, 11.2, probe=True)
    assert state_of(breaker) is Circuit.OPEN
    assert not breaker.admit(13.1).send  # a failed probe doubles the interval
    assert breaker.admit(13.2).probe
    breaker.record(Verdict.UP, 13.3, probe=True)
    assert state_of(breaker) is Circuit.CLOSED
    assert breaker.open_since is None
    assert breaker.admit(13.3) == Admission(send=True)


def test_failed_probes_double_the_interval_up_to_the_cap_and_a_new_outage_starts_over() -> None:
    """Probes after 1, 2, 3, 3 s (cap 3x); once closed, the next opening waits 1 s again."""
    breaker = CircuitBreaker(BreakerConfig(failures=1, probe_interval_s=1.0))
    breaker.record(Verdict.DOWN, 0.0)
    now, gaps = 0.0, []
    for _ in range(4):
        wait = breaker.admit(now).wait_s
        gaps.append(wait)
        now += wait
        assert breaker.admit(now).probe
        breaker.record(Verdict.DOWN, now, probe=True)
    assert gaps == [1.0, 2.0, 3.0, 3.0]
    assert breaker.admit(now + 3.0).probe
    breaker.record(Verdict.UP, now + 3.0, probe=True)
    breaker.record(Verdict.DOWN, now + 5.0)
    assert breaker.admit(now + 5.0).wait_s == 1.0


def test_a_retry_after_keeps_the_circuit_open_longer_up_to_a_cap() -> None:
    """A refusal's ``Retry-After`` delays the next probe, at most ``max_retry_after_s``."""
    breaker = CircuitBreaker(BreakerConfig(failures=1, window=1, max_retry_after_s=30.0))
    breaker.record(Verdict.REFUSED, 0.0, retry_after_s=20.0)
    assert not breaker.admit(19.9).send
    assert breaker.admit(20.0).probe
    breaker.record(Verdict.REFUSED, 20.0, probe=True, retry_after_s=3600.0)
    assert not breaker.admit(49.9).send
    assert breaker.admit(50.0).probe


def test_late_outcomes_while_open_are_ignored_only_the_probe_decides() -> None:
    """Answers to requests sent before the circuit opened change nothing while it is open."""
    breaker = CircuitBreaker(BreakerConfig(failures=1))
    breaker.record(Verdict.DOWN, 0.0)
    breaker.record(Verdict.UP, 0.1)
    assert state_of(breaker) is Circuit.OPEN
    assert breaker.admit(1.0).probe
    breaker.record(Verdict.UP, 1.05)  # not the probe
    assert state_of(breaker) is Circuit.HALF_OPEN


def test_an_abandoned_probe_lets_the_next_request_probe_at_once() -> None:
    """A probe cancelled before its outcome (its partition was revoked) frees the half-open slot."""
    breaker = CircuitBreaker(BreakerConfig(failures=1))
    breaker.record(Verdict.DOWN, 0.0)
    assert breaker.admit(1.0).probe
    breaker.abandon_probe(1.5)
    assert breaker.admit(1.5).probe


def test_a_disabled_breaker_never_opens() -> None:
    """``failures`` = 0 turns the breaker off."""
    breaker = CircuitBreaker(BreakerConfig(failures=0, window=1))
    for n in range(100):
        breaker.record(Verdict.DOWN, float(n))
    assert state_of(breaker) is Circuit.CLOSED
    assert breaker.admit(100.0).send


def test_a_probe_outcome_outside_half_open_is_a_bug() -> None:
    """Reporting a probe that was never admitted raises."""
    with pytest.raises(RuntimeError, match="probe"):
        CircuitBreaker(BreakerConfig()).record(Verdict.UP, 0.0, probe=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"failures": -1}, "failures"),
        ({"error_share": 0.0}, "error_share"),
        ({"error_share": 1.5}, "error_share"),
        ({"window": 0}, "window"),
        ({"probe_interval_s": 0.0}, "probe_interval_s"),
        ({"max_retry_after_s": math.inf}, "max_retry_after_s"),
    ],
)
def test_bad_configurations_are_refused_naming_the_field(
    values: dict[str, float], message: str
) -> None:
    """Each knob is validated on construction."""
    with pytest.raises(ValueError, match=message):
        BreakerConfig(**values)  # type: ignore[arg-type]


class BreakerMachine(RuleBasedStateMachine):
    """Requests are admitted and answered in any order; a simple model predicts the state.

    The model: closed until ``failures`` unanswered in a row or ``error_share`` of a full
    window refused or unanswered; open until the probe time; one probe at a time; only
    the probe's verdict moves a circuit that is not closed; an abandoned probe lets the
    next ask probe at once.
    """

    @initialize(
        failures=st.integers(1, 6),
        window=st.integers(1, 12),
        share=st.sampled_from([0.25, 0.5, 1.0]),
    )
    def start(self, failures: int, window: int, share: float) -> None:
        """Make a breaker with random thresholds, closed at time 0."""
        self.config = BreakerConfig(failures=failures, error_share=share, window=window)
        self.breaker = CircuitBreaker(self.config)
        self.now = 0.0
        self.in_flight: list[bool] = []  # per request sent: is it the probe?
        self.state = Circuit.CLOSED
        self.row = 0
        self.recent: list[bool] = []
        self.probe_at = 0.0
        self.failed_probes = 0

    @rule(seconds=st.floats(0.0, 2.0))
    def wait(self, seconds: float) -> None:
        """Time passes."""
        self.now += seconds

    @rule()
    def ask(self) -> None:
        """Ask to send, as a unit does; the admission matches the model."""
        admission = self.breaker.admit(self.now)
        if self.state is Circuit.CLOSED:
            assert admission == Admission(send=True)
        elif self.state is Circuit.OPEN and self.now >= self.probe_at:
            assert admission.probe
            self.state = Circuit.HALF_OPEN
        else:
            assert not admission.send
            assert admission.wait_s > 0
        if admission.send:
            self.in_flight.append(admission.probe)

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data(), verdict=st.sampled_from(Verdict))
    def answer(self, data: st.DataObject, verdict: Verdict) -> None:
        """One request in flight gets its outcome."""
        probe = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        self.breaker.record(verdict, self.now, probe=probe)
        if probe:
            if verdict is Verdict.UP:
                self.state = Circuit.CLOSED
            else:
                self.failed_probes += 1
                self._open()
        elif self.state is Circuit.CLOSED:
            self.row = self.row + 1 if verdict is Verdict.DOWN else 0
            self.recent = [*self.recent, verdict is not Verdict.UP][-self.config.window :]
            full = len(self.recent) == self.config.window
            if self.row >= self.config.failures or (
                full and sum(self.recent) >= self.config.error_share * self.config.window
            ):
                self.failed_probes = 0
                self._open()

    @precondition(lambda self: any(self.in_flight))
    @rule()
    def abandon(self) -> None:
        """Cancel the probe: the next ask may probe at once."""
        self.in_flight.remove(True)
        self.breaker.abandon_probe(self.now)
        self.state = Circuit.OPEN
        self.probe_at = self.now

    def _open(self) -> None:
        self.state = Circuit.OPEN
        interval = self.config.probe_interval_s
        self.probe_at = self.now + min(
            interval * 2**self.failed_probes, interval * self.config.probe_backoff_cap
        )
        self.row = 0
        self.recent = []

    @invariant()
    def agrees(self) -> None:
        """Check the breaker is in the model's state, with at most one probe on the wire."""
        if hasattr(self, "breaker"):
            assert self.breaker.state is self.state
            assert sum(self.in_flight) <= 1
            assert (self.breaker.open_since is None) == (self.state is Circuit.CLOSED)


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(
    max_examples=examples(300), stateful_step_count=80, deadline=None
)


@settings(max_examples=examples(300), deadline=None)
@given(
    verdicts=st.lists(st.sampled_from([Verdict.UP, Verdict.UP, Verdict.REFUSED, Verdict.DOWN])),
    failures=st.integers(0, 4),
    window=st.integers(1, 6),
)
def test_an_answer_while_all_up_changes_nothing(
    verdicts: list[Verdict], failures: int, window: int
) -> None:
    """While ``all_up``, an answer from a working server leaves everything as it was.

    The guard skips :meth:`CircuitBreaker.record` for a 2xx then: a breaker that skips it
    so reaches the same states as one that records every answer, and ``all_up`` is only
    true on a closed circuit after a full window of answers.
    """
    config = BreakerConfig(failures=failures, window=window, error_share=0.5)
    recording, skipping = CircuitBreaker(config), CircuitBreaker(config)
    for n, verdict in enumerate(verdicts):
        now = float(n)
        if verdict is Verdict.UP and skipping.all_up:
            assert state_of(skipping) is Circuit.CLOSED
        else:
            skipping.record(verdict, now)
        recording.record(verdict, now)
        assert state_of(skipping) is state_of(recording)
        assert skipping.all_up == recording.all_up
        # all_up is kept, not computed: it says what its definition says, every time.
        window_all_good = list(recording._recent) == [False] * window
        assert recording.all_up == (state_of(recording) is Circuit.CLOSED and window_all_good)
        assert skipping.admit(now) == recording.admit(now)
