"""The way out of a replica: finish started work within a deadline, still serving the group.

:class:`Drain` runs once, when the replica is asked to stop (SIGTERM), in four steps:

1. Hand back the chunks nothing was published for yet
   (:meth:`~consumer.chunks.ChunkBook.hand_back_untouched`): the group redoes them, and
   nothing is repeated.
2. Keep polling with every partition paused: rebalances finish (a member that stops
   polling holds a rebalance up for everyone) and commit answers come. Wait for the rest
   until the deadline, less a reserve for the steps below.
3. Abandon what is left (it is not committed: the group redoes it).
4. Flush the results and commit what is done, retrying through a rebalance, still polling.

Leaving the group (the consumer's close) comes after, in the time that is left.

Every wait on the consumer thread is bounded by the time left: should the thread stop
answering (a librdkafka call that does not return), the drain stops polling, finishes
the steps that need no poll, and the replica exits; what was not committed is redone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from consumer.chunks import ChunkBook
    from consumer.committer import Committer
    from consumer.publisher import Publisher
    from consumer.source import Source

log = logging.getLogger(__name__)
T = TypeVar("T")

# Of the drain timeout, what is kept for flushing results, the last commit and leaving.
RESERVE_FRACTION = 0.2
RESERVE_MAX_S = 5.0
POLL_S = 0.1  # how long each poll of a draining replica waits
ANSWER_GRACE_S = 1.0  # past the deadline, how long a poll's answer is still waited for


class Drain:
    """One replica's drain: its deadline, and the steps in the module docstring."""

    def __init__(  # noqa: PLR0913 - the rooms a drain touches, each named
        self,
        *,
        source: Source,
        book: ChunkBook,
        publisher: Publisher,
        committer: Committer,
        timeout_s: float,
        failed: Callable[[], bool],
    ) -> None:
        """Prepare a drain of ``timeout_s``; ``failed`` says a delivery failed (stop now)."""
        self._source = source
        self._book = book
        self._publisher = publisher
        self._committer = committer
        self._timeout_s = timeout_s
        self._failed = failed
        self._deadline: float | None = None
        self._stuck = False  # the consumer thread stopped answering polls

    @property
    def started(self) -> bool:
        """Whether the drain has begun."""
        return self._deadline is not None

    def time_left(self, floor_s: float = 0.0) -> float:
        """Seconds left before the deadline (the whole timeout before it starts)."""
        if self._deadline is None:
            return max(floor_s, self._timeout_s)
        return max(floor_s, self._deadline - asyncio.get_running_loop().time())

    async def run(self, committer: asyncio.Task[None], *, forced: Callable[[], bool]) -> None:
        """Drain (see the module docstring); ``committer`` is the periodic commit task."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._timeout_s
        book = self._book
        handed_back = book.hand_back_untouched(book.partitions())
        extra = {"buffered_items": book.buffered_items, "handed_back_items": handed_back}
        log.info("draining", extra=extra)
        reserve = min(RESERVE_MAX_S, self._timeout_s * RESERVE_FRACTION)
        while book.buffered_items and not forced() and not self._failed():
            if loop.time() >= self._deadline - reserve:
                log.warning(
                    "drain timeout: unfinished work will be redone by the group",
                    extra={"buffered_items": book.buffered_items},
                )
                break
            if not await self.poll():
                break
        book.cancel_all()
        if forced():
            return
        await self.polling(self._publisher.flush(max(0.0, self.time_left() - 1.0)))
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        await self._final_commit()

    async def _final_commit(self) -> None:
        """Commit what is done, retrying through a rebalance until the deadline.

        A rebalance under way (others leaving too) refuses a commit of the old generation;
        the polling between attempts lets the member rejoin, and the next one succeeds.
        """
        while not self._failed() and not self._stuck:
            left = self.time_left(floor_s=1.0)
            try:  # bounded: an exactly-once round may be renewing its producer meanwhile
                result = await self.polling(
                    asyncio.wait_for(self._committer.commit_now(left), left + 1.0)
                )
            except TimeoutError:
                log.warning("no last commit within the drain timeout")
                return
            if result.error is None or not result.retriable or self.time_left() <= 0:
                return
            if not await self.poll():
                return

    async def poll(self) -> bool:
        """Poll once, paused; return whether the consumer thread answered in time.

        In time: within the time left plus ``ANSWER_GRACE_S`` (a rebalance callback may
        use the time left). A thread that does not answer is not asked again: every later
        call would queue behind the stuck one.
        """
        if self._stuck:
            return False
        bound = self.time_left() + ANSWER_GRACE_S
        try:
            await asyncio.wait_for(self._source.poll_paused(POLL_S), bound)
        except TimeoutError:
            self._stuck = True
            log.warning(
                "the consumer did not answer a poll during the drain: not polling any more",
                extra={"waited_s": round(bound, 3)},
            )
            return False
        return True

    async def polling(self, work: Awaitable[T]) -> T:
        """Await ``work`` while polling (paused), so commits are answered and rebalances served.

        ``work`` must end on its own (it is bounded): once polls stop being answered it is
        awaited without them.
        """
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        while not task.done():
            if not await self.poll():
                return await task
        return task.result()
