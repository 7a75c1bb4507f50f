"""The batches a replica owns: their lifecycle and exact counts, as pure bookkeeping.

No Kafka and no clock (times are passed in). The replica that owns partition ``p`` of
``batch-requests`` owns the status of the batches whose :func:`~schemas.batch_partition`
is ``p``; :class:`JobBook` holds those batches' :class:`~schemas.BatchStatus`, folds the
status partition into them when the partition is assigned (the changelog), and answers
each event with the status record to write, or ``None`` when nothing changed:

- a chunk of the batch finished (:meth:`JobBook.chunk_done`): counted once per
  ``(attempt, chunk)``, so a chunk redone after a crash or a rebalance changes nothing;
- a chunk was taken in (:meth:`JobBook.started`): ``submitted`` becomes ``in_progress``;
- a cancel arrived (:meth:`JobBook.cancel`): ``cancelling`` until every chunk is done,
  then ``cancelled``.

State after the last chunk: ``cancelled`` if a cancel arrived or an item was cancelled,
else ``expired`` if an item's deadline passed, else ``completed_with_errors`` if any item
failed, else ``completed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from schemas import (
    BATCH_STATUS_V1,
    BatchControl,
    BatchStatus,
    add_chunk,
    batch_partition,
    done_chunk_ranges,
)


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What one finished chunk contributes to its batch's status."""

    batch_id: str
    attempt: int
    chunk: int
    chunks: int
    total: int
    ok: int
    errors: int
    cancelled: int = 0
    expired: int = 0
    results_partition: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None

    @classmethod
    def from_control(cls, control: BatchControl) -> ChunkOutcome:
        """Read a ``progress`` control record (its chunk fields are checked by the decoder)."""
        if control.chunk is None or control.chunks is None or control.total is None:
            msg = "a progress record without its chunk"
            raise ValueError(msg)
        return cls(
            control.batch_id,
            control.attempt,
            control.chunk,
            control.chunks,
            control.total,
            control.ok,
            control.errors,
            control.cancelled,
            control.expired,
            control.results_partition,
            control.first_offset,
            control.last_offset,
        )


def _final_state(status: BatchStatus, cancel: bool) -> str:  # noqa: FBT001 - one flag
    if cancel or status.cancelled:
        return "cancelled"
    if status.expired:
        return "expired"
    if status.errors:
        return "completed_with_errors"
    return "completed"


def _ranged(status: BatchStatus) -> BatchStatus:
    """Return ``status`` with its done chunks as ranges only (an older writer's list merged)."""
    if not status.done:
        return status
    return msgspec.structs.replace(status, done=[], done_ranges=done_chunk_ranges(status))


def _lower(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _higher(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class JobBook:
    """Statuses of the batches owned here, per status partition; the batches cancelled."""

    def __init__(self, partitions: int) -> None:
        """Own nothing yet; ``partitions`` is the partition count of the status topic."""
        self.partitions = partitions
        self._jobs: dict[str, BatchStatus] = {}
        self._owned: set[int] = set()
        self.cancels: set[str] = set()  # seen on any partition owned here (others read it)
        self._failed: set[str] = set()  # a request message of theirs was dead-lettered

    # --- ownership -----------------------------------------------------------------------

    def partition_of(self, batch_id: str) -> int:
        """Return the status partition of ``batch_id``."""
        return batch_partition(batch_id, self.partitions)

    def owns(self, batch_id: str) -> bool:
        """Whether this replica owns the status of ``batch_id``."""
        return self.partition_of(batch_id) in self._owned

    def assign(self, partitions: list[int]) -> None:
        """Own ``partitions`` (restore them with :meth:`restore` before taking chunks)."""
        self._owned.update(partitions)

    def revoke(self, partitions: list[int]) -> None:
        """Forget the batches of ``partitions``: their new owner restores them."""
        gone = set(partitions)
        self._owned -= gone
        self._failed = {b for b in self._failed if self.partition_of(b) not in gone}
        for batch_id in [b for b in self._jobs if self.partition_of(b) in gone]:
            del self._jobs[batch_id]

    def get(self, batch_id: str) -> BatchStatus | None:
        """Return the status held for ``batch_id``."""
        return self._jobs.get(batch_id)

    def states(self) -> dict[str, int]:
        """Return how many owned batches are in each state."""
        counts: dict[str, int] = {}
        for status in self._jobs.values():
            counts[status.state] = counts.get(status.state, 0) + 1
        return counts

    def cancelled(self, batch_id: str) -> bool:
        """Whether a cancel of ``batch_id`` was seen (on any partition owned here)."""
        return batch_id in self.cancels

    # --- the changelog -------------------------------------------------------------------

    def restore(self, record: BatchStatus | BatchControl, now: float) -> BatchStatus | None:
        """Fold one record of an owned status partition, read from its beginning.

        The latest status of a batch wins; control records apply on top of it. Returns the
        status to write when a control record changed it.
        """
        if isinstance(record, BatchStatus):
            if self.owns(record.batch_id):
                self._jobs[record.batch_id] = _ranged(record)
            return None
        return self.control(record, now)

    def adopt(self, status: BatchStatus) -> None:
        """Take a status written by someone else (``submit``) for a batch not yet held."""
        held = self._jobs.get(status.batch_id)
        if not self.owns(status.batch_id):
            return
        if held is None or status.attempt > held.attempt:
            self._jobs[status.batch_id] = _ranged(status)  # a new batch, or a retry of it
        elif held.deadline is None and status.deadline is not None:
            self._jobs[status.batch_id] = msgspec.structs.replace(
                held, deadline=status.deadline, submitted_at=status.submitted_at
            )

    def control(self, record: BatchControl, now: float) -> BatchStatus | None:
        """Apply a control record; return the status to write, if it changed."""
        if record.kind == "cancel":
            return self.cancel(record.batch_id, now)
        if record.kind == "failed":
            return self.fail(record.batch_id, now)
        return self.chunk_done(ChunkOutcome.from_control(record), now)

    # --- events --------------------------------------------------------------------------

    def started(  # noqa: PLR0913 - the chunk's place in its batch
        self,
        batch_id: str,
        *,
        attempt: int,
        chunks: int,
        total: int,
        now: float,
        submitted_at: float | None = None,
        deadline: float | None = None,
    ) -> BatchStatus | None:
        """Note a chunk of ``batch_id`` taken in; return ``in_progress`` if that is news."""
        if not self.owns(batch_id):
            return None
        held = self._jobs.get(batch_id)
        if held is not None and (
            held.attempt > attempt or (held.attempt == attempt and held.state != "submitted")
        ):
            return None
        if held is not None and held.attempt == attempt:
            status = msgspec.structs.replace(
                held, state="in_progress", started_at=now, updated_at=now
            )
        else:
            status = self._fresh(
                batch_id=batch_id,
                attempt=attempt,
                chunks=chunks,
                total=total,
                now=now,
                previous=held,
            )
            status = msgspec.structs.replace(
                status,
                submitted_at=status.submitted_at or submitted_at,
                deadline=status.deadline or deadline,
            )
        if self.cancelled(batch_id):
            status = msgspec.structs.replace(status, state="cancelling")
        if batch_id in self._failed:
            status = msgspec.structs.replace(status, state="failed", completed_at=now)
        self._jobs[batch_id] = status
        return status

    def _fresh(  # noqa: PLR0913 - the chunk's place in its batch
        self,
        *,
        batch_id: str,
        attempt: int,
        chunks: int,
        total: int,
        now: float,
        previous: BatchStatus | None,
    ) -> BatchStatus:
        """Return the status of a batch first seen here (or of a new attempt of it)."""
        if previous is None or attempt == 1:
            return BatchStatus(
                schema=BATCH_STATUS_V1,
                batch_id=batch_id,
                state="in_progress",
                total=total,
                chunks=chunks,
                attempt=attempt,
                started_at=now,
                updated_at=now,
                submitted_at=None if previous is None else previous.submitted_at,
                deadline=None if previous is None else previous.deadline,
            )
        # A new attempt retries the previous one's errors: they stop counting as errors.
        return msgspec.structs.replace(
            previous,
            state="in_progress",
            attempt=attempt,
            chunks=chunks,
            errors=previous.errors - total,
            cancelled=0,
            expired=0,
            chunks_done=0,
            done=[],
            done_ranges=[],
            completed_at=None,
            updated_at=now,
        )

    def chunk_done(self, outcome: ChunkOutcome, now: float) -> BatchStatus | None:
        """Count a finished chunk once; return the status to write, or None (a repeat)."""
        if not self.owns(outcome.batch_id):
            return None
        held = self._jobs.get(outcome.batch_id)
        if held is None or held.attempt < outcome.attempt:
            self.started(
                outcome.batch_id,
                attempt=outcome.attempt,
                chunks=outcome.chunks,
                total=outcome.total,
                now=now,
            )
            held = self._jobs[outcome.batch_id]
        done = add_chunk(held.done_ranges, outcome.chunk)
        if held.attempt != outcome.attempt or done is None:
            return None  # a repeat (after a crash or a rebalance), or a superseded attempt
        status = msgspec.structs.replace(
            held,
            ok=held.ok + outcome.ok,
            errors=held.errors + outcome.errors,
            cancelled=held.cancelled + outcome.cancelled,
            expired=held.expired + outcome.expired,
            chunks_done=held.chunks_done + 1,
            done_ranges=done,
            results_partition=_higher(held.results_partition, outcome.results_partition),
            first_offset=_lower(held.first_offset, outcome.first_offset),
            last_offset=_higher(held.last_offset, outcome.last_offset),
            updated_at=now,
        )
        if status.state == "submitted":
            status = msgspec.structs.replace(status, state="in_progress", started_at=now)
        if status.chunks_done == status.chunks and not held.final:
            final = _final_state(status, status.state == "cancelling")
            status = msgspec.structs.replace(status, state=final, completed_at=now)
        self._jobs[outcome.batch_id] = status
        return status

    def fail(self, batch_id: str, now: float) -> BatchStatus | None:
        """Note a request message of the batch dead-lettered: it can never complete.

        Returns ``failed`` (final) for an owned batch held here and not yet final (one
        first seen later starts ``failed``); its other chunks still count as they finish,
        the state stays ``failed``.
        """
        self._failed.add(batch_id)
        held = self._jobs.get(batch_id)
        if held is None or held.final:
            return None
        status = msgspec.structs.replace(held, state="failed", updated_at=now, completed_at=now)
        self._jobs[batch_id] = status
        return status

    def cancel(self, batch_id: str, now: float) -> BatchStatus | None:
        """Note a cancel; return ``cancelling`` for an owned batch not yet final."""
        self.cancels.add(batch_id)
        held = self._jobs.get(batch_id)
        if held is None or held.final or held.state == "cancelling":
            return None
        status = msgspec.structs.replace(held, state="cancelling", updated_at=now)
        self._jobs[batch_id] = status
        return status
