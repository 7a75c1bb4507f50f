"""Backpressure on fetching: pause partitions while the buffer is full or the model is away.

One step of the fetch loop: pause and resume partitions as the chunk book's plan says
(each partition with work gets its share of the buffer), or pause every partition while
the model's circuit is open (nothing fetched could be sent: the lag stays in Kafka, for
replicas whose circuit is closed). Returns how long the next poll may wait.

A pause is not free: librdkafka drops what it prefetched for the partition and fetches it
again after the resume (a fetch, its decompression, and a metadata request that wakes the
fetcher). When the plan would leave no partition fetching, a pause only keeps the next
poll from returning messages, and not polling does that for nothing: the loop waits for
room instead, with librdkafka's prefetched messages kept, and pauses only if no room comes
within the poll timeout (a slow model: polls must go on, to stay in the group).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.chunks import ChunkBook
    from consumer.offsets import PartitionKey
    from consumer.source import Source

log = logging.getLogger(__name__)

# The longest poll while some partitions are paused for room and others are not.
PAUSED_POLL_S = 0.05


async def apply_backpressure(
    source: Source,
    book: ChunkBook,
    *,
    held: bool,
    has_backlog: Callable[[PartitionKey], bool],
    poll_timeout_s: float,
) -> float:
    """Pause or resume partitions (all of them while ``held``); return the poll timeout.

    With every partition paused (or about to be) it waits for room on the loop (woken the
    moment a chunk completes) for up to ``poll_timeout_s`` and returns 0: the replica
    still polls now and then, so that it stays in its group. When the room came before a
    pause was needed, nothing is paused (see the module docstring).
    """
    to_pause: list[PartitionKey]
    to_resume: list[PartitionKey]
    waited = False
    if held:
        to_pause, to_resume = sorted(source.assignment - source.paused), []
    else:
        to_pause, to_resume = book.pause_plan(source.assignment, source.paused, has_backlog)
        if to_pause and not to_resume and source.paused.union(to_pause) >= source.assignment:
            source.holding = frozenset(to_pause)
            try:
                if await _room_within(book, poll_timeout_s):
                    return 0.0
            finally:
                source.holding = frozenset()
            waited = True  # the buffer may have moved meanwhile: plan again
            to_pause, to_resume = book.pause_plan(source.assignment, source.paused, has_backlog)
    if to_pause:
        await source.pause(to_pause)
        extra = {"buffered_items": book.buffered_items, "circuit_open": held}
        log.debug("paused fetching", extra=extra)
    if to_resume:
        await source.resume(to_resume)
        log.debug("resumed fetching", extra={"buffered_items": book.buffered_items})
    if source.assignment and source.paused >= source.assignment:
        if not waited:
            await _room_within(book, poll_timeout_s)
        return 0.0
    if source.paused:  # some wait for room while others fetch: poll briefly, resume soon
        return min(poll_timeout_s, PAUSED_POLL_S)
    return poll_timeout_s


async def _room_within(book: ChunkBook, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for room in the buffer; return whether it came."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(book.room.wait(), timeout_s)
        return True
    return False
