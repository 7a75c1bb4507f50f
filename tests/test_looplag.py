"""The event-loop lag probe: how late the replica's own loop runs, on a real loop.

A starved loop is made by a callback that blocks the loop (``time.sleep`` on purpose:
that is what a busy replica's other callbacks, or the OS not scheduling it, look like
to the probe).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from consumer.adaptive import AdaptiveConfig
from consumer.breaker import BreakerConfig
from consumer.guard import EndpointGuard
from consumer.looplag import LagMark, LoopLag
from consumer.metrics import Metrics


async def test_an_idle_loop_shows_almost_no_lag() -> None:
    """Over 50 ms of an idle loop, the ticks are late by milliseconds at most.

    (20 ms allowed: on a shared two-core machine the OS may not schedule the test at once.)
    """
    probe = LoopLag(tick_s=0.005)
    mark = probe.mark()
    await asyncio.sleep(0.05)
    assert probe.ticks > mark.ticks
    assert probe.since(mark) < 0.020


async def test_a_blocked_loop_shows_the_time_it_was_blocked() -> None:
    """Callbacks that hold the loop 30 ms each, back to back, make every tick late.

    Read while the loop is still held, the least lateness of the ticks since the mark is
    about the time a tick waited behind a callback (more than 10 ms).
    """
    probe = LoopLag(tick_s=0.005)
    loop = asyncio.get_running_loop()
    mark = probe.mark()
    read: list[tuple[int, float]] = []

    def hog(left: int) -> None:
        time.sleep(0.030)
        if left > 1:
            loop.call_soon(hog, left - 1)
        else:
            read.append((probe.ticks - mark.ticks, probe.since(mark)))

    loop.call_soon(hog, 5)
    await asyncio.sleep(0.2)
    ticks, lag = read[0]
    assert ticks >= 2
    assert lag >= 0.010


async def test_a_lag_that_came_and_went_is_not_the_requests_lag() -> None:
    """One late tick among punctual ones: the lag over the request's life is the least."""
    probe = LoopLag(tick_s=0.005)
    loop = asyncio.get_running_loop()
    mark = probe.mark()
    loop.call_soon(time.sleep, 0.030)  # one stall, then an idle loop
    await asyncio.sleep(0.05)
    probe.mark()  # keep the timer going
    await asyncio.sleep(0.02)
    assert probe.ticks - mark.ticks >= 3
    assert probe.since(mark) < 0.010


async def test_the_timer_stops_when_unused_and_a_mark_starts_it_again() -> None:
    """With no mark or reading for a tick the timer stops; a stale lag is not reported."""
    probe = LoopLag(tick_s=0.005)
    probe.mark()
    await asyncio.sleep(0.05)
    stopped_at = probe.ticks
    assert stopped_at <= 3  # one tick after the mark, one after that, then no more
    await asyncio.sleep(0.03)
    assert probe.ticks == stopped_at
    probe.last_s = 0.5  # as if the last tick had been late
    assert probe.since(LagMark(probe.ticks)) == 0.0  # stopped: idle
    mark = probe.mark()
    assert probe.last_s == 0.0
    await asyncio.sleep(0.03)
    assert probe.ticks > mark.ticks


def test_a_tick_must_be_positive() -> None:
    """A probe ticking every 0 s would spin the loop."""
    with pytest.raises(ValueError, match="tick_s"):
        LoopLag(tick_s=0.0)


async def test_the_guard_reports_the_lag_of_an_adaptive_endpoint_only() -> None:
    """An adaptive guard marks each request and reads the probe when its answer is in.

    A fixed limit has no probe (nothing would read it).
    """
    reads: list[float] = []

    class Spy(LoopLag):
        def since(self, mark: LagMark) -> float:
            reads.append(super().since(mark))
            return reads[-1]

    guard = EndpointGuard(
        "default",
        max_in_flight=8,
        adaptive=AdaptiveConfig(initial_limit=4),
        breaker=BreakerConfig(),
        metrics=Metrics(),
        loop_lag=Spy(),
    )
    ticket = await guard.enter()
    assert ticket.lag_mark is not None
    guard.leave(ticket, 200)
    assert len(reads) == 1
    fixed = EndpointGuard(
        "default", max_in_flight=8, adaptive=None, breaker=BreakerConfig(), metrics=Metrics()
    )
    assert fixed.loop_lag is None
    ticket = await fixed.enter()
    assert ticket.lag_mark is None
    fixed.leave(ticket, 200)


async def test_the_gauge_shows_the_last_ticks_lateness_and_zero_once_idle() -> None:
    """The exported gauge reads the probe when scraped: the blocked tick's lag, then 0.

    A callback holds the loop 30 ms: the tick after it is late by more than 10 ms, and a
    scrape while the timer still runs shows that; once nothing is sent or read for a tick
    the timer stops and the gauge falls to 0 (an idle replica has no lag to report).
    """
    metrics = Metrics()
    probe = LoopLag(tick_s=0.005, gauge=metrics.loop_lag)
    gauge = "batch_runner_event_loop_lag_seconds"
    assert metrics.registry.get_sample_value(gauge) == 0.0
    probe.mark()
    loop = asyncio.get_running_loop()
    seen: list[float | None] = []

    def hog() -> None:
        time.sleep(0.030)
        loop.call_later(0.001, lambda: seen.append(metrics.registry.get_sample_value(gauge)))

    loop.call_soon(hog)
    await asyncio.sleep(0.04)  # its timer is due before the scrape's: it wakes after it
    assert len(seen) == 1
    assert seen[0] is not None
    assert seen[0] >= 0.010
    await asyncio.sleep(0.05)  # no mark and no reading: the timer stops
    assert metrics.registry.get_sample_value(gauge) == 0.0
