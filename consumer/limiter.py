"""A concurrency bound whose limit can change while it is in use, shared fairly.

Like :class:`asyncio.BoundedSemaphore`, but :attr:`Limiter.limit` is a live value: an
adaptive controller (or an operator) may lower it while requests are in flight, and the
excess simply drains as they finish; raising it wakes waiters at once.

Waiters may name a *key* (the pipeline uses the partition a work unit came from). Free
places go round-robin across the keys that have waiters, first come, first served within
a key: a partition assigned to a busy replica gets its first request out at once, instead
of waiting behind every unit already queued for the partitions it had before.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Hashable


class Limiter:
    """At most :attr:`limit` holders at once; places go round-robin across waiters' keys."""

    def __init__(self, limit: int) -> None:
        """Create a limiter admitting ``limit`` holders."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self._held = 0
        self._waiting = 0
        # One queue of waiters per key, and the keys with waiters in the order they are
        # served next (a served key goes to the back of the line).
        self._queues: dict[Hashable, collections.deque[asyncio.Future[None]]] = {}
        self._turns: collections.deque[Hashable] = collections.deque()

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

    async def acquire(self, key: Hashable = None) -> None:
        """Wait for a place and take it; ``key`` groups waiters for round-robin service."""
        if self._held < self._limit and not self._waiting:
            self._held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self._turns.append(key)
        queue.append(waiter)
        self._waiting += 1
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the place was granted just as we were cancelled
            elif self._forget(key, waiter):
                self._waiting -= 1
            raise

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
            del self._queues[key]
            self._turns.remove(key)
        return True

    def _wake(self) -> None:
        while self._turns and self._held < self._limit:
            key = self._turns.popleft()
            queue = self._queues[key]
            waiter = queue.popleft()
            self._waiting -= 1
            if queue:
                self._turns.append(key)
            else:
                del self._queues[key]
            if not waiter.done():
                self._held += 1
                waiter.set_result(None)

    def hold(self, key: Hashable = None) -> _Hold:
        """Return an ``async with`` block that holds a place for ``key``."""
        return _Hold(self, key)

    async def __aenter__(self) -> Self:
        """Acquire a place (no key)."""
        await self.acquire()
        return self

    async def __aexit__(self, *_: object) -> None:
        """Release the place."""
        self.release()


class _Hold:
    """``async with limiter.hold(key)``: a place for ``key`` while the block runs."""

    __slots__ = ("_key", "_limiter")

    def __init__(self, limiter: Limiter, key: Hashable) -> None:
        self._limiter = limiter
        self._key = key

    async def __aenter__(self) -> None:
        await self._limiter.acquire(self._key)

    async def __aexit__(self, *_: object) -> None:
        self._limiter.release()
