"""A concurrency bound whose limit can change while it is in use, shared fairly.

Like :class:`asyncio.BoundedSemaphore`, but :attr:`Limiter.limit` is a live value: an
adaptive controller (or an operator) may lower it while requests are in flight, and the
excess simply drains as they finish; raising it wakes waiters at once.

Waiters may name a *key* (the pipeline uses the batch a work unit came from, with its
partition) and a *weight* (the batch's priority). Free places are shared across the
keys that have waiters in proportion to their weights, first come, first served within
a key: with equal weights that is round-robin, so a small batch gets its first request
out at once instead of waiting behind every unit already queued for a big one; a key of
weight 3 gets three places for every one of a key of weight 1, and no key with waiters
is ever skipped for good.

The share is kept by stride scheduling (Waldspurger and Weihl, 1995): each key has a
*pass*, the virtual time of its next turn; the key with the lowest pass is served, and
its pass moves on by ``1 / weight``. A key that starts waiting joins one stride after
the last key served (so it neither jumps the queue nor waits behind others' backlog),
and a key that has no waiters is forgotten.

A waiter is either a task blocked in :meth:`Limiter.acquire`, or a *start*
(:meth:`Limiter.submit`): a callback that is given the place when its turn comes and
starts the work that holds it. The pipeline submits each work unit so, so that a unit
becomes a task only once it may send, instead of thousands of tasks each waiting on a
future of its own (a task per unit costs its creation, a wake-up and garbage collection).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    # A submitted start: called with the place taken; False declines it (given back).
    Start = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Lane:
    """Where a work unit queues: its ``key`` and ``weight`` here, and its ``partition``.

    The pipeline's key is the unit's batch (with its partition) and its weight the
    batch's priority; ``partition`` is what stall checks read.
    """

    partition: Hashable = None
    key: Hashable = None
    weight: float = 1.0


class Limiter:
    """At most :attr:`limit` holders at once; places shared across keys by their weights."""

    def __init__(self, limit: int) -> None:
        """Create a limiter admitting ``limit`` holders."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self._held = 0
        self._waiting = 0
        # One queue of waiters per key; each key's pass, weight and current turn number;
        # the turns as a heap of (pass, turn, key), stale entries skipped when popped.
        self._queues: dict[Hashable, collections.deque[asyncio.Future[None] | Start]] = {}
        self._passes: dict[Hashable, tuple[float, int]] = {}
        self._weights: dict[Hashable, float] = {}
        self._turns: list[tuple[float, int, Hashable]] = []
        self._numbers = itertools.count()
        self._clock = 0.0  # the pass of the last key served

    @property
    def limit(self) -> int:
        """The current bound."""
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        if value < 1:
            raise ValueError("limit must be >= 1")
        self._limit = value
        self._wake()

    @property
    def in_use(self) -> int:
        """How many holders there are right now."""
        return self._held

    @property
    def waiting(self) -> int:
        """How many tasks wait for a place."""
        return self._waiting

    async def acquire(self, key: Hashable = None, weight: float = 1.0) -> None:
        """Wait for a place and take it; ``key`` groups waiters, served by ``weight``."""
        if weight <= 0:
            raise ValueError("weight must be > 0")
        if self._held < self._limit and not self._waiting:
            self._held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._enqueue(key, weight, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the place was granted just as we were cancelled
            elif self._forget(key, waiter):
                self._waiting -= 1
            raise

    def submit(self, start: Start, key: Hashable = None, weight: float = 1.0) -> None:
        """Call ``start`` holding a place: now if one is free, else when its turn comes.

        ``start`` runs synchronously (inside a later :meth:`release`: it must not block,
        nor release or acquire here itself); it returns False to decline the place (its
        work was abandoned meanwhile), which then goes to the next waiter. Otherwise
        the place is held until released. Turns are shared as for :meth:`acquire`.
        """
        if weight <= 0:
            raise ValueError("weight must be > 0")
        if self._held < self._limit and not self._waiting:
            self._held += 1
            if not start():
                self._held -= 1
            return
        queue = self._queues.get(key)  # as _enqueue, inline: once per work unit
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self._schedule(key, self._clock + 1.0 / weight)
        self._weights[key] = weight
        queue.append(start)
        self._waiting += 1

    def withdraw(self, which: Callable[[Start], bool]) -> list[Start]:
        """Take the queued starts that ``which`` selects out of the queues; return them.

        They never run (a cancelled batch's units, answered at once instead); blocked
        acquires stay queued.
        """
        taken: list[Start] = []
        for key, queue in list(self._queues.items()):
            keep: collections.deque[asyncio.Future[None] | Start] = collections.deque()
            for waiter in queue:
                if not isinstance(waiter, asyncio.Future) and which(waiter):
                    taken.append(waiter)
                else:
                    keep.append(waiter)
            if len(keep) == len(queue):
                continue
            self._waiting -= len(queue) - len(keep)
            if keep:
                self._queues[key] = keep
            else:
                self._drop(key)  # its turn in the heap is skipped from now on
        return taken

    def _enqueue(self, key: Hashable, weight: float, waiter: asyncio.Future[None] | Start) -> None:
        self._weights[key] = weight
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self._schedule(key, self._clock + 1.0 / weight)
        queue.append(waiter)
        self._waiting += 1

    def release(self) -> None:
        """Give a place back."""
        if self._held <= 0:
            raise RuntimeError("release() without acquire()")
        self._held -= 1
        self._wake()

    def _forget(self, key: Hashable, waiter: asyncio.Future[None]) -> bool:
        """Remove a cancelled waiter still queued; return whether it was there.

        It is not there when a release already popped it (and skipped it, being
        cancelled) between the cancel and its handler.
        """
        queue = self._queues.get(key)
        if queue is None or waiter not in queue:
            return False
        queue.remove(waiter)
        if not queue:
            self._drop(key)
        return True

    def _schedule(self, key: Hashable, when: float) -> None:
        turn = next(self._numbers)
        self._passes[key] = (when, turn)
        heapq.heappush(self._turns, (when, turn, key))

    def _drop(self, key: Hashable) -> None:
        del self._queues[key]
        del self._passes[key]
        del self._weights[key]

    def _wake(self) -> None:
        turns, passes = self._turns, self._passes
        while turns and self._held < self._limit:
            when, turn, key = turns[0]
            if passes.get(key) != (when, turn):
                heapq.heappop(turns)
                continue  # the key was dropped (or rescheduled) since this entry
            queue = self._queues[key]
            waiter = queue.popleft()
            self._waiting -= 1
            self._clock = when
            if queue:  # the key's next turn (as _schedule, inline: once per place)
                when += 1.0 / self._weights[key]
                turn = next(self._numbers)
                passes[key] = (when, turn)
                heapq.heapreplace(turns, (when, turn, key))  # this turn out, the next in
            else:
                heapq.heappop(turns)
                self._drop(key)
            if not isinstance(waiter, asyncio.Future):
                self._held += 1
                if not waiter():
                    self._held -= 1
            elif not waiter.done():
                self._held += 1
                waiter.set_result(None)

    def hold(self, key: Hashable = None, weight: float = 1.0) -> _Hold:
        """Return an ``async with`` block that holds a place for ``key`` of ``weight``."""
        return _Hold(self, key, weight)

    async def __aenter__(self) -> Self:
        """Acquire a place (no key)."""
        await self.acquire()
        return self

    async def __aexit__(self, *_: object) -> None:
        """Release the place."""
        self.release()


class Place:
    """A place taken for a submitted unit before its task ran (see :meth:`Limiter.submit`).

    Whoever uses it first takes it (:meth:`take`); whatever ends the unit gives it back
    if nobody did (:meth:`release`), so a unit cancelled before it ran leaks no place.
    """

    __slots__ = ("held", "limiter", "since")

    def __init__(self, limiter: Limiter, since: float) -> None:
        """Stand for a place of ``limiter`` that the unit started waiting for at ``since``."""
        self.limiter = limiter
        self.since = since
        self.held = False

    def take(self) -> bool:
        """Return whether the place was still held (it now belongs to the caller)."""
        held, self.held = self.held, False
        return held

    def release(self) -> None:
        """Give the place back unless it was taken or given back already."""
        if self.held:
            self.held = False
            self.limiter.release()


class _Hold:
    """``async with limiter.hold(key)``: a place for ``key`` while the block runs."""

    __slots__ = ("_key", "_limiter", "_weight")

    def __init__(self, limiter: Limiter, key: Hashable, weight: float) -> None:
        self._limiter = limiter
        self._key = key
        self._weight = weight

    async def __aenter__(self) -> None:
        await self._limiter.acquire(self._key, self._weight)

    async def __aexit__(self, *_: object) -> None:
        self._limiter.release()
