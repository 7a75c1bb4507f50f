"""Per-partition offset bookkeeping for at-least-once commits with many messages in flight.

Pure logic: no Kafka, no I/O, no clock. The source calls :meth:`OffsetTracker.add` for every
message it hands on, the publisher calls :meth:`OffsetTracker.done` once every result and
summary record a message produced has a successful delivery report, and the committer asks
:meth:`OffsetTracker.commit_positions` what it may commit.

The rule this module exists to keep: per partition, only the *contiguous done prefix* is
ever committable. A later message finishing first never moves the position past an earlier
unfinished one, so a crash can cause duplicates but never loss.

Positions follow the Kafka convention: the committed offset is the *next offset to read*,
i.e. the last done offset of the prefix plus one.

Kafka offsets of consumed messages increase but are **not contiguous**: transaction
markers, compaction and aborted transactions leave holes. Nothing here assumes that
``offset + 1`` is the next message; only offsets actually passed to ``add`` count.

Cost: O(1) amortised per message. Each partition keeps a deque of received offsets that are
not yet part of the done prefix plus two sets (pending and done within that window); when
the oldest offset becomes done, done offsets are popped from the left. Memory is bounded by
the window between the oldest unfinished offset and the newest received one.

Not thread-safe: call it from one thread (the event loop). Rebalance callbacks that run on
the poll thread must hand their work to the loop.

Room left for later work:

* **Item-level resume** (:mod:`consumer.resume`) reads :meth:`PartitionOffsets.base` and
  :attr:`PartitionOffsets.done_behind` to say, in the commit metadata, "committed up to
  N, and of the offsets after N these are done".
* **Exactly-once mode** feeds :meth:`OffsetTracker.commit_positions` to
  ``send_offsets_to_transaction`` instead of ``commit``; the bookkeeping is the same.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

PartitionKey: TypeAlias = tuple[str, int]
"""A ``(topic, partition)`` pair."""


class PartitionOffsets:
    """Which received offsets of one partition are done, and what may be committed.

    * ``add(offset)``: a message was received. Offsets must arrive strictly increasing.
    * ``done(offset)``: all the message's output is acknowledged. Idempotent.
    * ``committable()``: the position to commit, or ``None`` when nothing new is.
    * ``mark_committed(position)``: the broker confirmed a commit of ``position``.

    Offsets below the done prefix are forgotten (that is what bounds memory), so a
    ``done`` for such an offset cannot be told apart from one for a hole in the offsets
    that was never received: both are accepted as "already done". An offset at or above
    the oldest pending one that was never received raises :class:`ValueError`, as does
    one below the first offset ever received.
    """

    __slots__ = ("_committed", "_done", "_first", "_last", "_pending", "_position", "_window")

    def __init__(self) -> None:
        """Start with nothing received, nothing done and nothing committed."""
        # Received offsets not yet in the done prefix, oldest first. Invariant: when not
        # empty, ``_window[0]`` is pending (done offsets at the left are popped at once).
        self._window: deque[int] = deque()
        self._pending: set[int] = set()  # received, not done (all are in the window)
        self._done: set[int] = set()  # done but still in the window (behind a pending one)
        self._first: int | None = None  # first offset ever received
        self._last: int | None = None  # last offset received
        self._position: int | None = None  # last offset of the done prefix + 1
        self._committed: int | None = None  # last position the broker confirmed

    def add(self, offset: int) -> None:
        """Record that the message at ``offset`` was received and is now in flight.

        Raises :class:`ValueError` for a negative offset, one not greater than the last
        offset added (offsets of one partition are consumed in increasing order; a seek
        back needs a fresh tracker, i.e. revoke and assign), or one below the committed
        position (a message the committed position already vouches for).
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if self._last is not None and offset <= self._last:
            raise ValueError(
                f"offsets must be added in increasing order: got {offset} after {self._last}"
            )
        if self._committed is not None and offset < self._committed:
            raise ValueError(f"offset {offset} is below the committed position {self._committed}")
        if self._first is None:
            self._first = offset
        self._last = offset
        self._window.append(offset)
        self._pending.add(offset)

    def done(self, offset: int) -> None:
        """Record that every output of the message at ``offset`` is acknowledged.

        Idempotent: marking a done offset done again changes nothing. Raises
        :class:`ValueError` for an offset that was never received (see the class docstring
        for the one ambiguity below the done prefix).
        """
        if offset in self._pending:
            self._pending.remove(offset)
            self._done.add(offset)
            self._advance()
            return
        if offset in self._done:
            return
        if (
            self._position is not None
            and self._first is not None
            and self._first <= offset < self._position
        ):
            return  # below the done prefix: already done (or a hole we cannot tell apart)
        raise ValueError(f"offset {offset} was never received")

    def _advance(self) -> None:
        """Pop done offsets from the left of the window, moving the done prefix on."""
        window, finished = self._window, self._done
        while window and window[0] in finished:
            offset = window.popleft()
            finished.remove(offset)
            self._position = offset + 1

    def committable(self) -> int | None:
        """Return the position to commit, or ``None`` when nothing new is committable.

        The position is (the highest offset such that it and every earlier received offset
        are done) + 1: the next offset a consumer resuming from it reads. ``None`` when no
        offset is done yet or the position is not past the last one marked committed.
        """
        position = self._position
        if position is None or (self._committed is not None and position <= self._committed):
            return None
        return position

    def mark_committed(self, position: int) -> None:
        """Record that the broker confirmed a commit of ``position``.

        Call it only after the commit succeeded. A position not past the one already marked
        is ignored (commit confirmations may be stale).

        Raises :class:`ValueError` when the position is past what this partition can vouch
        for: past the oldest pending offset (it would skip an unfinished message), or, with
        nothing pending, past the last received offset + 1 (it would skip messages not yet
        received). With nothing received at all the position is recorded as is: that
        happens when a partition is revoked and assigned again while a commit of the old
        assignment's position is in flight, and such a position is where fetching resumes.
        """
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        if self._committed is not None and position <= self._committed:
            return
        limit = self._window[0] if self._window else self._position
        if limit is not None and position > limit:
            raise ValueError(
                f"position {position} is past the done prefix (oldest pending "
                f"{self.oldest_pending}, last received {self._last}): "
                "committing it would skip unfinished messages"
            )
        self._committed = position

    @property
    def committed(self) -> int | None:
        """The last position marked committed, or ``None``.

        Never past the oldest pending offset; it may be ahead of the done prefix (up to the
        oldest pending offset across a hole, or recorded before anything was received).
        """
        return self._committed

    @property
    def in_flight(self) -> int:
        """How many received messages are not done yet."""
        return len(self._pending)

    @property
    def done_behind(self) -> frozenset[int]:
        """Done offsets held back by an earlier pending one (item-level resume lists them)."""
        return frozenset(self._done)

    @property
    def last(self) -> int | None:
        """The last offset received, or ``None``."""
        return self._last

    def base(self) -> int | None:
        """Return the position a commit made now would name: committable, else the last committed.

        With nothing done or committed yet, the oldest pending offset (what fetching
        resumes from anyway). ``None`` when nothing was received or committed.
        """
        for position in (self.committable(), self._committed, self.oldest_pending):
            if position is not None:
                return position
        return None

    @property
    def oldest_pending(self) -> int | None:
        """The oldest received offset that is not done (what holds the commit back)."""
        return self._window[0] if self._window else None

    def __repr__(self) -> str:
        """Show the positions that matter when debugging a stuck commit."""
        return (
            f"PartitionOffsets(committed={self._committed}, position={self._position}, "
            f"oldest_pending={self.oldest_pending}, in_flight={self.in_flight}, "
            f"last={self._last})"
        )


class OffsetTracker:
    """:class:`PartitionOffsets` for every assigned ``(topic, partition)``.

    Follows the consumer's assignment: ``assign`` on (incremental) assignment, ``revoke`` on
    revocation or loss. Work finishing after its partition was revoked is ignored:
    ``done`` returns ``False`` and nothing is raised, because the partition's new owner
    will process those messages again from the committed position (at-least-once).
    """

    __slots__ = ("_in_flight", "_partitions")

    def __init__(self) -> None:
        """Start with no partitions assigned."""
        self._partitions: dict[PartitionKey, PartitionOffsets] = {}
        self._in_flight = 0  # sum of the partitions' in_flight, kept for O(1) reads

    def assign(self, tps: Iterable[PartitionKey]) -> None:
        """Start tracking these partitions. Already assigned ones keep their state."""
        for tp in tps:
            if tp not in self._partitions:
                self._partitions[tp] = PartitionOffsets()

    def revoke(self, tps: Iterable[PartitionKey]) -> dict[PartitionKey, int]:
        """Stop tracking these partitions; return the positions to commit before letting go.

        Only partitions whose committable position advanced past the last one marked
        committed appear in the result. Partitions not assigned are skipped.
        """
        final: dict[PartitionKey, int] = {}
        for tp in tps:
            offsets = self._partitions.pop(tp, None)
            if offsets is None:
                continue
            self._in_flight -= offsets.in_flight
            position = offsets.committable()
            if position is not None:
                final[tp] = position
        return final

    def add(self, topic: str, partition: int, offset: int) -> bool:
        """Record a received message; return whether its partition is assigned.

        ``False`` means the partition is not (or no longer) assigned: nothing is tracked,
        and the caller should drop the message, which belongs to the partition's owner.
        Raises :class:`ValueError` like :meth:`PartitionOffsets.add`.
        """
        offsets = self._partitions.get((topic, partition))
        if offsets is None:
            return False
        offsets.add(offset)
        self._in_flight += 1
        return True

    def done(self, topic: str, partition: int, offset: int) -> bool:
        """Record a finished message; return whether it still counted.

        ``False`` when the partition was revoked meanwhile (ignored, not an error). Raises
        :class:`ValueError` for an offset of an assigned partition that was never received.
        """
        offsets = self._partitions.get((topic, partition))
        if offsets is None:
            return False
        before = offsets.in_flight
        offsets.done(offset)
        self._in_flight -= before - offsets.in_flight
        return True

    def commit_positions(self) -> dict[PartitionKey, int]:
        """Return the position to commit for every partition that advanced since its mark."""
        positions: dict[PartitionKey, int] = {}
        for tp, offsets in self._partitions.items():
            position = offsets.committable()
            if position is not None:
                positions[tp] = position
        return positions

    def mark_committed(self, positions: Mapping[PartitionKey, int]) -> None:
        """Record positions the broker confirmed; partitions revoked meanwhile are skipped.

        A partition revoked and assigned again meanwhile takes the old position without
        complaint (see :meth:`PartitionOffsets.mark_committed`); a position that would skip
        a pending offset raises :class:`ValueError`.
        """
        for tp, position in positions.items():
            offsets = self._partitions.get(tp)
            if offsets is not None:
                offsets.mark_committed(position)

    def in_flight(self) -> int:
        """How many received messages of assigned partitions are not done yet."""
        return self._in_flight

    @property
    def assigned(self) -> frozenset[PartitionKey]:
        """The partitions being tracked."""
        return frozenset(self._partitions)

    def partition(self, topic: str, partition: int) -> PartitionOffsets | None:
        """Return the bookkeeping of one partition (for metrics and debugging), or ``None``."""
        return self._partitions.get((topic, partition))
