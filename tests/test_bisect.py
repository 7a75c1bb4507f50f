"""Poison isolation: a refused unit is bisected until only the items refused alone fail.

The algorithm is exercised against a model written as a function (which items it
refuses, how), then against the real test inference server through a real dispatcher.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.bisect import isolate, worth_bisecting
from consumer.dispatcher import Dispatcher
from consumer.endpoints import DEFAULT_TARGET
from consumer.outcome import Outcome
from consumer.splitter import WorkUnit
from schemas.error_kinds import ResultErrorKind
from tests.helpers import examples
from tests.test_dispatcher import settings_for
from tools.testservers.inference import ServerConfig, TestInferenceServer

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any

    from consumer.bisect import Isolation

BAD = b'"bad"'


def refusing(
    status: int = 422, kind: ResultErrorKind = ResultErrorKind.HTTP_STATUS
) -> tuple[Callable[[Sequence[bytes]], Coroutine[Any, Any, Outcome]], list[int]]:
    """Return a model refusing any request holding a ``BAD`` item, and its request sizes."""
    sizes: list[int] = []

    async def send(items: Sequence[bytes]) -> Outcome:
        sizes.append(len(items))
        if BAD in items:
            return Outcome(None, 1, 1.0, kind, f"HTTP {status}: item refused", status, final=True)
        return Outcome(list(items), 1, 1.0)

    return send, sizes


def unit_of(n: int, bad: set[int], offset: int = 0) -> WorkUnit:
    """Return a unit of ``n`` items, those at ``bad`` positions being ``BAD``."""
    return WorkUnit(offset, [BAD if i in bad else orjson.dumps(i) for i in range(n)])


def run(unit: WorkUnit, max_calls: int = 1000, status: int = 422) -> tuple[list[int], Isolation]:
    """Refuse ``unit`` whole, bisect it; return the sizes sent and the isolation."""
    send, sizes = refusing(status)
    first = asyncio.run(send(unit.items))
    sizes.clear()
    return sizes, asyncio.run(isolate(unit, first, send, max_calls))


@settings(max_examples=examples(200), deadline=None)
@given(
    n=st.integers(2, 120),
    data=st.data(),
    offset=st.integers(0, 1000),
)
def test_only_the_items_refused_alone_get_an_error(
    n: int, data: st.DataObject, offset: int
) -> None:
    """Parts cover the unit once in order; good items get predictions, bad ones errors alone."""
    bad = data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=max(1, n // 8)))
    unit = unit_of(n, bad, offset)
    send, sizes = refusing()
    first = asyncio.run(send(unit.items))
    sizes.clear()
    isolation = asyncio.run(isolate(unit, first, send, max_calls=10_000))
    position = offset
    for part, outcome in isolation.parts:
        assert part.offset == position
        position += len(part.items)
        if outcome.predictions is None:
            assert len(part.items) == 1
            assert part.items == [BAD]
            assert outcome.error_message == "HTTP 422: item refused"
        else:
            assert outcome.predictions == list(part.items)
            assert BAD not in part.items
    assert position == offset + n
    assert isolation.isolated == len(bad)
    assert isolation.calls == len(sizes) == isolation.attempts
    assert isolation.calls <= 2 * math.ceil(math.log2(n)) * len(bad)


def test_one_bad_item_in_fifty_costs_about_log2_calls() -> None:
    """One bad item among 50: at most 2·ceil(log2 50) = 12 calls, halves of halves."""
    for position in range(50):
        sizes, isolation = run(unit_of(50, {position}))
        assert len(sizes) <= 12
        assert sizes[0] == 25
        assert isolation.isolated == 1


def test_the_cap_stops_bisection_and_the_rest_keeps_the_refusal() -> None:
    """A unit refused item by item stops at max_calls; the unsettled parts say why."""
    send, sizes = refusing()
    unit = unit_of(16, set(range(16)))
    first = asyncio.run(send(unit.items))
    sizes.clear()
    isolation = asyncio.run(isolate(unit, first, send, max_calls=5))
    assert len(sizes) == 5
    assert isolation.stopped
    assert sum(len(part.items) for part, _ in isolation.parts) == 16
    stopped = [o for _, o in isolation.parts if "bisection stopped" in (o.error_message or "")]
    assert stopped
    assert all(o.error_kind == ResultErrorKind.HTTP_STATUS for _, o in isolation.parts)


def test_which_outcomes_are_worth_bisecting() -> None:
    """Final refusals of the input are; retried-out failures, auth errors, one item are not."""

    def refusal(kind: ResultErrorKind, status: int | None, *, final: bool = True) -> Outcome:
        return Outcome(None, 1, 1.0, kind, "no", status, final=final)

    http = ResultErrorKind.HTTP_STATUS
    for status in (400, 413, 422, 500):
        assert worth_bisecting(refusal(http, status), 2)
    assert not worth_bisecting(refusal(http, 422), 1)
    for status in (401, 403, 404, 501):
        assert not worth_bisecting(refusal(http, status), 50)
    assert not worth_bisecting(refusal(http, 500, final=False), 50)  # gave up, not judged
    assert not worth_bisecting(refusal(ResultErrorKind.TIMEOUT, None, final=False), 50)
    assert worth_bisecting(refusal(ResultErrorKind.WRONG_COUNT, 200), 50)
    assert worth_bisecting(refusal(ResultErrorKind.BAD_ITEM, None), 50)
    assert not worth_bisecting(Outcome([b"1", b"2"], 1, 1.0), 2)


def test_a_unit_not_worth_it_comes_back_whole_without_a_call() -> None:
    """A timeout after the budget: no call, the unit keeps its outcome."""
    send, sizes = refusing()
    unit = unit_of(8, {3})
    timeout = Outcome(None, 60, 1.0, ResultErrorKind.TIMEOUT, "no answer within 30s")
    isolation = asyncio.run(isolate(unit, timeout, send, max_calls=32))
    assert sizes == []
    assert isolation.parts == [(unit, timeout)]


async def isolate_through_server(status: int, poisoned: set[int]) -> Isolation:
    """Send 50 items through a real dispatcher to the test server refusing ``poisoned``."""
    async with TestInferenceServer(ServerConfig(poison_status=status)) as server:
        settings_ = settings_for(server.endpoint("v1"))
        dispatcher = Dispatcher(settings_)
        await dispatcher.start()
        endpoint = settings_.endpoints[DEFAULT_TARGET]
        items = [
            orjson.dumps({"i": i, "fail": "permanent"} if i in poisoned else {"i": i})
            for i in range(50)
        ]

        async def send(part: Sequence[bytes]) -> Outcome:
            return await dispatcher.run(endpoint, part)

        try:
            first = await send(items)
            assert first.final
            return await isolate(WorkUnit(0, items), first, send, max_calls=64)
        finally:
            await dispatcher.close()


async def test_the_dispatcher_and_the_test_server_isolate_refused_items() -> None:
    """A real 422 (and a repeated 500) for a unit of 50 with 2 poison items: 48 predictions."""
    for status in (422, 500):
        isolation = await isolate_through_server(status, {7, 31})
        refused = [p.offset for p, o in isolation.parts if o.predictions is None]
        assert refused == [7, 31]
        for part, outcome in isolation.parts:
            if outcome.predictions is None:
                assert outcome.http_status == status
                assert f"test server answered {status}" in (outcome.error_message or "")
            else:
                assert outcome.predictions == [orjson.dumps(orjson.loads(i)) for i in part.items]
