"""The adaptive limit's queueing-delay rule: a standing queue, not a stall, cuts the limit.

Each test feeds a limit a sequence of rounds (one round trip of answers) and checks
where the limit goes; no clock, no sleeping.
"""

from __future__ import annotations

import pytest

from consumer.adaptive import (
    DELAY_CUT_MARGIN,
    MAX_DELAY_CUT,
    AdaptiveConfig,
    AdaptiveLimit,
    Signal,
)

L = 0.020  # the no-load round trip


def answer_round(limit: AdaptiveLimit, start: float, rtt: float) -> int:
    """Send ``limit.limit`` requests at ``start``, answer each after ``rtt``; return the limit."""
    count = limit.limit
    for _ in range(count):
        limit.record(Signal.OK, sent_at=start, now=start + rtt, in_flight=count)
    return limit.limit


def no_load_round(limit: AdaptiveLimit, count: int = 40) -> None:
    """Answer ``count`` requests at the no-load round trip ``L`` with little in flight."""
    for _ in range(count):  # app-limited (one in flight), so no growth either
        limit.record(Signal.OK, sent_at=0.0, now=L, in_flight=1)


def test_a_standing_queue_scales_the_limit_to_its_share_of_the_server() -> None:
    """Outside slow start, two rounds in a row above tolerance x no-load cut the limit.

    No-load 20 ms, tolerance 1.5; rounds at 50 ms (40% of this replica's requests are
    being served): the first only stops the limit growing, the second cuts it from 40
    toward 0.9 x 16, to ``MAX_DELAY_CUT`` of it at most (20). Rounds at 1.3 x no-load are
    within tolerance.
    """
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=40, tolerance=1.5))
    no_load_round(limit)
    limit.slow_start = False
    assert limit.no_load_rtt == pytest.approx(L)
    assert answer_round(limit, 1.0, 0.050) == 40
    assert limit.decreases == 0
    assert answer_round(limit, 1.1, 0.050) == int(40 * MAX_DELAY_CUT)  # 40 x max(0.5, 0.36)
    before = limit.limit
    assert answer_round(limit, 2.0, 0.026) >= before
    assert answer_round(limit, 2.1, 0.026) >= before


def test_in_slow_start_one_round_above_tolerance_cuts_at_once() -> None:
    """Slow start doubled the limit into the queue: one round is enough to cut it."""
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=40, max_limit=40, tolerance=1.5))
    no_load_round(limit)
    assert limit.slow_start
    assert answer_round(limit, 1.0, 0.050) == int(40 * MAX_DELAY_CUT)
    assert not limit.slow_start


def test_one_slow_round_between_fast_ones_is_a_stall_not_a_queue() -> None:
    """A stall of the process delays every answer of one round; only a queue persists.

    Slow rounds (60 ms) alternating with rounds at the no-load time never cut the limit;
    nor does a round with one fast answer among slow ones (a burst).
    """
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=20, tolerance=1.3))
    no_load_round(limit)
    limit.slow_start = False
    for n in range(20):
        answer_round(limit, 1.0 + n, 0.060 if n % 2 == 0 else L)
    assert limit.decreases == 0
    assert limit.limit > 20
    before = limit.limit
    for _ in range(before - 1):
        limit.record(Signal.OK, sent_at=30.0, now=30.0 + 0.060, in_flight=before)
    limit.record(Signal.OK, sent_at=30.0, now=30.0 + L, in_flight=before)
    assert limit.decreases == 0


def test_against_a_queueing_server_the_limit_settles_at_its_share_not_below() -> None:
    """Rounds whose round trip follows the limit (a server serving 24 at once) settle.

    The server serves this replica's 24 requests in L; beyond, they queue: a round at
    limit ``n`` takes ``L x max(1, n / 24)``. After 400 rounds from 60, the last 100
    rounds' limit stays between ``DELAY_CUT_MARGIN`` x 24 (a cut goes that far below the
    share, so the queue drains) and 1.5 x 24 (a queue of at most the tolerance), never
    sawing down to half the share.
    """
    share = 24
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=60, max_limit=256, tolerance=1.3))
    no_load_round(limit)
    now, seen = 1.0, []
    for _ in range(400):
        rtt = L * max(1.0, limit.limit / share)
        answer_round(limit, now, rtt)
        now += rtt
        seen.append(limit.limit)
    assert int(DELAY_CUT_MARGIN * share) <= min(seen[-100:])
    assert max(seen[-100:]) <= 1.5 * share


# --- the replica's own event-loop lag ---------------------------------------------------------


def lagged_round(limit: AdaptiveLimit, start: float, rtt: float, lag: float) -> int:
    """Like :func:`answer_round`, each answer reported with ``lag`` of the replica's loop."""
    count = limit.limit
    for _ in range(count):
        limit.record(Signal.OK, sent_at=start, now=start + rtt, in_flight=count, loop_lag_s=lag)
    return limit.limit


def test_a_starved_replicas_own_loop_lag_is_not_read_as_a_queue() -> None:
    """Rounds 25 ms late because the replica's loop was 25 ms late do not cut the limit.

    The server answers in its no-load 20 ms; the replica notices every answer 25 ms
    later (2.25x no-load, far above tolerance). Told the loop's lag, the limit keeps
    growing; not told (the behaviour before the lag probe), it reads a queue and cuts.
    """
    told = AdaptiveLimit(AdaptiveConfig(initial_limit=20, max_limit=256, tolerance=1.3))
    blind = AdaptiveLimit(AdaptiveConfig(initial_limit=20, max_limit=256, tolerance=1.3))
    for limit in (told, blind):
        no_load_round(limit)
        limit.slow_start = False
    for n in range(10):
        lagged_round(told, 1.0 + n, L + 0.025, 0.025)
        lagged_round(blind, 1.0 + n, L + 0.025, 0.0)
    assert told.decreases == 0
    assert told.limit > 20
    assert blind.decreases > 0
    assert blind.limit < 20


def test_a_real_queue_is_still_seen_through_the_loop_lag() -> None:
    """A queue in the server (50 ms for a 20 ms no-load) on top of 15 ms of lag still cuts.

    The cut is the server's share: 40 x 20/50 (to ``MAX_DELAY_CUT`` of 40 at most), the
    lag taken off the round trip before the ratio, not 40 x 20/65; with a mild queue
    (22 ms, tolerance 1.05) the cut is 40 x 0.9 x 20/22 = 32 (``DELAY_CUT_MARGIN``), not
    the 20 the lag would make it.
    """
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=40, tolerance=1.5))
    no_load_round(limit)
    limit.slow_start = False
    assert lagged_round(limit, 1.0, 0.050 + 0.015, 0.015) == 40  # the first slow round
    assert lagged_round(limit, 1.1, 0.050 + 0.015, 0.015) == int(40 * MAX_DELAY_CUT)
    queue = AdaptiveLimit(AdaptiveConfig(initial_limit=40, tolerance=1.05))
    no_load_round(queue)
    queue.slow_start = False
    lagged_round(queue, 1.0, 0.022 + 0.015, 0.015)
    cut = lagged_round(queue, 1.1, 0.022 + 0.015, 0.015)
    assert cut == int(40 * DELAY_CUT_MARGIN * 0.020 / 0.022)


def test_an_overestimated_lag_does_not_lower_the_no_load_time() -> None:
    """The no-load time is learnt from whole round trips, so a lag larger than them is harmless.

    Answers in 20 ms reported with 30 ms of lag leave the no-load time at 20 ms (not 0),
    and later rounds at 24 ms (within tolerance) with no lag are not a queue.
    """
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=20, tolerance=1.3))
    limit.slow_start = False
    for _ in range(40):
        limit.record(Signal.OK, sent_at=0.0, now=L, in_flight=1, loop_lag_s=0.030)
    assert limit.no_load_rtt == pytest.approx(L)
    for n in range(10):
        answer_round(limit, 1.0 + n, 0.024)
    assert limit.decreases == 0


@pytest.mark.parametrize("lag", [-0.001, float("nan"), float("inf")])
def test_a_negative_or_non_finite_loop_lag_is_refused(lag: float) -> None:
    """``loop_lag_s`` is a duration: negative, NaN or infinite is a caller's bug."""
    limit = AdaptiveLimit(AdaptiveConfig())
    with pytest.raises(ValueError, match="loop_lag_s"):
        limit.record(Signal.OK, sent_at=0.0, now=L, in_flight=1, loop_lag_s=lag)


def test_the_round_discounts_the_lag_all_its_answers_shared_not_each_answers_own() -> None:
    """A round's discount is the least lag reported with its answers.

    Every answer took 50 ms for a 20 ms no-load time (tolerance 1.5): a queue. All but
    one were reported with 30 ms of loop lag, one with none: the loop was not late all
    round, so the fastest answer's 50 ms stands and two such rounds cut the limit. (Taking
    each answer's own lag off would have read 20 ms, no queue.) With 30 ms reported for
    every answer the same rounds are the replica's lag, and the limit is not cut.
    """
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=20, tolerance=1.5))
    no_load_round(limit)
    limit.slow_start = False
    for n in range(2):
        count = limit.limit
        for k in range(count):
            lag = 0.0 if k == count // 2 else 0.030
            limit.record(Signal.OK, sent_at=1.0 + n, now=1.05 + n, in_flight=count, loop_lag_s=lag)
    assert limit.decreases == 1
    shared = AdaptiveLimit(AdaptiveConfig(initial_limit=20, tolerance=1.5))
    no_load_round(shared)
    shared.slow_start = False
    for n in range(2):
        lagged_round(shared, 1.0 + n, 0.050, 0.030)
    assert shared.decreases == 0


def refused_after_no_load(config: AdaptiveConfig) -> tuple[AdaptiveLimit, int]:
    """Return a limit that measured its no-load time and then got a 429 at 0.5 s, and its cuts."""
    limit = AdaptiveLimit(config)
    no_load_round(limit)
    limit.record(Signal.OVERLOAD, sent_at=0.5, now=0.5, in_flight=40)
    return limit, limit.decreases


def test_while_the_server_refuses_its_refusals_set_the_limit_not_the_round_trip_times() -> None:
    """Within ``refusals_rule_s`` of a 429 or 503, slow rounds do not cut the limit.

    A server that refuses beyond its capacity (reject mode) has no queue: rounds slower
    than tolerance are then the busy machine's, not the server's. In scenario 7 (3
    replicas against a rejecting K = 48 on 2 cores) every replica cut its limit by a fifth
    two times a second for such rounds (bench/adaptive_trace). After the window the rule
    is back; a timeout is not a refusal and does not set it aside.
    """
    config = AdaptiveConfig(initial_limit=40, tolerance=1.5, refusals_rule_s=5.0, probe=0.1)
    limit, refused = refused_after_no_load(config)
    t = 1.0
    while t < 5.4:  # rounds at 2.5 x no-load, for the 5 s after the refusal
        answer_round(limit, t, 0.050)
        t += 0.1
    assert limit.decreases == refused
    answer_round(limit, 5.6, 0.050)
    answer_round(limit, 5.7, 0.050)
    assert limit.decreases == refused + 1  # the window is over: a queue cuts again
    timed_out = AdaptiveLimit(config)
    no_load_round(timed_out)
    timed_out.record(Signal.TIMEOUT, sent_at=0.5, now=0.5, in_flight=40)
    answer_round(timed_out, 1.0, 0.050)
    answer_round(timed_out, 1.1, 0.050)
    assert timed_out.decreases == 2  # the timeout, then the queue


def test_a_silence_does_not_run_out_the_refusals_rule() -> None:
    """The refusals rule's window counts the time the server answered, not an outage.

    Refused, then answered for a second, then 30 s of nothing (an outage, the circuit
    open), then the circuit's probe answered at the no-load time and slow rounds (a busy
    machine, every replica rushing back at once): the server that refused before the
    outage is the one answering after it, and only a second and a half of answers lies
    between its refusal and these rounds, so they do not cut. Counting the outage, the
    30 s window ran out during it and the first slow rounds after it cut the limit to
    a half as a queue. Once 30 s of answers have passed, the rule is back.
    """
    config = AdaptiveConfig(initial_limit=40, tolerance=1.5, refusals_rule_s=30.0, probe=0.1)
    limit, refused = refused_after_no_load(config)
    t = 0.6
    while t < 1.5:  # a second of answers at the no-load time
        answer_round(limit, t, L)
        t += 0.1
    t += 30.0  # silence; then the probe, alone on the wire
    limit.record(Signal.OK, sent_at=t, now=t + L, in_flight=1)
    for _ in range(10):  # rounds at 2.5 x no-load
        t += 0.1
        answer_round(limit, t, 0.050)
    assert limit.decreases == refused
    end = t + 29.0
    while t < end:  # answers at the no-load time until the window is over
        t += 0.1
        answer_round(limit, t, L)
    for n in range(1, 4):  # slow rounds again: a queue now
        answer_round(limit, t + n * 0.1, 0.050)
    assert limit.decreases == refused + 1
