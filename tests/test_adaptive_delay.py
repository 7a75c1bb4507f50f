"""The adaptive limit's queueing-delay rule: a standing queue, not a stall, cuts the limit.

Each test feeds a limit a sequence of rounds (one round trip of answers) and checks
where the limit goes; no clock, no sleeping.
"""

from __future__ import annotations

import pytest

from consumer.adaptive import MAX_DELAY_CUT, AdaptiveConfig, AdaptiveLimit, Signal

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
    toward 16, to ``MAX_DELAY_CUT`` of it at most (32). Rounds at 1.3 x no-load are
    within tolerance.
    """
    limit = AdaptiveLimit(AdaptiveConfig(initial_limit=40, tolerance=1.5))
    no_load_round(limit)
    limit.slow_start = False
    assert limit.no_load_rtt == pytest.approx(L)
    assert answer_round(limit, 1.0, 0.050) == 40
    assert limit.decreases == 0
    assert answer_round(limit, 1.1, 0.050) == int(40 * MAX_DELAY_CUT)  # 40 x max(0.8, 0.4)
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
    rounds' limit stays between 24 (the server always busy) and 1.5 x 24 (a queue of at
    most the tolerance), never sawing down to 0.8 of the share.
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
    assert share <= min(seen[-100:])
    assert max(seen[-100:]) <= 1.5 * share
