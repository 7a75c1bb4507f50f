"""Batches as jobs: the replica's side of the ``batch-status`` topic.

The changelog pattern of Kafka Streams. ``batch-status`` is compacted and has as many
partitions as ``batch-requests``; the replica that owns requests partition ``p`` owns the
status of the batches on status partition ``p`` (:func:`~schemas.batch_partition`):

1. On assignment of ``p`` (inside the rebalance callback, before any message of ``p`` is
   fetched) :class:`StatusLog` reads status partition ``p`` from its beginning to its end
   and :class:`~consumer.jobstate.JobBook` folds it into the batches' states.
2. It then keeps reading the owned status partitions (every ``TAIL_POLL_S``) for what
   others write there: ``submitted`` from ``submit``, cancels, progress of chunks that sat
   on another partition.
3. When a chunk's results and summary are all acknowledged, :meth:`Jobs.finished` writes
   the batch's new status (owner) or a progress record to the owner (a chunk on another
   partition); only when that record is acknowledged is the chunk's offset done. A chunk
   redone after a crash finds its number in the status's ``done_ranges`` and counts nothing.
4. A cancel seen on any owned partition stops the batch's units here (:meth:`Jobs.cancelled`
   and the ``on_cancel`` callback); a request's deadline is checked as each unit starts.

Without the status topic (it does not exist) the replica runs as before and says so.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import msgspec
from confluent_kafka import KafkaException

from consumer.jobstate import ChunkOutcome, JobBook
from consumer.statuslog import StatusLog
from schemas import (
    BATCH_CONTROL_V1,
    BATCH_ID_PATTERN,
    BatchControl,
    BatchStatus,
    InvalidMessage,
    ResultErrorKind,
    decode_status_record,
    done_chunk_list,
    encode_status_record,
    failed_key,
    progress_key,
)
from schemas.errors import ConfigError
from schemas.jobs import BATCH_STATES

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from confluent_kafka import KafkaError, Message

    from consumer.chunk import Chunk
    from consumer.metrics import Metrics
    from consumer.publisher import Publisher
    from schemas import BatchRequest

log = logging.getLogger(__name__)

BATCH_ID = re.compile(BATCH_ID_PATTERN)


class Jobs:
    """The facade the pipeline and the intake use: status records, cancels, deadlines."""

    def __init__(  # noqa: PLR0913 - the collaborators, each named
        self,
        *,
        topic: str,
        consumer_config: dict[str, Any],
        publisher: Publisher,
        metrics: Metrics,
        failed: Callable[[BaseException], None],
        on_cancel: Callable[[str], None],
        replica_header: tuple[str, bytes],
        done_list: bool = False,
    ) -> None:
        """Write to and read ``topic``; nothing connects until :meth:`start`.

        ``done_list``: also write each status's done chunks as the ``done`` list, the only
        form replicas before ``done_ranges`` read (for the first step of a rolling upgrade).
        """
        self.topic = topic
        self._consumer_config = consumer_config
        self._publisher = publisher
        self._metrics = metrics
        self._failed = failed
        self._on_cancel = on_cancel
        self._header = replica_header
        self._done_list = done_list
        self.book: JobBook | None = None
        # The batches cancelled (the book's, once there is one): empty, no unit is stopped
        # for a cancel, which the intake checks per unit before asking stop_reason.
        self.cancels: Collection[str] = frozenset()
        self._log: StatusLog | None = None

    @property
    def enabled(self) -> bool:
        """Whether the status topic exists (batch statuses are kept)."""
        return self.book is not None

    async def start(self, requests_topic: str) -> None:
        """Find the status topic; check it is co-partitioned with ``requests_topic``."""
        count = await asyncio.to_thread(self._publisher.partition_count, self.topic)
        if count is None:
            log.warning(
                "no status topic: batches get no status records, cancel or completion "
                "events (create it with batch-runner kafka create-topics)",
                extra={"topic": self.topic},
            )
            return
        requests = await asyncio.to_thread(self._publisher.partition_count, requests_topic)
        if requests is not None and requests != count:
            msg = (
                f"the status topic {self.topic} has {count} partitions and {requests_topic} "
                f"{requests}: they must be equal (the status of a batch lives on its "
                "requests partition's number)"
            )
            raise ConfigError(msg)
        self.book = JobBook(count)
        self.cancels = self.book.cancels
        self._log = StatusLog(self._consumer_config, self.topic)

    async def run(self) -> None:
        """Read the owned status partitions until cancelled."""
        if self._log is None:
            return
        while True:
            for msg in await self._log.poll():
                self._apply(msg, restoring=False)
            self._gauges()

    async def close(self) -> None:
        """Stop reading the status topic."""
        if self._log is not None:
            await self._log.close()

    # --- assignment ----------------------------------------------------------------------

    async def assign(self, partitions: list[int]) -> None:
        """Own ``partitions``: restore their batches from the status topic first."""
        if self.book is None or self._log is None or not partitions:
            return
        self.book.assign(partitions)
        started = time.monotonic()
        restored, others = await self._log.restore(partitions)
        for msg in restored:
            self._apply(msg, restoring=True)
        for msg in others:
            self._apply(msg, restoring=False)
        log.info(
            "batch statuses restored",
            extra={
                "partitions": partitions,
                "records": len(restored),
                "took_s": round(time.monotonic() - started, 3),
            },
        )

    async def revoke(self, partitions: list[int]) -> None:
        """Give up ``partitions``' batches (their new owner restores them)."""
        if self.book is None or self._log is None or not partitions:
            return
        self.book.revoke(partitions)
        await self._log.unassign(partitions)

    # --- the intake's questions ----------------------------------------------------------

    def cancelled(self, batch_id: str) -> bool:
        """Whether ``batch_id`` was cancelled."""
        return self.book is not None and self.book.cancelled(batch_id)

    def stop_reason(self, request: BatchRequest, now: float) -> ResultErrorKind | None:
        """Why a unit of ``request`` must not be sent now (cancelled, expired), or None."""
        if request.batch_id in self.cancels:  # as cancelled(), inline: asked once per unit
            return ResultErrorKind.CANCELLED
        if request.deadline is not None and now >= request.deadline:
            return ResultErrorKind.EXPIRED
        return None

    def taken(self, chunk: Chunk) -> None:
        """Note a chunk taken in: its batch is ``in_progress`` (if its status is owned here)."""
        book = self.book
        if book is None or book.partition_of(chunk.request.batch_id) != chunk.tp[1]:
            return
        request = chunk.request
        status = book.started(
            request.batch_id,
            attempt=request.attempt or 1,
            chunks=request.chunks,
            total=request.total,
            now=time.time(),
            submitted_at=request.submitted_at,
            deadline=request.deadline,
        )
        if status is not None:
            self._write(status)

    def finished(self, chunk: Chunk, then: Callable[[], None]) -> None:
        """Count a chunk whose records are acknowledged; call ``then`` once that is written."""
        book = self.book
        if book is None:
            then()
            return
        request = chunk.request
        outcome = ChunkOutcome(
            request.batch_id,
            request.attempt or 1,
            request.chunk,
            request.chunks,
            request.total,
            chunk.ok_count,
            chunk.error_count,
            chunk.cancelled_count,
            chunk.expired_count,
            chunk.results_partition,
            chunk.first_offset,
            chunk.last_offset,
        )
        partition = book.partition_of(request.batch_id)
        if partition == chunk.tp[1]:
            status = book.chunk_done(outcome, time.time())
            if status is None:
                then()  # counted before (a chunk redone after a crash)
            else:
                self._write(status, then)
            return
        self._metrics.foreign_chunks.inc()
        control = BatchControl(
            schema=BATCH_CONTROL_V1,
            kind="progress",
            batch_id=request.batch_id,
            at=time.time(),
            attempt=outcome.attempt,
            chunk=outcome.chunk,
            chunks=outcome.chunks,
            total=outcome.total,
            ok=outcome.ok,
            errors=outcome.errors,
            cancelled=outcome.cancelled,
            expired=outcome.expired,
            results_partition=outcome.results_partition,
            first_offset=outcome.first_offset,
            last_offset=outcome.last_offset,
        )
        key = progress_key(request.batch_id, outcome.attempt, outcome.chunk)
        self._produce(partition, key, encode_status_record(control), then)

    def dead_lettered(self, key: bytes | None, partition: int) -> None:
        """Fail the batch of an invalid request message keyed ``key`` on ``partition``."""
        book = self.book
        if book is None or key is None:
            return
        try:
            batch_id = key.decode()
        except UnicodeDecodeError:
            return
        if not BATCH_ID.fullmatch(batch_id):
            return  # no batch id: no batch to fail
        owner = book.partition_of(batch_id)
        if owner == partition:
            status = book.fail(batch_id, time.time())
            if status is not None:
                self._write(status)
        # Also as a control record: a batch not held yet starts failed, after a restore too.
        control = BatchControl(
            schema=BATCH_CONTROL_V1, kind="failed", batch_id=batch_id, at=time.time()
        )
        self._produce(owner, failed_key(batch_id), encode_status_record(control), None)

    # --- records -------------------------------------------------------------------------

    def _apply(self, msg: Message, *, restoring: bool) -> None:
        book, value = self.book, msg.value()
        if book is None or not value:
            return  # a tombstone
        try:
            record = decode_status_record(value)
        except InvalidMessage as exc:
            log.warning(
                "an invalid record on the status topic: ignored",
                extra={"partition": msg.partition(), "offset": msg.offset(), "reason": str(exc)},
            )
            return
        now = time.time()
        status: BatchStatus | None
        if restoring:
            status = book.restore(record, now)
        elif isinstance(record, BatchStatus):
            if self._header not in (msg.headers() or []):
                book.adopt(record)  # submit's record, or a late one of a former owner
            status = None
        else:
            status = book.control(record, now)
        if isinstance(record, BatchControl) and record.kind == "cancel":
            self._on_cancel(record.batch_id)
        if status is not None:
            self._write(status)

    def _write(self, status: BatchStatus, then: Callable[[], None] | None = None) -> None:
        if self.book is None:
            return
        if status.final and status.submitted_at is not None and status.completed_at is not None:
            self._metrics.batch_seconds.observe(max(0.0, status.completed_at - status.submitted_at))
        if status.final:
            log.info(
                "batch finished",
                extra={"batch_id": status.batch_id, "state": status.state, "ok": status.ok},
            )
        partition = self.book.partition_of(status.batch_id)
        if self._done_list:
            status = msgspec.structs.replace(status, done=done_chunk_list(status))
        self._produce(partition, status.batch_id, encode_status_record(status), then)

    def _produce(
        self, partition: int, key: str, value: bytes, then: Callable[[], None] | None
    ) -> None:
        failed = self._failed

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed(KafkaException(err))
            elif then is not None:
                then()

        self._publisher.produce_to(self.topic, partition, value, key, on_delivery, [self._header])

    def _gauges(self) -> None:
        if self.book is None:
            return
        gauge = self._metrics.batches
        counts = self.book.states()
        for state in BATCH_STATES:
            gauge.labels(state).set(counts.get(state, 0))
