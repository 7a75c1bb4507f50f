"""The chunk book: request messages in flight, the item buffer, and assignment epochs.

No Kafka and no I/O: the pipeline registers each decoded request as a :class:`Chunk`,
completes it when every record it caused is acknowledged, and drops or hands back chunks
when their partition goes. The book keeps the count of buffered items (the backpressure
bound), an event that is set while the buffer has room, and per-partition events that are
set when a partition has nothing in flight (a revoke waits on them).

Every assignment of a partition opens a new epoch. A chunk carries the epoch it was
received in: when its partition was revoked meanwhile (and maybe given back), the chunk
is stale, and completing it changes nothing (the new owner redoes its message).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from consumer.chunk import Chunk
    from consumer.offsets import PartitionKey

# Paused partitions resume once the item buffer is below this share of its cap.
RESUME_FRACTION = 0.75
# Weight of the newest message in the running average of items per message.
_AVERAGE_WEIGHT = 0.1


class ChunkBook:
    """Chunks in flight per partition, the buffered item count, and assignment epochs."""

    def __init__(
        self, max_buffered_items: int, *, newcomers: bool = True, resume: bool = False
    ) -> None:
        """Start empty, holding at most ``max_buffered_items`` before the buffer is full.

        ``newcomers``: see :meth:`pause_plan`; ``resume``: see :meth:`hand_back_untouched`.
        """
        self.max_buffered_items = max_buffered_items
        self.newcomers = newcomers
        self.resume = resume
        self.buffered_items = 0
        self._buffered: dict[PartitionKey, int] = {}  # items per partition
        self.room = asyncio.Event()  # set while the buffer is below the resume threshold
        self.room.set()
        self._chunks: dict[PartitionKey, dict[int, Chunk]] = {}
        self._idle: dict[PartitionKey, asyncio.Event] = {}
        self._epochs: dict[PartitionKey, int] = {}
        self._last_epoch = 0
        self._items_per_message = 0.0  # running average (0: none seen yet)
        self._share = max_buffered_items  # of the buffer, per partition with work

    # --- epochs --------------------------------------------------------------------------

    def assign(self, tps: Iterable[PartitionKey]) -> None:
        """Open a new epoch for each newly assigned partition."""
        for tp in tps:
            self._last_epoch += 1
            self._epochs[tp] = self._last_epoch

    def epoch(self, tp: PartitionKey) -> int | None:
        """Return the partition's current epoch, or ``None`` when it is not assigned here."""
        return self._epochs.get(tp)

    def current(self, tp: PartitionKey, epoch: int) -> bool:
        """Whether work received in ``epoch`` still belongs to the partition's assignment."""
        return self._epochs.get(tp) == epoch

    # --- chunks --------------------------------------------------------------------------

    def of_batch(self, batch_id: str) -> list[Chunk]:
        """Return the chunks in flight of ``batch_id``."""
        return [
            chunk
            for by_offset in self._chunks.values()
            for chunk in by_offset.values()
            if chunk.request.batch_id == batch_id
        ]

    def cancel_batch(self, batch_id: str) -> None:
        """Stop the running units of ``batch_id`` (each then writes cancelled results)."""
        for chunk in self.of_batch(batch_id):
            for task in chunk.tasks:
                task.cancel()

    def register(self, chunk: Chunk) -> None:
        """Take a new chunk into the book (its items count against the buffer)."""
        self._chunks.setdefault(chunk.tp, {})[chunk.offset] = chunk
        self.buffered_items += chunk.size
        self._buffered[chunk.tp] = self._buffered.get(chunk.tp, 0) + chunk.size
        if self.full:
            self.room.clear()
        if self._items_per_message == 0:
            self._items_per_message = float(chunk.size)
        self._items_per_message += (chunk.size - self._items_per_message) * _AVERAGE_WEIGHT

    def complete(self, chunk: Chunk) -> bool:
        """Remove a chunk whose records are all acknowledged; return whether it still counts.

        A chunk that was abandoned, or belongs to an older epoch of its partition, does
        not count: its message is not done here.
        """
        if chunk.abandoned or not self.current(chunk.tp, chunk.epoch):
            return False
        self._forget(chunk)
        return True

    def abandon(self, chunk: Chunk) -> None:
        """Stop working on ``chunk`` and forget it (its message is never marked done)."""
        chunk.cancel()
        self._forget(chunk)

    def hand_back_untouched(self, tps: Iterable[PartitionKey]) -> int:
        """Drop the chunks nothing was published for; return the number of items handed back.

        Without item-level resume every chunk from the first untouched one goes (the group
        redoes all after it); with ``resume`` only untouched ones: the commit metadata says
        what is done after an unfinished message, so touched chunks finish instead.
        """
        handed = 0
        for tp in tps:
            cut = False
            for chunk in self.in_flight(tp):
                cut = (cut and not self.resume) or not chunk.touched
                if cut:
                    handed += chunk.size
                    self.abandon(chunk)
        return handed

    def cancel_all(self) -> None:
        """Abandon every chunk (they stay in the book, uncounted, until dropped)."""
        for by_offset in self._chunks.values():
            for chunk in by_offset.values():
                chunk.cancel()

    def drop(self, tps: Iterable[PartitionKey]) -> None:
        """Forget revoked or lost partitions: their chunks, their epochs."""
        for tp in tps:
            self._epochs.pop(tp, None)
            for chunk in self.in_flight(tp):
                self.abandon(chunk)
            self._chunks.pop(tp, None)
            self._buffered.pop(tp, None)
            self._idle.pop(tp, None)

    def in_flight(self, tp: PartitionKey) -> list[Chunk]:
        """Return the partition's chunks in flight, oldest offset first."""
        by_offset = self._chunks.get(tp, {})
        return [by_offset[offset] for offset in sorted(by_offset)]

    def partitions(self) -> list[PartitionKey]:
        """Return the partitions that have chunks in flight."""
        return [tp for tp, by_offset in self._chunks.items() if by_offset]

    async def wait_idle(self, tps: Iterable[PartitionKey], timeout_s: float) -> bool:
        """Wait until none of ``tps`` has a chunk in flight; return whether that happened."""
        waits = []
        for tp in tps:
            if self._chunks.get(tp):
                event = self._idle.setdefault(tp, asyncio.Event())
                event.clear()
                waits.append(event.wait())
        if not waits:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
            return True
        return False

    # --- the buffer ----------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """Whether the buffer is at or over its bound (fetching should pause)."""
        return self.buffered_items >= self.max_buffered_items

    @property
    def can_resume(self) -> bool:
        """Whether the buffer is low enough again to resume fetching."""
        return self.buffered_items < self.max_buffered_items * RESUME_FRACTION

    def buffered(self, tp: PartitionKey) -> int:
        """Return how many items of ``tp`` are buffered."""
        return self._buffered.get(tp, 0)

    def pause_plan(
        self,
        assigned: Iterable[PartitionKey],
        paused: set[PartitionKey],
        has_backlog: Callable[[PartitionKey], bool],
    ) -> tuple[list[PartitionKey], list[PartitionKey]]:
        """Return which partitions to pause and which to resume, to share the buffer.

        A full buffer pauses every partition that holds items. Below that, each partition
        with work (items buffered, or ``has_backlog``) may hold an equal share of the
        buffer: one over its share is paused, so that a partition whose messages came first
        cannot fill the buffer while another waits; it resumes below three quarters of its
        share, once the buffer as a whole has room again.

        A partition holding nothing (a newcomer: a new batch on a quiet partition) is left
        fetching, full buffer or not, so that it never waits for a big batch's units to
        drain the buffer: while the buffer is full a fetch takes one message
        (:meth:`fetch_size`), after which the partition holds items and is paused like the
        others. The buffer may so hold one message per such partition over its bound.
        Without ``newcomers`` a full buffer pauses every partition.
        """
        tps = sorted(assigned)
        if self.full:
            return (
                [tp for tp in tps if tp not in paused and not self._newcomer(tp)],
                [tp for tp in tps if tp in paused and self._newcomer(tp)],
            )
        active = sum(1 for tp in tps if self.buffered(tp) or has_backlog(tp))
        share = self._share = max(1, self.max_buffered_items // max(1, active))
        to_pause, to_resume = [], []
        for tp in tps:
            items = self.buffered(tp)
            if tp not in paused and items >= share:
                to_pause.append(tp)
            elif tp in paused and (
                self._newcomer(tp) or (items < share * RESUME_FRACTION and self.can_resume)
            ):
                to_resume.append(tp)
        return to_pause, to_resume

    def _newcomer(self, tp: PartitionKey) -> bool:
        return self.newcomers and not self.buffered(tp)

    def fetch_size(self, poll_batch: int) -> int:
        """How many messages to fetch at most: what the buffer has room for (at least one).

        The room (at most one partition's share, so that one fetch cannot fill the buffer
        with one partition's messages) is turned into a message count with the average
        items per message seen so far, so a backlog of large chunks is never pulled into
        memory at once.
        """
        room = min(self.max_buffered_items - self.buffered_items, self._share)
        if room <= 0 or self._items_per_message == 0:
            return 1
        return max(1, min(poll_batch, int(room / self._items_per_message)))

    def _forget(self, chunk: Chunk) -> None:
        by_offset = self._chunks.get(chunk.tp)
        if by_offset is None or by_offset.pop(chunk.offset, None) is None:
            return
        self.buffered_items -= chunk.size
        self._buffered[chunk.tp] -= chunk.size
        if self.can_resume:
            self.room.set()
        if not by_offset:
            event = self._idle.get(chunk.tp)
            if event is not None:
                event.set()
