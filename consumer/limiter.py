"""A concurrency bound whose limit can change while it is in use.

Like :class:`asyncio.BoundedSemaphore`, but :attr:`Limiter.limit` is a live value: an
adaptive controller (or an operator) may lower it while requests are in flight, and the
excess simply drains as they finish; raising it wakes waiters at once.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Self


class Limiter:
    """At most :attr:`limit` holders at once; waiters are served first come, first served."""

    def __init__(self, limit: int) -> None:
        """Create a limiter admitting ``limit`` holders."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self._held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

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
        return len(self._waiters)

    async def acquire(self) -> None:
        """Wait for a place and take it."""
        if self._held < self._limit and not self._waiters:
            self._held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the place was granted just as we were cancelled
            elif waiter in self._waiters:
                # Not there when a release popped it (and skipped it, being cancelled)
                # between the cancel and this handler.
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a place back."""
        if self._held <= 0:
            raise RuntimeError("release() without acquire()")
        self._held -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._held < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._held += 1
                waiter.set_result(None)

    async def __aenter__(self) -> Self:
        """Acquire a place."""
        await self.acquire()
        return self

    async def __aexit__(self, *_: object) -> None:
        """Release the place."""
        self.release()
