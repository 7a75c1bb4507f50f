"""The limiter: a live bound, places round-robin across keys, and cancellation that never leaks."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.limiter import Limiter, Place
from tests.helpers import examples

if TYPE_CHECKING:
    from collections.abc import Callable


async def test_places_go_round_robin_across_keys_and_in_order_within_one() -> None:
    """Waiters of three keys, queued key by key, are served a, b, c, a, b, c, ..."""
    limiter = Limiter(1)
    await limiter.acquire()
    served: list[str] = []

    async def wait(name: str, key: str) -> None:
        await limiter.acquire(key)
        served.append(name)
        limiter.release()

    tasks = [
        asyncio.create_task(wait(f"{key}{n}", key)) for key in ("a", "b", "c") for n in range(3)
    ]
    await asyncio.sleep(0)
    assert limiter.waiting == 9
    limiter.release()
    await asyncio.gather(*tasks)
    assert served == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]
    assert (limiter.in_use, limiter.waiting) == (0, 0)


@settings(max_examples=examples(300), deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=4),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["acquire", "cancel", "release", "cancel+release", "limit"]),
            st.integers(0, 5),
        ),
        max_size=40,
    ),
)
def test_counts_stay_true_through_any_mix_of_waits_cancels_releases_and_limits(
    limit: int,
    steps: list[tuple[str, int]],
) -> None:
    """Holders never exceed the limit when taken; no place leaks; every waiter is counted.

    Any sequence of keyed acquires, cancellations (queued, just granted, or popped by a
    release before their handler ran), releases and limit changes leaves ``in_use`` equal
    to the tasks holding a place and ``waiting`` equal to those still queued; cancelling
    the rest and releasing the places held leaves the limiter empty.
    """

    async def scenario() -> None:
        limiter = Limiter(limit)
        tasks: list[asyncio.Task[None]] = []
        granted: list[asyncio.Task[None]] = []
        released = 0
        for action, value in steps:
            granted = [t for t in tasks if t.done() and not t.cancelled()]
            if action == "acquire":
                tasks.append(asyncio.create_task(limiter.acquire(value % 3)))
            elif action in {"cancel", "cancel+release"} and tasks:
                tasks[value % len(tasks)].cancel()
            if action in {"release", "cancel+release"} and len(granted) > released:
                released += 1  # in the same step as a cancel: before its handler runs
                limiter.release()
            if action == "limit":
                limiter.limit = value % 4 + 1
            for _ in range(3):
                await asyncio.sleep(0)
            granted = [t for t in tasks if t.done() and not t.cancelled()]
            assert limiter.in_use == len(granted) - released
            assert limiter.waiting == sum(1 for t in tasks if not t.done())
        for task in tasks:
            task.cancel()  # the queued ones; a granted task is done, so unaffected
        await asyncio.gather(*tasks, return_exceptions=True)
        granted = [t for t in tasks if not t.cancelled()]
        for _ in range(len(granted) - released):
            limiter.release()
        assert (limiter.in_use, limiter.waiting) == (0, 0)

    asyncio.run(scenario())


async def test_places_follow_the_keys_weights_and_no_key_starves() -> None:
    """Keys of weight 3 and 1, both with a backlog: 3:1 places, the light key every fourth.

    A key that starts waiting later is served within two rounds, not after the backlog.
    """
    limiter = Limiter(1)
    await limiter.acquire()
    served: list[str] = []

    async def wait(key: str, weight: float) -> None:
        await limiter.acquire(key, weight)
        served.append(key)
        limiter.release()

    tasks = [asyncio.create_task(wait("heavy", 3)) for _ in range(60)]
    tasks += [asyncio.create_task(wait("light", 1)) for _ in range(60)]
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.sleep(0)
    queued_after = len(served)
    tasks.append(asyncio.create_task(wait("late", 1)))
    await asyncio.gather(*tasks)
    first = [key for key in served if key != "late"][:40]
    assert (first.count("heavy"), first.count("light")) == (30, 10)
    assert served.index("late") - queued_after <= 2 * (3 + 1)  # two rounds of the weights
    two = [key for key in served if key != "late"][:80]
    gaps = [i for i, key in enumerate(two) if key == "light"]
    assert max(b - a for a, b in itertools.pairwise(gaps)) <= 5  # 4, or 5 on a tie


async def test_a_weight_must_be_positive() -> None:
    """A weight of 0 would never be served: refused."""
    limiter = Limiter(1)
    with pytest.raises(ValueError, match="weight"):
        await limiter.acquire("a", 0)


async def test_submitted_starts_share_turns_with_waiters_and_may_decline_their_place() -> None:
    """A start runs at once while a place is free, else at its key's turn, holding a place.

    Starts and blocked acquires of other keys are served round-robin; a start that
    declines (its work was abandoned) passes the place on to the next in turn; a
    :class:`Place` given back twice, or after it was taken, releases nothing more.
    """
    limiter = Limiter(1)
    started: list[str] = []

    def start(name: str, *, accept: bool = True) -> Callable[[], bool]:
        def run() -> bool:
            started.append(name)
            return accept

        return run

    limiter.submit(start("now"), "a")
    assert (started, limiter.in_use) == (["now"], 1)
    limiter.submit(start("a1"), "a")
    limiter.submit(start("a2-declines", accept=False), "a")
    limiter.submit(start("a3"), "a")
    waiter = asyncio.create_task(limiter.acquire("b"))
    await asyncio.sleep(0)
    assert limiter.waiting == 4
    limiter.release()  # "now" is done: a's turn
    assert started[-1] == "a1"
    assert limiter.in_use == 1
    limiter.release()  # a1 is done: b's turn
    await waiter
    assert started[-1] == "a1"
    limiter.release()  # b is done: a2 declines, a3 gets the place
    assert started[-2:] == ["a2-declines", "a3"]
    assert (limiter.in_use, limiter.waiting) == (1, 0)
    place = Place(limiter, 0.0)
    place.held = True  # a3's place, handed to its work
    assert place.take()
    assert not place.take()
    place.release()  # taken: gives nothing back
    assert limiter.in_use == 1
    limiter.release()
    unused = Place(limiter, 0.0)

    def hold() -> bool:
        unused.held = True
        return True

    limiter.submit(hold, "c")
    assert limiter.in_use == 1
    unused.release()
    unused.release()
    assert (limiter.in_use, limiter.waiting) == (0, 0)


async def test_withdrawn_starts_never_run_and_the_others_keep_their_turns() -> None:
    """Withdrawing some queued starts leaves blocked acquires and the other starts in order."""
    limiter = Limiter(1)
    await limiter.acquire()
    started: list[str] = []

    def start(name: str) -> Callable[[], bool]:
        def run() -> bool:
            started.append(name)
            return True

        run.__name__ = name
        return run

    for name, key in (("x1", "x"), ("y1", "y"), ("x2", "x"), ("y2", "y")):
        limiter.submit(start(name), key)
    waiter = asyncio.create_task(limiter.acquire("x"))
    await asyncio.sleep(0)
    taken = limiter.withdraw(lambda s: s.__name__.startswith("x"))
    assert [s.__name__ for s in taken] == ["x1", "x2"]
    assert limiter.waiting == 3  # y1, y2 and the blocked acquire
    for _ in range(3):
        limiter.release()
        await asyncio.sleep(0)
    await waiter
    assert started == ["y1", "y2"]
    assert limiter.withdraw(lambda _: True) == []
    limiter.release()
    assert (limiter.in_use, limiter.waiting) == (0, 0)
