"""Wire the rooms of one replica and run its loops: fetch, commit, watch, drain.

The rooms: :mod:`~.source` (the Kafka consumer), :mod:`~.intake` (a message becomes a chunk
of work), :mod:`~.chunks` (chunks in flight, the buffer, epochs), :mod:`~.dispatcher` (calls),
:mod:`~.writer` (results, summaries, dead letters), :mod:`~.committer` (the done prefix),
:mod:`~.status` (health, gauges, stalls) and :mod:`~.drain` (the way out).

Delivery rules (the README's "Delivery semantics"):

1. A request message is *done* when every record it caused (a result per item and the
   chunk summary, or its dead letter) has a positive delivery report.
2. Only the contiguous done prefix of each partition is committed: a later message
   finishing first never moves the committed offset past an unfinished one.
3. A failed delivery report stops the replica without marking its message done.
4. On revoke, chunks nothing was published for are handed back (without item-level resume
   all after the first such), the others get ``revoke_grace_s`` (capped inside
   ``max.poll.interval.ms``); work outliving its assignment never marks an offset done.
5. Nothing waits without a bound; a drain keeps polling (its partitions paused) so that
   rebalances finish and commits are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from consumer.backpressure import apply_backpressure
from consumer.chunks import ChunkBook
from consumer.committing import build_committer
from consumer.connectivity import ClusterWatch
from consumer.dispatcher import Dispatcher
from consumer.drain import Drain
from consumer.intake import Intake
from consumer.jobs import Jobs
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker
from consumer.ops import OpsServer
from consumer.progress import ProgressMonitor, StallWatch
from consumer.publisher import Publisher
from consumer.rebalance import Rebalance
from consumer.releaser import Releaser
from consumer.source import Source
from consumer.status import ClientReports, StatusBoard
from consumer.transactions import TransactionalCommitter
from consumer.txn_producer import kafka_error, transactional_config
from consumer.writer import RecordWriter
from schemas.errors import DeliveryError

if TYPE_CHECKING:
    from consumer.chunk import Chunk
    from consumer.commits import Commit
    from consumer.offsets import PartitionKey
    from consumer.settings import Settings

log = logging.getLogger(__name__)

REPLICA_HEADER = "batch-runner-replica"
PROGRESS_CHECK_S = 1.0  # how often partitions are checked for stalls


class Pipeline:
    """One consumer replica: the stages and the loops that tie them together."""

    def __init__(self, settings: Settings, *, dispatcher: Dispatcher | None = None) -> None:
        """Build the stages; nothing connects until :meth:`run`."""
        self.settings = settings
        self.metrics = Metrics()
        self.dispatcher = dispatcher or Dispatcher(settings, metrics=self.metrics)
        # librdkafka's own log lines go through logging too (JSON, secrets masked), with
        # connection failures told once per outage rather than once per attempt.
        self.cluster = ClusterWatch()
        self._kafka_log = logging.getLogger("librdkafka")
        self._kafka_log.addFilter(self.cluster)
        kafka_common = {"logger": self._kafka_log}
        reports = ClientReports(self.metrics, self.cluster)
        exactly_once = settings.exactly_once
        self.publisher = Publisher(
            {
                **settings.producer_config(),
                **(transactional_config(settings) if exactly_once else {}),
                **kafka_common,
                "stats_cb": reports.producer_stats,
            },
            self.cluster,
            refused=self.delivery_failed,
        )
        self.source = Source(
            {
                **settings.consumer_config(),
                **kafka_common,
                "stats_cb": reports.consumer_stats,
                "error_cb": reports.consumer_error,
            },
            settings.requests_topic,
            self,
            callback_timeout_s=settings.rebalance_callback_timeout_s,
            reachable=lambda: self.cluster.reachable,
        )
        self.offsets = OffsetTracker()
        fair, resume = settings.fairness == "batches", settings.item_resume
        self.book = ChunkBook(settings.max_buffered_items, newcomers=fair, resume=resume)
        self.writer = RecordWriter(
            self.publisher.produce,
            self,
            self.metrics,
            results_topic=settings.results_topic,
            dlq_topic=settings.dlq_topic,
            record_limits=dict.fromkeys(
                (settings.results_topic, settings.dlq_topic), settings.max_result_bytes
            ),
            group_id=settings.group_id,
            produce_all=self.publisher.produce_all,
        )
        self.releaser = Releaser(self.publisher.produce) if exactly_once else None
        self.source.transactional = exactly_once
        self.writer.releaser = self.releaser
        self.committer = build_committer(
            settings,
            self.source,
            self.offsets,
            self.metrics,
            on_committed=self._committed,
            metadata_of=self._commit_metadata,
            transactional=None
            if self.releaser is None
            else (self.publisher, self.releaser, self.failed, self.cluster, self.book),
        )
        self.watch = StallWatch(ProgressMonitor(settings.stall_timeout_s))
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}"
        replica_header = (REPLICA_HEADER, self.replica_id.encode())
        self.jobs = Jobs(
            topic=settings.status_topic,
            consumer_config={**settings.consumer_config(), **kafka_common},
            publisher=self.publisher,
            metrics=self.metrics,
            failed=self.delivery_failed,
            on_cancel=lambda batch_id: self.intake.cancel_batch(batch_id),  # noqa: PLW0108 - intake comes later
            replica_header=replica_header,
            done_list=settings.status_done_list,
        )
        self.intake = Intake(
            settings,
            book=self.book,
            offsets=self.offsets,
            writer=self.writer,
            dispatcher=self.dispatcher,
            monitor=self.watch.monitor,
            failed=self.delivery_failed,
            replica_header=replica_header,
            jobs=self.jobs,
            metrics=self.metrics,
        )
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None
        self._forced = False
        self.drain = Drain(
            source=self.source,
            book=self.book,
            publisher=self.publisher,
            committer=self.committer,
            timeout_s=settings.drain_timeout_s,
            failed=lambda: self._fatal is not None,
        )
        self.rebalance = Rebalance(
            settings,
            offsets=self.offsets,
            book=self.book,
            intake=self.intake,
            monitor=self.watch.monitor,
            committer=self.committer,
            drain=self.drain,
            releaser=self.releaser,
            jobs=self.jobs,
            stopped=lambda: self._fatal is not None,
            forced=lambda: self._forced,
        )
        self.status = StatusBoard(
            source=self.source,
            book=self.book,
            dispatcher=self.dispatcher,
            cluster=self.cluster,
            watch=self.watch,
            metrics=self.metrics,
            fatal=lambda: self._fatal,
            stopping=self._stopping.is_set,
        )
        self.ops: OpsServer | None = None
        if settings.metrics_port >= 0:
            self.ops = OpsServer(self.status, settings.metrics_host, settings.metrics_port)

    # --- life cycle ----------------------------------------------------------------------

    @property
    def fatal(self) -> BaseException | None:
        """The error that stopped the replica, if any."""
        return self._fatal

    def stop(self) -> None:
        """Ask the replica to stop fetching and drain (idempotent)."""
        self.intake.open = False
        self._stopping.set()

    def force(self) -> None:
        """Stop now: cancel in-flight work and commit nothing more."""
        self._forced = True
        self.source.commit_on_revoke = False
        self.stop()
        self.book.cancel_all()

    async def run(self) -> None:
        """Run until stopped; raise :class:`DeliveryError` if a record could not be delivered."""
        settings = self.settings
        topics = [settings.requests_topic, settings.results_topic, settings.dlq_topic]
        await asyncio.to_thread(self.publisher.check_topics, topics)
        await self.writer.fit_record_limits(
            {**settings.producer_config(), "logger": self._kafka_log}
        )
        if isinstance(self.committer, TransactionalCommitter):
            await self.committer.start(settings.commit_timeout_s)
            log.warning("exactly-once mode keeps no batch status records yet (status scans)")
        else:
            await self.jobs.start(settings.requests_topic)
        await self.dispatcher.start()
        if self.ops is not None:
            await self.ops.start()
            log.info("operations server listening", extra={"port": self.ops.port})
        reports = asyncio.create_task(self.publisher.run(), name="delivery-reports")
        committer = asyncio.create_task(self.committer.run(), name="committer")
        watcher = asyncio.create_task(self._progress_loop(), name="progress")
        statuses = asyncio.create_task(self.jobs.run(), name="batch-status")
        try:
            await self.source.subscribe()
            log.info("consuming", extra={"topic": topics[0], "group": settings.group_id})
            await self._fetch_loop()
            await self.drain.run(committer, forced=lambda: self._forced)
        finally:
            for task in (committer, watcher, statuses):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.source.close(self.drain.time_left(floor_s=2.0))
            await self.publisher.flush(1.0)
            await self.jobs.close()
            reports.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reports
            await self.dispatcher.close()
            if self.ops is not None:
                await self.ops.stop()
            self._kafka_log.removeFilter(self.cluster)
        if self._fatal is not None:
            raise DeliveryError(str(self._fatal)) from self._fatal

    async def _fetch_loop(self) -> None:
        settings, source, book = self.settings, self.source, self.book
        while not self._stopping.is_set():
            committer = self.committer  # after an aborted transaction: redo from the commits
            if (
                isinstance(committer, TransactionalCommitter)
                and committer.rewind_needed.is_set()
                and await self.rebalance.rewind(sorted(source.assignment), source.rewind)
            ):
                committer.rewound()
            timeout = await apply_backpressure(
                source,
                book,
                held=self.dispatcher.fetch_on_hold,
                has_backlog=self.status.has_backlog,
                poll_timeout_s=min(settings.poll_timeout_s, committer.poll_budget()),
            )
            for msg in await source.fetch(book.fetch_size(settings.poll_batch), timeout):
                self.intake.take(msg)

    # --- delivery reports (the writer's listener) ------------------------------------------

    def chunk_delivered(self, chunk: Chunk) -> None:
        """Count the chunk in its batch's status; then mark its message done (if current)."""
        if self._fatal is None and self.book.current(chunk.tp, chunk.epoch):
            self.jobs.finished(chunk, lambda: self._chunk_counted(chunk))

    def _chunk_counted(self, chunk: Chunk) -> None:
        """Mark the chunk's message done, unless a delivery failed or its epoch is over."""
        if self._fatal is None and self.book.complete(chunk):
            self.offsets.done(chunk.tp[0], chunk.tp[1], chunk.offset)
            self.writer.done(chunk.tp, chunk.offset)
            self.metrics.chunks.labels("done").inc()

    def dead_letter_delivered(self, tp: PartitionKey, offset: int, epoch: int) -> None:
        """Mark a dead-lettered message done, unless a delivery failed or its epoch is over."""
        if self._fatal is None and self.book.current(tp, epoch):
            self.offsets.done(tp[0], tp[1], offset)
            self.writer.done(tp, offset)
            self.metrics.chunks.labels("dead_letter").inc()

    def delivery_failed(self, error: BaseException) -> None:
        """Stop without committing anything more: a record could not be delivered.

        In exactly-once mode a refused record aborts the transaction instead (renewing the
        producer if its error is fatal), and the replica rewinds to its committed offsets.
        """
        committer, failure = self.committer, kafka_error(error)
        if isinstance(committer, TransactionalCommitter):
            committer.abort_soon(f"a record was refused: {failure.str()}", renew=failure.fatal())
        else:
            self.failed(error, "a record could not be delivered: stopping without committing it")

    def failed(self, error: BaseException, message: str = "stopping") -> None:
        """Stop without committing anything more (the first error is the exit's reason)."""
        if self._fatal is None:
            self._fatal = error
            log.error(message, extra={"error": str(error)})
        self.stop()

    # --- progress --------------------------------------------------------------------------

    def _commit_metadata(self, tp: PartitionKey) -> Commit | None:
        return self.rebalance.commit_metadata(tp) if self.rebalance.resume else None

    def _committed(self, positions: dict[PartitionKey, int]) -> None:
        self.cluster.answered()
        now = time.monotonic()
        for tp in positions:
            self.watch.monitor.moved(tp, now)

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_CHECK_S)
            self.metrics.fold()  # the histograms' kept observations, into their buckets
            self.status.check_progress(time.monotonic(), self.settings.stall_timeout_s)

    # --- rebalance (called on the loop by the source; consumer.rebalance answers) ---------

    async def on_assigned(
        self, partitions: list[PartitionKey], committed: dict[PartitionKey, Commit]
    ) -> None:
        """Start bookkeeping for newly assigned partitions (see :class:`Rebalance`)."""
        await self.rebalance.on_assigned(partitions, committed)

    async def on_revoked(self, partitions: list[PartitionKey]) -> dict[PartitionKey, Commit]:
        """Let started work finish briefly; return what to commit (see :class:`Rebalance`)."""
        return await self.rebalance.on_revoked(partitions)

    async def on_lost(self, partitions: list[PartitionKey]) -> None:
        """Forget lost partitions: their work is redone by whoever owns them now."""
        await self.rebalance.on_lost(partitions)
