"""The dispatcher's endpoint guards against the real test server: adaptive limit, circuit breaker.

Each test runs the project's test inference server on the test's event loop (with its
capacity model or its outage switch) and a real :class:`~consumer.dispatcher.Dispatcher`.
Nothing is timed: waits have deadlines, and bounds hold by construction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest

from consumer.adaptive import AdaptiveConfig
from consumer.attempt import UnitClock
from consumer.breaker import BreakerConfig, Circuit
from consumer.dispatcher import Dispatcher
from consumer.endpoints import DEFAULT_TARGET
from consumer.guard import COUNTED, EndpointGuard, Ticket
from consumer.limiter import Place
from consumer.metrics import Metrics
from tests.test_dispatcher import settings_for
from tools.testservers.inference import ServerConfig, TestInferenceServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from consumer.outcome import Outcome
    from consumer.settings import Settings


class Running:
    """A started dispatcher and the server it calls."""

    def __init__(self, dispatcher: Dispatcher, settings: Settings) -> None:
        """Hold ``dispatcher``, started with ``settings``."""
        self.dispatcher = dispatcher
        self.settings = settings
        self.guard = dispatcher.guards[DEFAULT_TARGET]

    def unit(self, n: int) -> asyncio.Task[Outcome]:
        """Start one work unit of one item ``n``."""
        endpoint = self.settings.endpoints[DEFAULT_TARGET]
        return asyncio.create_task(self.dispatcher.run(endpoint, [b"%d" % n]))


def adaptive_guard(
    initial: int, *, max_limit: int = 64, metrics: Metrics | None = None
) -> EndpointGuard:
    """Return the default endpoint's guard with an adaptive limit from ``initial``."""
    return EndpointGuard(
        "default",
        max_in_flight=max_limit,
        adaptive=AdaptiveConfig(min_limit=1, max_limit=max_limit, initial_limit=initial),
        breaker=BreakerConfig(),
        metrics=Metrics() if metrics is None else metrics,
    )


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    """Return an async factory of started dispatchers; all are closed at teardown."""
    dispatchers: list[Dispatcher] = []

    async def factory(server: TestInferenceServer, **values: Any) -> Running:
        settings = settings_for(server.endpoint("v1"), **values)
        dispatcher = Dispatcher(settings, metrics=Metrics())
        await dispatcher.start()
        dispatchers.append(dispatcher)
        return Running(dispatcher, settings)

    yield factory
    for dispatcher in dispatchers:
        await dispatcher.close()


async def until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait until ``check()`` holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_429_slows_the_whole_endpoint(started: Callable[..., Any]) -> None:
    """One unit's 429 lowers the endpoint's adaptive limit, which every unit shares."""
    async with TestInferenceServer(ServerConfig(script=(429,), retry_after_s=0)) as server:
        running = await started(server, concurrency="adaptive", max_in_flight=64)
        assert running.guard.limiter.limit == 8  # the adaptive limit's starting point
        outcome = await running.unit(1)
    assert outcome.predictions == [b"1"]
    assert outcome.attempts == 2
    assert running.guard.limiter.limit == 7  # 8 x 0.9
    limit = running.dispatcher._metrics.registry.get_sample_value(
        "batch_runner_in_flight_limit", {"endpoint": DEFAULT_TARGET}
    )
    assert limit == 7


async def test_a_fixed_limit_stays_where_it_is(started: Callable[..., Any]) -> None:
    """With ``concurrency=fixed`` the limit is ``max_in_flight`` whatever the answers."""
    async with TestInferenceServer(ServerConfig(script=(429, 503), retry_after_s=0)) as server:
        running = await started(server, concurrency="fixed", max_in_flight=12)
        outcome = await running.unit(1)
    assert outcome.attempts == 3
    assert running.guard.limiter.limit == 12


async def test_against_a_small_capacity_adaptive_is_refused_far_less_than_fixed(
    started: Callable[..., Any],
) -> None:
    """200 units against K = 4 (refusing beyond it): every unit succeeds either way.

    The adaptive limit (up to 64) is refused a small fraction of what a fixed limit of 64
    is, measured against the same server in the same test, and ends near K.
    """
    config = ServerConfig(max_concurrency=4, latency_ms=10, retry_after_s=0.05)
    refused = {}
    async with TestInferenceServer(config) as server:
        for mode in ("fixed", "adaptive"):
            server.reset()
            running = await started(server, concurrency=mode, max_in_flight=64, circuit_failures=0)
            outcomes = await asyncio.gather(*(running.unit(n) for n in range(200)))
            assert all(o.predictions is not None for o in outcomes), mode
            refused[mode] = server.stats().rejected
            if mode == "adaptive":
                assert running.guard.limiter.limit <= 8
    assert refused["adaptive"] * 4 < refused["fixed"], refused


async def test_an_outage_opens_the_circuit_and_becomes_a_wait_not_errors(
    started: Callable[..., Any],
) -> None:
    """While the model is down, units wait on the open circuit without using their budget.

    Each unit may make 2 attempts within 0.5 s; the outage lasts longer than that and
    longer than several probe intervals, yet every unit succeeds once the server is back.
    The server saw at most the requests sent before the circuit opened, plus one probe per
    interval; fetching is on hold while the circuit is open.
    """
    probe_s = 0.1
    async with TestInferenceServer() as server:
        running = await started(
            server,
            concurrency="adaptive",
            max_attempts=2,
            max_elapsed_s=0.5,
            circuit_failures=3,
            circuit_probe_interval_s=probe_s,
        )
        server.configure(outage=True)
        down_at = time.monotonic()
        units = [running.unit(n) for n in range(20)]
        await until(lambda: running.guard.circuit is Circuit.OPEN, "the circuit to open")
        assert running.dispatcher.fetch_on_hold
        assert DEFAULT_TARGET in running.dispatcher.open_circuits(time.monotonic())
        await until(lambda: server.stats().answers.get("down", 0) >= 13, "several probes")
        await asyncio.sleep(0.7)  # longer than any unit's time budget
        server.configure(outage=False)
        outage_s = time.monotonic() - down_at
        calls = server.stats().answers["down"]
        outcomes = await asyncio.gather(*units)
    assert all(o.predictions is not None for o in outcomes)
    # While closed: the initial limit (8), plus one more request per failure before the
    # third opened the circuit; then one probe per interval.
    assert calls <= 8 + 2 + 1 + outage_s / probe_s
    assert running.guard.circuit is Circuit.CLOSED
    assert not running.dispatcher.fetch_on_hold
    opened = running.dispatcher._metrics.registry.get_sample_value(
        "batch_runner_circuit_opened_total", {"endpoint": DEFAULT_TARGET}
    )
    assert opened == 1


async def test_a_cancelled_probe_lets_another_unit_probe(started: Callable[..., Any]) -> None:
    """A probe whose unit is cancelled (its partition revoked) does not leave the circuit stuck.

    The probe hangs on the server; once its unit is cancelled, the next unit probes, the
    server answers, and the circuit closes.
    """
    async with TestInferenceServer() as server:
        running = await started(server, circuit_failures=1, circuit_probe_interval_s=0.05)
        server.configure(outage=True)
        first = running.unit(1)
        await until(lambda: running.guard.circuit is Circuit.OPEN, "the circuit to open")
        server.configure(outage=False, script=["hang"])
        await until(lambda: server.stats().answers.get("hang", 0) == 1, "the probe to hang")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        outcome = await asyncio.wait_for(running.unit(2), 20)
    assert outcome.predictions == [b"2"]
    assert running.guard.circuit is Circuit.CLOSED
    assert running.guard.limiter.in_use == 0


async def test_a_model_that_refuses_everything_is_asked_once_per_interval(
    started: Callable[..., Any],
) -> None:
    """Half of the last 20 requests refused (503) opens the circuit, as no answer does.

    The circuit waits for the server's ``Retry-After`` before its probe.
    """
    config = ServerConfig(script=(503,) * 25, retry_after_s=0.15)
    async with TestInferenceServer(config) as server:
        running = await started(
            server, concurrency="adaptive", backoff_max_s=0.01, circuit_probe_interval_s=0.1
        )
        outcomes = await asyncio.gather(*(running.unit(n) for n in range(30)))
        stats = server.stats()
    assert all(o.predictions is not None for o in outcomes)
    assert stats.answers["503"] == 25
    opened = running.dispatcher._metrics.registry.get_sample_value(
        "batch_runner_circuit_opened_total", {"endpoint": DEFAULT_TARGET}
    )
    assert opened is not None
    assert opened >= 1


async def test_the_adaptive_limit_keeps_places_round_robin_across_partitions() -> None:
    """The guard hands its key to the keyed limiter: fairness holds under a moving limit.

    Partition a queues six units before partition b queues one; when the adaptive limit
    drops (a 429) and places come free again, b's unit is served second, not seventh.
    """
    guard = adaptive_guard(2)
    held = [await guard.enter("a"), await guard.enter("a")]
    served: list[str] = []

    async def unit(name: str, key: str) -> None:
        ticket = await guard.enter(key)
        served.append(name)
        await asyncio.sleep(0)
        guard.leave(ticket, 200)

    tasks = [asyncio.create_task(unit(f"a{n}", "a")) for n in range(6)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(unit("b0", "b")))
    await asyncio.sleep(0)
    assert guard.limiter.waiting == 7
    guard.leave(held[0], 429)  # the limit drops to 1 (2 x 0.9)
    assert guard.limiter.limit == 1
    guard.leave(held[1], 200)
    await asyncio.gather(*tasks)
    assert served[:2] == ["a0", "b0"]
    assert sorted(served) == ["a0", "a1", "a2", "a3", "a4", "a5", "b0"]
    assert guard.limiter.in_use == 0


async def test_a_large_change_of_the_limit_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A limit halved is logged with where it was; further swings within 10 s are not.

    The gauge follows every change.
    """
    metrics = Metrics()
    guard = adaptive_guard(8, metrics=metrics)
    caplog.set_level(logging.INFO, logger="consumer.guard")
    for _ in range(10):  # each refusal of a request sent after the last cut cuts by 10%
        guard.leave(await guard.enter(), 429)
    lines = [r for r in caplog.records if r.getMessage() == "concurrency limit changed"]
    assert [(r.__dict__["limit"], r.__dict__["was"]) for r in lines] == [(4, 8)]
    assert guard.limiter.limit == 2
    gauge = metrics.registry.get_sample_value(
        "batch_runner_in_flight_limit", {"endpoint": "default"}
    )
    assert gauge == 2


async def test_a_held_place_is_used_at_once_only_while_nothing_makes_the_unit_wait() -> None:
    """``enter_held``: the ticket of the held place on a closed circuit, else None.

    On a closed circuit the place is taken and its wait counted from when the unit got
    it; with the circuit open the place stays held and ``enter`` decides (it waits).
    """
    guard = EndpointGuard(
        "default",
        max_in_flight=2,
        adaptive=None,
        breaker=BreakerConfig(failures=1),
        metrics=Metrics(),
    )
    place = Place(guard.limiter, time.monotonic() - 0.5)
    guard.limiter.submit(lambda: True)  # the place the limiter gave the unit
    place.held = True
    ticket = guard.enter_held(place)
    assert ticket is not None
    assert not place.held
    assert not ticket.probe
    assert ticket.queue_wait_s >= 0.5
    assert guard.used
    guard.leave(ticket, None)  # no answer: the circuit opens
    assert guard.circuit is Circuit.OPEN
    guard.limiter.submit(lambda: True)
    place = Place(guard.limiter, time.monotonic())
    place.held = True
    assert guard.enter_held(place) is None
    assert place.held
    place.release()
    assert guard.limiter.in_use == 0


async def test_a_held_place_on_the_unit_clock_of_a_fixed_limit_is_the_shared_ticket() -> None:
    """With the unit's clock, a fixed limit's held place gives ``COUNTED``; an adaptive one its own.

    The waits go on the clock in both cases (one attempt, the wait since the place was
    given); only an adaptive limit reads a ticket's times, so a fixed limit makes none
    per unit. ``COUNTED`` is no probe, and an answer given back with it changes nothing
    in it.
    """
    guard = EndpointGuard(
        "default", max_in_flight=2, adaptive=None, breaker=BreakerConfig(), metrics=Metrics()
    )
    guard.limiter.submit(lambda: True)
    place = Place(guard.limiter, time.monotonic() - 0.5)
    place.held = True
    clock = UnitClock(place.since)
    ticket = guard.enter_held(place, clock)
    assert ticket is COUNTED
    assert not ticket.probe
    assert (clock.attempts, clock.charged) == (1, 1)
    assert clock.queued >= 0.5
    guard.leave(ticket, 503)
    assert guard.limiter.in_use == 0
    assert Ticket(probe=False, sent_at=0.0, endpoint_wait_s=0.0, queue_wait_s=0.0) == COUNTED
    adaptive = adaptive_guard(2, max_limit=8)
    adaptive.limiter.submit(lambda: True)
    place = Place(adaptive.limiter, time.monotonic())
    place.held = True
    clock = UnitClock(place.since)
    ticket = adaptive.enter_held(place, clock)
    assert ticket is not None
    assert ticket is not COUNTED
    assert ticket.lag_mark is not None
    assert clock.attempts == 1
    adaptive.leave(ticket, 200)


async def test_a_held_place_used_at_once_carries_the_loop_lag_mark_of_an_adaptive_limit() -> None:
    """The fast path keeps what ``enter`` gives an adaptive limit: the loop-lag mark.

    Without it the answer's round trip would not be discounted for the replica's own
    event-loop lag (:mod:`consumer.looplag`) on most requests.
    """
    guard = adaptive_guard(2, max_limit=8)
    guard.limiter.submit(lambda: True)
    place = Place(guard.limiter, time.monotonic())
    place.held = True
    ticket = guard.enter_held(place)
    assert ticket is not None
    assert ticket.lag_mark is not None
    guard.leave(ticket, 200)


async def test_each_cut_of_the_adaptive_limit_is_counted_by_cause_and_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``batch_runner_in_flight_limit_cuts_total{cause}`` counts cuts; a debug line each.

    Two refusals (each of a request sent after the last cut) and a timeout: three cuts,
    two for overload and one for the timeout, each line with the limit before and after.
    """
    metrics = Metrics()
    guard = adaptive_guard(20, metrics=metrics)
    caplog.set_level(logging.DEBUG, logger="consumer.guard")
    guard.leave(await guard.enter(), 429)
    guard.leave(await guard.enter(), 503)
    guard.leave(await guard.enter(), None, timed_out=True)

    def cuts(cause: str) -> float | None:
        labels = {"endpoint": "default", "cause": cause}
        return metrics.registry.get_sample_value("batch_runner_in_flight_limit_cuts_total", labels)

    assert (cuts("overload"), cuts("timeout")) == (2, 1)
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "concurrency limit cut"]
    assert [(x["cause"], x["was"], x["limit"]) for x in lines] == [
        ("overload", 20, 18),
        ("overload", 18, 16),
        ("timeout", 16, 14),
    ]
