"""The progress monitor: which partitions with work have stopped moving, and why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.progress import ProgressMonitor, ReplicaState, Why

P0 = ("requests", 0)
P1 = ("requests", 1)
CALM = ReplicaState(buffer_full=False, model_failing=False)


def test_a_partition_with_work_that_does_not_move_stalls_after_the_timeout() -> None:
    """A partition with work is stalled once it has not moved for the stall timeout.

    Before the timeout it is not; movement resets the clock; the stall is unhealthy when
    nothing explains it.
    """
    monitor = ProgressMonitor(60.0)
    monitor.assign([P0], now=0.0)
    assert monitor.check(59.9, lambda _: True, CALM) == {}
    monitor.moved(P0, 30.0)
    assert monitor.check(89.9, lambda _: True, CALM) == {}
    stalls = monitor.check(90.0, lambda _: True, CALM)
    assert list(stalls) == [P0]
    assert stalls[P0].seconds == 60.0
    assert stalls[P0].why is Why.UNEXPLAINED
    assert stalls[P0].unhealthy


def test_a_partition_without_work_never_stalls_and_starts_fresh_when_work_arrives() -> None:
    """No work counts as keeping up: work arriving after a long idle time is not a stall."""
    monitor = ProgressMonitor(10.0)
    monitor.assign([P0], now=0.0)
    assert monitor.check(1000.0, lambda _: False, CALM) == {}
    assert monitor.check(1005.0, lambda _: True, CALM) == {}
    assert list(monitor.check(1010.0, lambda _: True, CALM)) == [P0]


def test_reasons_a_restart_would_not_fix_are_reported_but_healthy() -> None:
    """A failing model explains a stall; a full buffer does while the replica moves.

    A full buffer with no movement anywhere for the timeout is unexplained.
    """
    monitor = ProgressMonitor(10.0)
    monitor.assign([P0, P1], now=0.0)
    failing = ReplicaState(buffer_full=False, model_failing=True)
    stall = monitor.check(20.0, lambda _: True, failing)[P0]
    assert stall.why is Why.MODEL_FAILING
    assert not stall.unhealthy
    full = ReplicaState(buffer_full=True, model_failing=False)
    monitor.moved(P1, 15.0)  # the work the buffer is full of moves
    stalls = monitor.check(20.0, lambda tp: tp == P0, full)
    assert stalls[P0].why is Why.BACKPRESSURE
    assert not stalls[P0].unhealthy
    stalls = monitor.check(30.0, lambda _: True, full)  # nothing moved for 10 s
    assert {tp: s.why for tp, s in stalls.items()} == {P0: Why.UNEXPLAINED, P1: Why.UNEXPLAINED}
    circuit = ReplicaState(buffer_full=True, model_failing=True, circuit_open=True)
    stall = monitor.check(30.0, lambda _: True, circuit)[P0]
    assert stall.why is Why.CIRCUIT_OPEN  # the most specific reason wins
    assert not stall.unhealthy


def test_forgotten_and_unknown_partitions_are_not_watched() -> None:
    """Revoked partitions leave the watch; movement of an unwatched one is ignored."""
    monitor = ProgressMonitor(5.0)
    monitor.assign([P0, P1], now=0.0)
    monitor.forget([P0])
    monitor.moved(P0, 1.0)
    assert monitor.watched == frozenset({P1})
    assert monitor.idle_for(P0, 2.0) is None
    assert monitor.idle_for(P1, 2.0) == 2.0
    assert list(monitor.check(5.0, lambda _: True, CALM)) == [P1]
    with pytest.raises(ValueError, match="stall_timeout_s"):
        ProgressMonitor(0)


@given(
    moves=st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=20),
    timeout=st.floats(min_value=0.1, max_value=500, allow_nan=False),
    now=st.floats(min_value=0, max_value=2000, allow_nan=False),
)
def test_stalled_exactly_when_the_last_move_is_a_timeout_old(
    moves: list[float],
    timeout: float,
    now: float,
) -> None:
    """With work, a partition is stalled iff now - (its last move) >= the timeout."""
    monitor = ProgressMonitor(timeout)
    monitor.assign([P0], now=0.0)
    for at in sorted(moves):
        monitor.moved(P0, at)
    last = max([0.0, *moves])
    stalled = P0 in monitor.check(now, lambda _: True, CALM)
    assert stalled == (now - last >= timeout)


def test_units_waiting_out_a_backoff_explain_their_partitions_stall() -> None:
    """A partition whose units wait out a retry backoff is not stuck: the model failed them.

    Right after a model outage the model answers again (so it is not "failing"), but a
    partition whose units sleep in a long backoff has not moved yet: that is explained;
    the other partition, with no unit retrying, is not.
    """
    monitor = ProgressMonitor(10.0)
    monitor.assign([P0, P1], now=0.0)
    replica = ReplicaState(buffer_full=False, model_failing=False, retrying=frozenset({P0}))
    stalls = monitor.check(20.0, lambda _: True, replica)
    assert stalls[P0].why is Why.MODEL_FAILING
    assert not stalls[P0].unhealthy
    assert stalls[P1].why is Why.UNEXPLAINED


def test_after_a_model_outage_a_partition_has_the_whole_timeout_to_move_again() -> None:
    """The time a reason held does not count toward an unexplained stall.

    A partition idle through a 70 s model outage is stalled for that reason; once the
    model answers again it is not unhealthy at once (it has not moved for 80 s, but only
    10 s of that without a reason); 60 s after the outage, still not moving, it is.
    """
    monitor = ProgressMonitor(60.0)
    monitor.assign([P0], now=0.0)
    failing = ReplicaState(buffer_full=False, model_failing=True)
    for now in (10.0, 40.0):
        assert monitor.check(now, lambda _: True, failing) == {}
    assert monitor.check(70.0, lambda _: True, failing)[P0].why is Why.MODEL_FAILING
    assert monitor.check(80.0, lambda _: True, CALM) == {}
    assert monitor.check(129.9, lambda _: True, CALM) == {}
    stall = monitor.check(130.0, lambda _: True, CALM)[P0]
    assert (stall.why, stall.seconds) == (Why.UNEXPLAINED, 130.0)
