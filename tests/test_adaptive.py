"""The adaptive limit: its rules one by one, a state machine, and closed loops in simulated time."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from consumer.adaptive import AdaptiveConfig, AdaptiveLimit, Cause, Cut, Signal
from tests.capacity_sim import Simulation
from tests.helpers import examples

L = 0.020  # the simulated model's latency


def answer_round(limit: AdaptiveLimit, start: float, rtt: float, signal: Signal = Signal.OK) -> int:
    """Send ``limit.limit`` requests at ``start``, answer each after ``rtt``; return the limit."""
    count = limit.limit
    for _ in range(count):
        limit.record(signal, sent_at=start, now=start + rtt, in_flight=count)
    return limit.limit


# --- the rules, one by one -------------------------------------------------------------------


def test_slow_start_doubles_the_limit_every_round_trip_until_overload() -> None:
    """Until the first overload, every ok answer adds one: the limit doubles per round."""
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=4, max_limit=100))
    seen = [limit.limit]
    seen += [answer_round(limit, n * L, L) for n in range(4)]
    assert seen == [4, 8, 16, 32, 64]
    assert limit.slow_start
    assert answer_round(limit, 5 * L, L) == 100  # capped at max_limit


def test_a_burst_of_429s_to_one_round_cuts_the_limit_once() -> None:
    """Overload answers to requests sent before the last cut do not cut again."""
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=40, backoff=0.9))
    for _ in range(20):
        limit.record(Signal.OVERLOAD, sent_at=1.0, now=1.001, in_flight=40)
    assert limit.limit == 36
    assert not limit.slow_start
    limit.record(Signal.OVERLOAD, sent_at=1.002, now=1.003, in_flight=36)  # sent after it
    assert limit.limit == 32  # 36 x 0.9 = 32.4


def test_a_refusal_to_a_place_granted_before_the_cut_does_not_cut_again() -> None:
    """A request sent after a cut, but while more are in flight than the new limit, does not cut.

    Its place was granted under the old limit (a unit holds a place before its request
    goes out), so its refusal says nothing about the new limit. Alone against K = 48:
    refused at 49, cut to 44; a held place's request refused 1 ms later must not cut to
    39 nor lower the ceiling to 43 (the limit climbs back to 48 and stays there).
    """
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=49, backoff=0.9, plateau_s=1.0))
    limit.slow_start = False
    limit.record(Signal.OVERLOAD, sent_at=1.0, now=1.001, in_flight=49)
    assert limit.limit == 44
    limit.record(Signal.OVERLOAD, sent_at=1.0015, now=1.002, in_flight=48)  # 48 > 44
    assert limit.limit == 44
    assert limit.decreases == 1
    t = 1.002
    while t < 1.9:  # the plateau: back to just below the level refused, 48
        t += L
        answer_round(limit, t, L)
    assert limit.limit == 48
    limit.record(Signal.OVERLOAD, sent_at=t, now=t + 0.001, in_flight=44)  # within the limit
    assert limit.decreases == 2


def test_a_timeout_cuts_like_an_overload_answer() -> None:
    """A request that got no answer in time is a sign of overload."""
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=10, backoff=0.5))
    assert limit.record(Signal.TIMEOUT, sent_at=0.0, now=30.0, in_flight=10) == 5


def test_after_an_overload_the_limit_regrows_only_below_the_refused_level_for_a_while() -> None:
    """For ``plateau_s`` (or a longer ``Retry-After``) the limit stays below what was refused."""
    config = AdaptiveConfig(initial_limit=20, backoff=0.5, plateau_s=1.0, probe=5.0)
    limit = AdaptiveLimit(config)
    limit.record(Signal.OVERLOAD, sent_at=0.0, now=0.0, in_flight=20, retry_after_s=3.0)
    assert limit.limit == 10
    t = 0.0
    for _ in range(50):  # 50 rounds within the 3 s the server asked for
        t += 0.05
        answer_round(limit, t, L)
    assert limit.limit == 19
    while t < 4.5:  # answers go on (a silence would stop the probe's clock)
        t += 0.05
        answer_round(limit, t, L)
    assert limit.limit > 19  # past the Retry-After, it probes beyond


def test_a_retry_after_is_capped_by_max_hold() -> None:
    """A huge ``Retry-After`` keeps the limit down for ``max_hold_s`` at most."""
    config = AdaptiveConfig(initial_limit=20, backoff=0.5, max_hold_s=2.0, probe=5.0)
    limit = AdaptiveLimit(config)
    limit.record(Signal.OVERLOAD, sent_at=0.0, now=0.0, in_flight=20, retry_after_s=3600.0)
    t = 0.0
    while t < 1.95:
        t += 0.05
        answer_round(limit, t, L)
    assert limit.limit == 19  # held below the level refused for max_hold_s
    while t < 3.5:
        t += 0.05
        answer_round(limit, t, L)
    assert limit.limit > 19  # not for the hour the server asked


def test_beyond_the_level_refused_the_probe_starts_slowly_and_grows_with_time() -> None:
    """After the plateau the limit passes the refused level by ``(t / plateau_s)**3`` at most.

    As CUBIC's window after its plateau: replicas sharing a server creep past the level
    where it refused, so the next refusal finds the sum one or two over the server's
    capacity, not every replica a round's growth over it; a capacity that grew is still
    found within seconds. Refused at 20 (the ceiling 19), the plateau ending at 1 s.
    """
    config = AdaptiveConfig(initial_limit=20, backoff=0.5, plateau_s=1.0, probe=20.0)
    limit = AdaptiveLimit(config)
    limit.record(Signal.OVERLOAD, sent_at=0.0, now=0.0, in_flight=20)
    seen = {}
    t = 0.0
    while t < 4.0:
        t += 0.025
        seen[round(t, 3)] = answer_round(limit, t, L)
    assert seen[1.0] == 19  # the plateau: just below the level refused
    assert seen[1.5] == 19  # 0.5 s after it: 19.125 at most
    assert seen[2.0] == 20  # 1 s: 20
    assert seen[3.0] <= 27  # 2 s: 27
    assert seen[4.0] >= 40  # 3 s: 46, growing faster with time


def test_refused_at_the_minimum_the_endpoint_pauses_instead() -> None:
    """A limit at ``min_limit`` cannot go lower: a refusal there pauses new requests.

    For ``plateau_s``, or the server's ``Retry-After`` when longer (capped at
    ``max_hold_s``); a refusal above the minimum does not pause.
    """
    config = AdaptiveConfig(min_limit=2, initial_limit=3, backoff=0.5, max_hold_s=5.0)
    limit = AdaptiveLimit(config)
    limit.record(Signal.OVERLOAD, sent_at=0.0, now=0.0, in_flight=3)
    assert limit.limit == 2
    assert limit.resume_at == -math.inf
    limit.record(Signal.OVERLOAD, sent_at=0.5, now=0.5, in_flight=2, retry_after_s=3.0)
    assert limit.resume_at == 3.5
    limit.record(Signal.OVERLOAD, sent_at=0.6, now=0.6, in_flight=2, retry_after_s=60.0)
    assert limit.resume_at == 5.6
    limit.record(Signal.OVERLOAD, sent_at=0.7, now=0.7, in_flight=2)
    assert limit.resume_at == 5.6  # never brought forward


def test_a_round_started_before_a_cut_is_not_judged() -> None:
    """Answers to requests sent before a cut do not judge the limit set by that cut."""
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=20, tolerance=1.5))
    limit.record(Signal.OK, sent_at=0.0, now=L, in_flight=1)
    limit.record(Signal.OVERLOAD, sent_at=1.0, now=1.0, in_flight=20)
    cut = limit.limit
    for _ in range(cut):  # slow answers, all sent before the cut
        limit.record(Signal.OK, sent_at=0.9, now=1.2, in_flight=cut)
    assert limit.limit >= cut


def test_an_idle_replica_does_not_grow_a_limit_it_does_not_use() -> None:
    """Ok answers with less than half the limit in flight leave the limit where it is."""
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=16))
    for n in range(100):
        limit.record(Signal.OK, sent_at=n * L, now=(n + 1) * L, in_flight=7)
    assert limit.limit == 16


def test_ignored_answers_change_nothing() -> None:
    """A 400 or a refused connection says nothing about capacity."""
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=16))
    for n in range(50):
        limit.record(Signal.IGNORE, sent_at=n, now=n + 0.001, in_flight=16)
    assert limit.limit == 16
    assert limit.slow_start
    assert limit.no_load_rtt is None


def test_the_no_load_round_trip_is_forgotten_after_its_window() -> None:
    """A model that becomes slower for good is learnt again within ``rtt_window_s``."""
    limit = AdaptiveLimit(AdaptiveConfig(rtt_window_s=10.0))
    limit.record(Signal.OK, sent_at=0.0, now=0.010, in_flight=1)
    limit.record(Signal.OK, sent_at=6.0, now=6.050, in_flight=1)  # next half window
    assert limit.no_load_rtt == pytest.approx(0.010)
    limit.record(Signal.OK, sent_at=12.0, now=12.050, in_flight=1)  # the 10 ms half is gone
    assert limit.no_load_rtt == pytest.approx(0.050)
    limit.record(Signal.OK, sent_at=40.0, now=40.080, in_flight=1)  # long silence: all gone
    assert limit.no_load_rtt == pytest.approx(0.080)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_limit": 0}, "min_limit"),
        ({"min_limit": 10, "max_limit": 5}, "min_limit"),
        ({"initial_limit": 0}, "initial_limit"),
        ({"backoff": 1.0}, "backoff"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"probe": 0.0}, "probe"),
        ({"rtt_window_s": math.inf}, "rtt_window_s"),
        ({"plateau_s": -1.0}, "plateau_s"),
        ({"max_hold_s": math.nan}, "max_hold_s"),
    ],
)
def test_bad_configurations_are_refused_naming_the_field(
    values: dict[str, float], message: str
) -> None:
    """Each knob is validated on construction."""
    with pytest.raises(ValueError, match=message):
        AdaptiveConfig(**values)  # type: ignore[arg-type]


def test_an_answer_before_its_request_is_refused() -> None:
    """The two times come from one monotonic clock: an answer cannot precede its request."""
    with pytest.raises(ValueError, match="cannot come before"):
        AdaptiveLimit(AdaptiveConfig()).record(Signal.OK, sent_at=2.0, now=1.0, in_flight=1)


# --- a state machine: the rules hold in any sequence -----------------------------------------


class AdaptiveLimitMachine(RuleBasedStateMachine):
    """Requests are sent and answered in any order with any signal; the rules always hold."""

    @initialize(
        low=st.integers(1, 8),
        span=st.integers(0, 300),
        start=st.integers(1, 400),
        backoff=st.floats(0.3, 0.95),
    )
    def start(self, low: int, span: int, start: int, backoff: float) -> None:
        """Make a limit with random bounds and starting point."""
        self.config = AdaptiveConfig(
            min_limit=low, max_limit=low + span, initial_limit=start, backoff=backoff
        )
        self.limit = AdaptiveLimit(self.config)
        self.now = 0.0
        self.pending: list[float] = []

    @rule(count=st.integers(1, 20))
    def send(self, count: int) -> None:
        """Send some requests now."""
        self.pending += [self.now] * count

    @rule(seconds=st.floats(0.0, 3.0))
    def wait(self, seconds: float) -> None:
        """Time passes."""
        self.now += seconds

    @rule(
        data=st.data(),
        signal=st.sampled_from(Signal),
        retry_after=st.none() | st.floats(0.0, 30.0),
    )
    def answer(self, data: st.DataObject, signal: Signal, retry_after: float | None) -> None:
        """Answer one pending request; check how the limit may have moved."""
        if not self.pending:
            return
        index = data.draw(st.integers(0, len(self.pending) - 1))
        sent_at = self.pending.pop(index)
        in_flight = len(self.pending) + 1
        before = self.limit.limit
        cut_before = self.limit._last_decrease
        cuts_before = self.limit.decreases
        after = self.limit.record(
            signal, sent_at=sent_at, now=self.now, in_flight=in_flight, retry_after_s=retry_after
        )
        cut = self.limit.decreases > cuts_before
        if signal is Signal.IGNORE:
            assert after == before
        elif signal is not Signal.OK:
            if sent_at >= cut_before and in_flight <= before:
                assert cut
                expected = max(self.config.min_limit, int(self.limit_value_before_cut(before)))
                assert after <= max(expected, self.config.min_limit)
            else:
                assert not cut
                assert after == before
        elif cut:  # a queueing judgement: never more than halved
            assert after >= max(self.config.min_limit, before // 2)
        else:
            assert after <= before + 1
            if in_flight * 2 < before:
                assert after == before
        if cut:
            assert after <= before

    def limit_value_before_cut(self, before: int) -> float:
        """Return the most an overload cut may leave: (the old limit + 1) x backoff."""
        return (before + 1) * self.config.backoff

    @invariant()
    def within_bounds(self) -> None:
        """Check the limit stays in [min_limit, max_limit]."""
        if hasattr(self, "limit"):
            assert self.config.min_limit <= self.limit.limit <= self.config.max_limit


TestAdaptiveLimitMachine = AdaptiveLimitMachine.TestCase
TestAdaptiveLimitMachine.settings = settings(
    max_examples=examples(200), stateful_step_count=60, deadline=None
)


# --- closed loops: replicas against a simulated server of capacity K --------------------------


@pytest.mark.parametrize("clients", [1, 3])
@pytest.mark.parametrize("overload", ["reject", "queue"])
def test_replicas_settle_at_the_servers_capacity_and_follow_it(clients: int, overload: str) -> None:
    """Simulated: 1 or 3 replicas (up to 256 each) find K = 48, then K = 24, then 48 again.

    Measured in simulated time after a settling second: ok answers at least 95% of what
    the server can serve, refusals under 5%, and in the queueing mode a p99 round trip
    under 2 x L (the server's queue stays short).
    """
    config = AdaptiveConfig(max_limit=256)
    sim = Simulation(config, clients=clients, capacity=48, overload=overload)  # type: ignore[arg-type]
    served_per_s = 48 / (L + 0.001)  # service time: L plus a mean jitter of 1 ms
    for capacity in (48, 24, 48):
        sim.capacity = capacity
        sim.run(2.0)
        served_per_s = capacity / (L + 0.001)
        totals = sim.run(5.0)
        assert totals.ok / 5.0 >= 0.95 * served_per_s, (capacity, sim.limits)
        assert totals.refused_share <= 0.05, (capacity, sim.limits)
        if overload == "queue":
            assert totals.latency_percentile(99) <= 2 * L, (capacity, sim.limits)


@settings(max_examples=examples(30), deadline=None)
@given(
    clients=st.integers(1, 6),
    extra=st.integers(0, 100),
    overload=st.sampled_from(["reject", "queue"]),
    seed=st.integers(0, 1000),
)
def test_any_number_of_replicas_uses_most_of_any_capacity(
    clients: int, extra: int, overload: str, seed: int
) -> None:
    """Simulated: whatever the capacity and replica count, most of it is used, little refused.

    Looser bounds than the scenario's figures, over a wide range: at least 85% of what the
    server can serve, refusals at most 10%. The capacity is at least two requests per
    replica: below one per replica (``min_in_flight``), limits cannot help, and stopping a
    server that refuses everything is the circuit breaker's job.
    """
    capacity = 2 * clients + extra
    sim = Simulation(
        AdaptiveConfig(max_limit=512),
        clients=clients,
        capacity=capacity,
        overload=overload,  # type: ignore[arg-type]
        seed=seed,
    )
    sim.run(3.0)
    totals = sim.run(6.0)
    assert totals.ok / 6.0 >= 0.85 * capacity / (L + 0.001), sim.limits
    assert totals.refused_share <= 0.10, sim.limits


@pytest.mark.parametrize("seed", [0, 1])
def test_replicas_joining_a_queue_one_after_another_keep_the_true_no_load_time(seed: int) -> None:
    """Simulated: 3 replicas join a queueing server (K = 48) 1.5 s apart; after 40 s.

    The first fills the server before the others send anything, so they first see queued
    round trips. The queue must still drain now and then: every replica's no-load time
    stays within 10% of the server's 20-22 ms (not climbing with each half window of
    ``rtt_window_s``: with cuts to the share and no lower, to 40-45 ms here), the p99
    round trip at most 2 x L, ok answers at least 95% of what the server can serve.
    """
    sim = Simulation(
        AdaptiveConfig(max_limit=256),
        clients=3,
        capacity=48,
        overload="queue",
        seed=seed,
        start_at=(0.0, 1.5, 3.0),
        client_lag=0.002,
    )
    sim.run(10.0)
    totals = sim.run(30.0)
    no_load = [c.limit.no_load_rtt for c in sim.clients]
    assert all(t is not None and t <= 1.1 * (L + 0.002) for t in no_load), no_load
    assert totals.latency_percentile(99) <= 2 * L, sim.limits
    assert totals.ok / 30.0 >= 0.95 * 48 / (L + 0.001), sim.limits


@pytest.mark.parametrize("seed", [0, 1])
def test_against_a_jittery_queue_the_default_tolerance_keeps_p99_under_one_point_eight_l(
    seed: int,
) -> None:
    """Simulated: 3 replicas against a queueing server (K = 48) whose times vary by 6 ms.

    The clients read each answer up to 5 ms late (busy event loops). With the default
    tolerance the p99 round trip stays at most 1.8 x L, a margin under the scenario's
    goal of 2 x L (a tolerance of 1.3 settles at 1.93-1.97 x L here), while the server
    still serves at least 95% of what it can.
    """
    sim = Simulation(
        AdaptiveConfig(max_limit=256),
        clients=3,
        capacity=48,
        overload="queue",
        seed=seed,
        jitter=0.006,
        client_lag=0.005,
    )
    sim.run(3.0)
    totals = sim.run(10.0)
    assert totals.latency_percentile(99) <= 1.8 * L, sim.limits
    assert totals.ok / 10.0 >= 0.95 * 48 / (L + 0.003), sim.limits


def test_each_cut_records_its_cause_and_the_limit_before_and_after() -> None:
    """``last_cut`` says why the limit was last cut: overload, timeout or a queue."""
    config = AdaptiveConfig(initial_limit=20, backoff=0.5, max_limit=64, refusals_rule_s=5.0)
    limit = AdaptiveLimit(config)
    cuts = [limit.last_cut]
    limit.record(Signal.OVERLOAD, sent_at=0.0, now=0.001, in_flight=20)
    cuts.append(limit.last_cut)
    limit.record(Signal.TIMEOUT, sent_at=0.01, now=1.0, in_flight=10)
    cuts.append(limit.last_cut)
    assert cuts == [None, Cut(Cause.OVERLOAD, 0.001, 20, 10), Cut(Cause.TIMEOUT, 1.0, 10, 5)]
    for n in range(12):  # the no-load time, answered every half second (no silence)
        limit.record(Signal.OK, sent_at=1.5 + n / 2, now=1.5 + n / 2 + L, in_flight=5)
    for n in range(3):  # after refusals_rule_s, whole rounds 3 x as slow as that: a queue
        answer_round(limit, 7.0 + n / 2, 3 * L)
    assert limit.last_cut is not None
    assert limit.last_cut.cause is Cause.QUEUE


def test_after_a_silence_the_limit_resumes_below_the_last_refusal_for_a_plateau() -> None:
    """After 30 s with nothing answered, the limit comes back at most one below its last refusal.

    Refused at 20 (ceiling 19), answered for 3 s after the plateau: the probe took the
    limit past 19 (to 19 + 2**3 at most). Then nothing for 30 s (an outage, the circuit
    open). The probe's gains were never confirmed, so the first answers after it find
    the limit at 19 and it stays there for a plateau (replicas coming back together at
    wherever their probes stood overshot the server: traced 16 + 24 + 17 against K = 48,
    three or four cuts each). Counting the silence, the bound was 19 + 32**3: the limit
    grew by one per round trip at once. Then it probes again, slowly, faster with time.
    """
    config = AdaptiveConfig(initial_limit=20, backoff=0.5, plateau_s=1.0, probe=20.0)
    limit = AdaptiveLimit(config)
    limit.record(Signal.OVERLOAD, sent_at=0.0, now=0.0, in_flight=20)
    t = 0.0
    while t < 3.0:
        t += 0.025
        answer_round(limit, t, L)
    assert limit.limit > 19
    t += 30.0
    end = t + 0.9
    while t < end:
        t += 0.025
        answer_round(limit, t, L)
    assert limit.limit == 19
    while t < end + 2.5:  # and it goes on probing, faster with time
        t += 0.025
        answer_round(limit, t, L)
    assert limit.limit >= 25


@pytest.mark.parametrize("seed", [2, 8])
def test_after_an_outage_replicas_coming_back_one_by_one_share_the_server_again(
    seed: int,
) -> None:
    """Simulated: 3 replicas, K = 48 refusing, a 30 s outage; back 0, 1.2-2.2 and 2.6 s after it.

    Each replica resumes when its own circuit closes. Within 10 s the three are back to at
    least 0.9 of the goodput they had before it (the last 5 s). With the probe's clock
    running through the outage, the first one back took the whole server at once and the
    others were refused down to a few requests: with the clients' stalls of a busy
    machine (each stall of the big one stopped most of the server's reuse), seed 2 stayed
    at 0.85 of it.
    """
    sim = Simulation(
        AdaptiveConfig(max_limit=256),
        clients=3,
        capacity=48,
        overload="reject",
        seed=seed,
        client_lag=0.002,
        client_stall=0.05,
    )
    sim.run(10.0)
    before = sim.run(30.0).ok / 30.0
    sim.outage(30.0, (0.0, 1.2 + (seed % 3) * 0.5, 2.6))
    sim.run(10.0)
    after = sim.run(5.0).ok / 5.0
    assert after >= 0.9 * before, sim.limits
