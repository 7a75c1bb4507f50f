"""One request message in flight: its items still to answer, its records still unacknowledged.

No Kafka and no I/O. The pipeline makes a :class:`Chunk` of each decoded request, the
:class:`~consumer.chunks.ChunkBook` keeps it while it is in flight, and the record writer
and the delivery reports count its progress on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consumer.resume import ChunkProgress, Ranges, add_points, add_range

if TYPE_CHECKING:
    import asyncio

    from consumer.offsets import PartitionKey
    from consumer.publisher import Headers
    from schemas import BatchRequest


@dataclass(slots=True, eq=False)
class Chunk:
    """Progress of one request message: items still to answer, records still unacknowledged.

    ``epoch`` is the assignment epoch of its partition when it was received; ``tasks`` the
    work units still running for it. ``done`` holds the item ranges whose results are
    acknowledged (a previous owner's included, on a resume) and ``acked_ok`` /
    ``acked_error`` how many of them are ``ok`` and ``error``: what the commit metadata
    says of the chunk (:mod:`consumer.resume`).
    """

    tp: PartitionKey
    offset: int
    request: BatchRequest
    trace_headers: Headers
    created_ms: int
    epoch: int
    pending_items: int = field(init=False)
    unacked: int = 0
    ok_count: int = 0
    error_count: int = 0
    cancelled_count: int = 0
    expired_count: int = 0
    summary_sent: bool = False
    # Where its records landed on the results topic (from the delivery reports).
    results_partition: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    abandoned: bool = False
    _done: Ranges = field(default=(), init=False)
    # One-item units acknowledged since done was last read (their first items): added to
    # the ranges when they are read (commits), not one range update per record.
    acked_ones: list[int] = field(default_factory=list, init=False)
    acked_ok: int = 0
    acked_error: int = 0
    acked_stopped: tuple[int, int] = (0, 0)  # of acked_error: (cancelled, expired)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        """Every item is still to be answered."""
        self.pending_items = len(self.request.items)

    @property
    def done(self) -> Ranges:
        """The item ranges whose results are acknowledged (see :mod:`consumer.resume`)."""
        if self.acked_ones:
            self._done = add_points(self._done, self.acked_ones)
            self.acked_ones.clear()
        return self._done

    @done.setter
    def done(self, ranges: Ranges) -> None:
        self._done = ranges
        self.acked_ones.clear()

    @property
    def size(self) -> int:
        """How many items the chunk holds."""
        return len(self.request.items)

    @property
    def touched(self) -> bool:
        """Whether any record was published for it (handing it back would repeat them)."""
        return self.pending_items < self.size or self.unacked > 0

    def landed(self, partition: int | None, offset: int | None) -> None:
        """Note where one of its records was written."""
        if partition is None or offset is None or offset < 0:
            return
        self.results_partition = partition
        if self.first_offset is None or offset < self.first_offset:
            self.first_offset = offset
        if self.last_offset is None or offset > self.last_offset:
            self.last_offset = offset

    def resume_from(self, progress: ChunkProgress) -> None:
        """Count the items a previous owner answered (their results are acknowledged)."""
        self.done = progress.done
        if progress.results is not None:
            self.landed(*progress.results)
        self.ok_count = self.acked_ok = progress.ok
        self.error_count = self.acked_error = progress.error
        self.cancelled_count, self.expired_count = progress.cancelled, progress.expired
        self.acked_stopped = (progress.cancelled, progress.expired)
        self.pending_items -= progress.count

    def acked(self, start: int, end: int, errors: int, stopped: tuple[int, int]) -> None:
        """Record that the results of items ``[start, end)`` are all acknowledged.

        ``errors`` of them are errors, of which ``stopped`` (cancelled, expired).
        """
        self.done = add_range(self.done, start, end)
        self.acked_ok += end - start - errors
        self.acked_error += errors
        if stopped != (0, 0):
            cancelled, expired = self.acked_stopped
            self.acked_stopped = (cancelled + stopped[0], expired + stopped[1])

    @property
    def progress(self) -> ChunkProgress | None:
        """The acknowledged items, for the commit metadata (``None``: none yet)."""
        if not self.done:
            return None
        results = None
        if self.results_partition is not None and self.first_offset is not None:
            results = (self.results_partition, self.first_offset)
        return ChunkProgress(
            self.done, self.acked_ok, self.acked_error, results, *self.acked_stopped
        )

    def cancel(self) -> None:
        """Mark it abandoned and cancel its running units."""
        self.abandoned = True
        for task in self.tasks:
            task.cancel()
