"""Wire the stages: source → splitter → dispatcher → publisher, and the committer.

One :class:`Pipeline` per replica. Its life is ``run()``: join the group, then fetch,
split, dispatch and publish until :meth:`Pipeline.stop` is called, then drain.

Delivery rules (the product's promise, see the README's "Delivery semantics"):

1. A request message is *done* when every record it caused (one result per item, one
   chunk summary; or its dead letter) has a positive delivery report.
2. Only the contiguous done prefix of each partition is committed
   (:class:`~consumer.offsets.OffsetTracker`): a later message finishing first never
   moves the committed offset past an unfinished one.
3. A failed delivery report stops the replica without marking its message done: the
   offset is never committed past an undelivered result, and the group redoes it.
4. Before a partition is revoked, its in-flight messages get ``revoke_grace_s`` (capped
   well inside ``max.poll.interval.ms``) to finish, then what is done is committed; the
   rest is redone by the new owner. Work that outlives its partition's assignment (the
   partition was revoked, maybe given back since) is stale: it never marks an offset done.
5. Liveness: nothing waits without a bound. Commits have a timeout; a drain keeps polling
   (all partitions paused) so that rebalances finish and commits are answered; every
   partition with work either moves or is reported stalled, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from confluent_kafka import KafkaException
from opentelemetry import propagate

from consumer.connectivity import ClusterWatch
from consumer.dispatcher import Dispatcher, Outcome
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker
from consumer.ops import OpsServer
from consumer.progress import ProgressMonitor, ReplicaState, Stall
from consumer.publisher import Publisher, topic_record_limits, usable_record_bytes
from consumer.source import TP, Source, message_error
from consumer.splitter import WorkUnit, items_per_request, split
from schemas import (
    BatchRequest,
    InvalidMessage,
    Limits,
    OkResultEncoder,
    dead_letter_headers,
    decode_batch_request,
    encode_error_result,
    encode_summary,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from confluent_kafka import KafkaError, Message

    from consumer.publisher import DeliveryCallback, Headers
    from consumer.settings import Endpoint, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

TRACE_HEADERS = ("traceparent", "tracestate")
REPLICA_HEADER = "batch-runner-replica"
# Paused partitions resume once the item buffer is below this share of its cap.
RESUME_FRACTION = 0.75
# The error kind of a result whose record would be over ``max_result_bytes``.
RESULT_TOO_LARGE = "result_too_large"
# How often partitions are checked for stalls.
PROGRESS_CHECK_S = 1.0
# Of the drain timeout, what is kept for flushing results, the last commit and leaving.
DRAIN_RESERVE_FRACTION = 0.2
DRAIN_RESERVE_MAX_S = 5.0
# How often a draining replica polls (serving rebalances and commit answers).
DRAIN_POLL_S = 0.1


def trace_context(msg: Message) -> dict[str, str]:
    """Return the W3C trace context of a request message, re-encoded for propagation.

    The OpenTelemetry API extracts it (an invalid ``traceparent`` yields nothing) and
    injects it again, so with an SDK installed the same code carries real spans; without
    one the context passes through unchanged.
    """
    headers = msg.headers()
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, dict) else headers
    carrier = {
        key: value.decode("latin-1")
        for key, value in pairs
        if key in TRACE_HEADERS and isinstance(value, bytes)
    }
    if not carrier:
        return {}
    out: dict[str, str] = {}
    propagate.inject(out, context=propagate.extract(carrier))
    return out


class FatalError(RuntimeError):
    """The replica cannot go on safely (a result could not be delivered)."""


@dataclass(slots=True, eq=False)
class Chunk:
    """Progress of one request message: items still to answer, records still unacknowledged.

    Kept in one place so that item-level progress can later be serialised (resume after a
    crash without redoing answered items). ``epoch`` is the assignment epoch of its
    partition when it was received.
    """

    tp: TP
    offset: int
    request: BatchRequest
    trace_headers: Headers
    created_ms: int
    epoch: int
    pending_items: int = field(init=False)
    unacked: int = 0
    ok_count: int = 0
    error_count: int = 0
    summary_sent: bool = False
    abandoned: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        """Every item is still to be answered."""
        self.pending_items = len(self.request.items)


class Pipeline:
    """One consumer replica: the stages and the bookkeeping that ties them together."""

    def __init__(
        self,
        settings: Settings,
        *,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        """Build the stages; nothing connects until :meth:`run`."""
        self.settings = settings
        self.metrics = Metrics()
        self.limits = Limits(max_message_bytes=settings.max_message_bytes)
        self.dispatcher = dispatcher or Dispatcher(settings, metrics=self.metrics)
        # librdkafka's own log lines go through logging too (JSON, secrets masked), with
        # connection failures told once per outage rather than once per attempt.
        self.cluster = ClusterWatch()
        self._kafka_log = logging.getLogger("librdkafka")
        self._kafka_log.addFilter(self.cluster)
        self.publisher = Publisher(
            {
                **settings.producer_config(),
                "stats_cb": self._producer_stats,
                "logger": self._kafka_log,
            },
            self.cluster,
        )
        self.source = Source(
            {
                **settings.consumer_config(),
                "stats_cb": self._consumer_stats,
                "error_cb": self._consumer_error,
                "logger": self._kafka_log,
            },
            settings.requests_topic,
            self,
            callback_timeout_s=settings.rebalance_callback_timeout_s,
        )
        self.ops: OpsServer | None = None
        if settings.metrics_port >= 0:
            self.ops = OpsServer(self, settings.metrics_host, settings.metrics_port)
        self.offsets = OffsetTracker()
        # Largest record value (with key) written per topic: max_result_bytes, lowered at
        # start-up to what each topic accepts (_fit_record_limits).
        self.record_limits = {
            settings.results_topic: settings.max_result_bytes,
            settings.dlq_topic: settings.max_result_bytes,
        }
        self.chunks: dict[TP, dict[int, Chunk]] = {}
        # Assignment epoch of each assigned partition: it increases on every assignment,
        # so work that outlives a revoke is recognised as stale.
        self._epochs: dict[TP, int] = {}
        self._epoch_counter = 0
        self.progress = ProgressMonitor(settings.stall_timeout_s)
        self.stalls: dict[TP, Stall] = {}
        self._drain_deadline: float | None = None
        self.buffered_items = 0
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()  # set when the item buffer has room again
        self._partition_idle: dict[TP, asyncio.Event] = {}
        self._fatal: BaseException | None = None
        self._forced = False
        self._items_per_message = 0.0  # running average (0: none seen yet), sizes fetches
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}"
        self._replica_header = (REPLICA_HEADER, self.replica_id.encode())

    # --- life cycle ---------------------------------------------------------------------

    @property
    def fatal(self) -> BaseException | None:
        """The error that stopped the replica, if any."""
        return self._fatal

    @property
    def stopping(self) -> bool:
        """Whether the replica was asked to stop (it may still be draining)."""
        return self._stopping.is_set()

    def _consumer_stats(self, text: str) -> None:
        self.cluster.statistics(self.metrics.consumer_stats(text).get("brokers", {}))

    def _producer_stats(self, text: str) -> None:
        self.cluster.statistics(self.metrics.producer_stats(text).get("brokers", {}))

    def _consumer_error(self, error: KafkaError) -> None:
        if not self.cluster.error(error):
            extra = {"error": error.str(), "fatal": error.fatal()}
            log.warning("Kafka consumer error", extra=extra)

    def refresh_gauges(self) -> None:
        """Bring the gauges up to date (called when metrics are scraped)."""
        m = self.metrics
        m.in_flight.set(self.dispatcher.limiter.in_use)
        m.in_flight_limit.set(self.dispatcher.limiter.limit)
        m.buffered_items.set(self.buffered_items)
        m.paused_partitions.set(len(self.source.paused))
        m.assigned_partitions.set(len(self.source.assignment))
        m.stalled_partitions.set(len(self.stalls))

    def stop(self) -> None:
        """Ask the replica to stop fetching and drain (idempotent)."""
        self._stopping.set()

    def force(self) -> None:
        """Stop now: cancel in-flight work and commit nothing more."""
        self._forced = True
        self.source.commit_on_revoke = False
        self._stopping.set()
        self._abandon_all()

    async def run(self) -> None:
        """Run until stopped; raise :class:`FatalError` if a result could not be delivered."""
        await asyncio.to_thread(
            self.publisher.check_topics,
            [self.settings.requests_topic, self.settings.results_topic, self.settings.dlq_topic],
        )
        await self._fit_record_limits()
        await self.dispatcher.start()
        if self.ops is not None:
            await self.ops.start()
            log.info("operations server listening", extra={"port": self.ops.port})
        reports = asyncio.create_task(self.publisher.run(), name="delivery-reports")
        committer = asyncio.create_task(self._commit_loop(), name="committer")
        watcher = asyncio.create_task(self._progress_loop(), name="progress")
        try:
            await self.source.subscribe()
            log.info(
                "consuming",
                extra={"topic": self.settings.requests_topic, "group": self.settings.group_id},
            )
            await self._fetch_loop()
            await self._drain(committer)
        finally:
            for task in (committer, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.source.close(self._time_left(floor_s=2.0))
            await self.publisher.flush(1.0)
            reports.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reports
            await self.dispatcher.close()
            if self.ops is not None:
                await self.ops.stop()
            self._kafka_log.removeFilter(self.cluster)
        if self._fatal is not None:
            raise FatalError(str(self._fatal)) from self._fatal

    async def _fit_record_limits(self) -> None:
        """Lower the record limits to what the results and dead-letter topics accept.

        A record over a topic's ``max.message.bytes`` is refused by the broker, which
        stops the replica at the same offset on every restart; below the limit it becomes
        a ``result_too_large`` error or a dead letter without its value instead.
        """
        settings = self.settings
        topics = {"results": settings.results_topic, "dead-letter": settings.dlq_topic}
        config = {**settings.producer_config(), "logger": logging.getLogger("librdkafka")}
        found = await asyncio.to_thread(topic_record_limits, config, list(topics.values()))
        for role, topic in topics.items():
            if topic not in found:
                continue
            usable = usable_record_bytes(found[topic])
            if usable < self.record_limits[topic]:
                self.record_limits[topic] = max(usable, 1)
                log.warning(
                    "a topic takes smaller records than max_result_bytes: limit lowered",
                    extra={
                        "role": role,
                        "topic": topic,
                        "max_message_bytes": found[topic],
                        "record_limit": self.record_limits[topic],
                    },
                )

    async def _fetch_loop(self) -> None:
        settings = self.settings
        while not self._stopping.is_set():
            await self._apply_backpressure()
            timeout = settings.poll_timeout_s
            if self.source.paused:
                # Full: wait for room on the loop (woken the moment a chunk completes), and
                # still poll the consumer now and then so the replica stays in its group.
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), settings.poll_timeout_s)
                timeout = 0.0
            messages = await self.source.fetch(self._fetch_size(), timeout)
            for msg in messages:
                self._on_message(msg)

    def _fetch_size(self) -> int:
        """Fetch no more messages than the item buffer has room for (at least one).

        The room is turned into a message count with the average items per message seen
        so far, so a backlog of large chunks is never pulled into memory at once.
        """
        room = self.settings.max_buffered_items - self.buffered_items
        if room <= 0 or self._items_per_message == 0:
            return 1
        return max(1, min(self.settings.poll_batch, int(room / self._items_per_message)))

    def _time_left(self, floor_s: float = 0.0) -> float:
        """Seconds left before the drain deadline (at least ``floor_s``)."""
        if self._drain_deadline is None:
            return max(floor_s, self.settings.drain_timeout_s)
        return max(floor_s, self._drain_deadline - asyncio.get_running_loop().time())

    async def _drain(self, committer: asyncio.Task[None]) -> None:
        """Finish in-flight work within ``drain_timeout_s``, still serving the group.

        1. Hand back the chunks nothing was published for yet (see
           :meth:`_hand_back_untouched`): the group redoes them, and nothing repeats.
        2. Pause every assigned partition and keep polling: rebalances finish (a member
           that stops polling holds a rebalance up for everyone) and commit answers come.
           Wait for the rest until the deadline, less a reserve for the steps below.
        3. Abandon what is left (it is not committed: the group redoes it).
        4. Flush the results, commit what is done (still polling), then leave the group.
        """
        loop = asyncio.get_running_loop()
        timeout = self.settings.drain_timeout_s
        self._drain_deadline = loop.time() + timeout
        handed_back = self._hand_back_untouched(list(self.chunks))
        log.info(
            "draining",
            extra={"buffered_items": self.buffered_items, "handed_back_items": handed_back},
        )
        reserve = min(DRAIN_RESERVE_MAX_S, timeout * DRAIN_RESERVE_FRACTION)
        work_deadline = self._drain_deadline - reserve
        while self.buffered_items > 0 and not self._forced and self._fatal is None:
            if loop.time() >= work_deadline:
                log.warning(
                    "drain timeout: unfinished work will be redone by the group",
                    extra={"buffered_items": self.buffered_items},
                )
                break
            await self._poll_paused()
        self._abandon_all()
        if self._forced:
            return
        await self._poll_while(self.publisher.flush(max(0.0, self._time_left() - 1.0)))
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        if self._fatal is None:
            await self._poll_while(self._commit_now(timeout_s=self._time_left(floor_s=1.0)))

    async def _poll_paused(self) -> None:
        """Poll once with every assigned partition paused; whatever arrives is not taken."""
        await self.source.pause(sorted(self.source.assignment))
        # A message fetched before the pause is dropped untracked: its offset is never
        # committed, so the group delivers it again.
        await self.source.fetch(1, DRAIN_POLL_S)

    async def _poll_while(self, work: Awaitable[T]) -> T:
        """Await ``work`` while polling (paused), so commits are answered and rebalances served."""
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        while not task.done():
            await self._poll_paused()
        return task.result()

    def _hand_back_untouched(self, partitions: list[TP]) -> int:
        """Drop, per partition, every chunk from the first one with no result published.

        Such a chunk is never committed, so the group redoes it and everything after it;
        finishing the chunks after it would only publish results that are repeated then.
        Chunks before it (partly published) are left to finish, so that what was
        published is committed instead of repeated. Returns the items handed back.
        """
        handed = 0
        for tp in partitions:
            by_offset = self.chunks.get(tp)
            if not by_offset:
                continue
            cut = False
            for offset in sorted(by_offset):
                chunk = by_offset[offset]
                cut = cut or (chunk.pending_items == len(chunk.request.items) and not chunk.unacked)
                if cut:
                    handed += len(chunk.request.items)
                    self._abandon(chunk)
        return handed

    def _abandon(self, chunk: Chunk) -> None:
        """Stop working on ``chunk``: cancel its units and forget it (never marked done)."""
        chunk.abandoned = True
        for task in chunk.tasks:
            task.cancel()
        self._forget(chunk)

    def _abandon_all(self) -> None:
        for by_offset in self.chunks.values():
            for chunk in by_offset.values():
                chunk.abandoned = True
                for task in chunk.tasks:
                    task.cancel()

    # --- messages ------------------------------------------------------------------------

    def _accept(self, tp: TP, offset: int) -> int | None:
        """Track a fetched message; return its assignment epoch, or None to leave it.

        A message is left (never tracked, so never committed) when its partition is not
        assigned here any more, the replica is draining, or it is already in hand.
        """
        epoch = self._epochs.get(tp)
        if epoch is None or self._stopping.is_set():
            return None
        self.progress.moved(tp, time.monotonic())
        try:
            tracked = self.offsets.add(tp[0], tp[1], offset)
        except ValueError:
            tracked = False  # redelivered below what is tracked (a seek): already in hand
        return epoch if tracked else None

    def _on_message(self, msg: Message) -> None:
        err = message_error(msg)
        if err is not None:
            if err.fatal():
                self._fail(KafkaException(err))
            else:
                log.warning("consumer error", extra={"error": str(err)})
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            return
        tp = (topic, partition)
        epoch = self._accept(tp, offset)
        if epoch is None:
            return
        value = msg.value() or b""
        try:
            request = decode_batch_request(value, self.limits)
        except InvalidMessage as exc:
            self._dead_letter(msg, tp, offset, exc, epoch)
            return
        trace = trace_context(msg)
        created_ms = msg.timestamp()[1]
        record_headers: Headers = [
            self._replica_header,
            *((k, v.encode()) for k, v in trace.items()),
        ]
        chunk = Chunk(tp, offset, request, record_headers, created_ms, epoch)
        self.chunks.setdefault(tp, {})[offset] = chunk
        self.buffered_items += len(request.items)
        if self._items_per_message == 0:
            self._items_per_message = float(len(request.items))
        self._items_per_message += (len(request.items) - self._items_per_message) * 0.1
        endpoint = self.settings.endpoint_for(request.target)
        if endpoint is None:
            outcome = Outcome(
                predictions=None,
                attempts=0,
                latency_ms=0.0,
                error_kind="unknown_target",
                error_message=f"target {request.target!r} is not configured on this consumer",
            )
            self._publish(chunk, WorkUnit(0, request.items), outcome)
            return
        size = items_per_request(
            request.items_per_request,
            self.settings.items_per_request,
            self.settings.max_items_per_request,
        )
        http_headers = trace or None
        for unit in split(request.items, size):
            task = asyncio.create_task(self._process(chunk, endpoint, unit, http_headers))
            chunk.tasks.add(task)
            task.add_done_callback(chunk.tasks.discard)

    async def _process(
        self,
        chunk: Chunk,
        endpoint: Endpoint,
        unit: WorkUnit,
        headers: dict[str, str] | None,
    ) -> None:
        outcome = await self.dispatcher.run(endpoint, unit.items, headers)
        if chunk.abandoned:
            return
        try:
            self._publish(chunk, unit, outcome)
        except Exception as exc:  # noqa: BLE001 - a chunk that cannot finish must not hang
            # librdkafka refused a record outright: the chunk can never be done, so stop
            # (its offset stays uncommitted) rather than leave the partition stuck.
            self._fail(exc)

    def _publish(self, chunk: Chunk, unit: WorkUnit, outcome: Outcome) -> None:
        """Produce one result per item of ``unit`` and, after the chunk's last, its summary."""
        request = chunk.request
        first = request.start + unit.offset
        count = len(unit.items)
        predictions = outcome.predictions
        if predictions is not None:
            encode = OkResultEncoder(
                request, outcome.attempts, outcome.latency_ms, outcome.queue_ms
            )
            values = [encode(first + i, p) for i, p in enumerate(predictions)]
            errors = self._replace_oversized(request, first, values, outcome)
        else:
            values = [
                encode_error_result(
                    request,
                    first + i,
                    outcome.error_kind or "unknown",
                    outcome.error_message or "",
                    outcome.http_status,
                    outcome.attempts,
                    outcome.latency_ms,
                    outcome.queue_ms,
                )
                for i in range(count)
            ]
            errors = count
        topic = self.settings.results_topic
        key = request.batch_id
        headers = chunk.trace_headers
        on_delivery = self._delivery_callback(chunk)
        produce = self.publisher.produce
        chunk.unacked += count
        for value in values:
            produce(topic, value, key, on_delivery, headers)
        chunk.ok_count += count - errors
        chunk.error_count += errors
        if errors < count:
            self.metrics.items_ok.inc(count - errors)
        if errors:
            self.metrics.items_error.inc(errors)
        if chunk.created_ms > 0:
            self.metrics.item_latency.observe(max(0.0, time.time() - chunk.created_ms / 1000))
        self.progress.moved(chunk.tp, time.monotonic())
        chunk.pending_items -= count
        if chunk.pending_items == 0:
            summary = encode_summary(request, chunk.ok_count, chunk.error_count)
            chunk.unacked += 1
            chunk.summary_sent = True
            produce(topic, summary, key, on_delivery, headers)

    def _replace_oversized(
        self,
        request: BatchRequest,
        first: int,
        values: list[bytes],
        outcome: Outcome,
    ) -> int:
        """Turn results over ``max_result_bytes`` into ``result_too_large`` errors; count them.

        The results topic would refuse such a record, and a refused record stops the
        replica: an error result tells the user instead, and the batch goes on.
        """
        limit = self.record_limits[self.settings.results_topic]
        replaced = 0
        for i, value in enumerate(values):
            if len(value) > limit:
                values[i] = encode_error_result(
                    request,
                    first + i,
                    RESULT_TOO_LARGE,
                    f"the prediction makes a result record of {len(value)} bytes, over the "
                    f"{limit}-byte limit (BATCH_RUNNER_MAX_RESULT_BYTES, or less if the "
                    "results topic's max.message.bytes leaves less room)",
                    None,
                    outcome.attempts,
                    outcome.latency_ms,
                    outcome.queue_ms,
                )
                replaced += 1
        return replaced

    def _delivery_callback(self, chunk: Chunk) -> DeliveryCallback:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            chunk.unacked -= 1
            if err is not None:
                self._fail(KafkaException(err))
                return
            if chunk.unacked == 0 and chunk.summary_sent:
                self._chunk_done(chunk)

        return on_delivery

    def _current(self, tp: TP, epoch: int) -> bool:
        """Whether work started in ``epoch`` still belongs to the partition's assignment."""
        return self._epochs.get(tp) == epoch

    def _chunk_done(self, chunk: Chunk) -> None:
        if self._fatal is not None:
            return  # never mark anything done once a delivery failed
        if chunk.abandoned or not self._current(chunk.tp, chunk.epoch):
            return  # its partition was revoked meanwhile: the new owner redoes it
        topic, partition = chunk.tp
        self.offsets.done(topic, partition, chunk.offset)
        self.metrics.chunks.labels("done").inc()
        self._forget(chunk)

    def _forget(self, chunk: Chunk) -> None:
        by_offset = self.chunks.get(chunk.tp)
        if by_offset is not None and by_offset.pop(chunk.offset, None) is not None:
            self.buffered_items -= len(chunk.request.items)
            if self.buffered_items < self._resume_below():
                self._room.set()
            if not by_offset:
                event = self._partition_idle.get(chunk.tp)
                if event is not None:
                    event.set()

    def _dead_letter(
        self,
        msg: Message,
        tp: TP,
        offset: int,
        exc: InvalidMessage,
        epoch: int,
    ) -> None:
        """Copy an invalid request to the dead-letter topic; its offset is done once acked.

        An original too large to copy (over ``max_result_bytes``, the largest record the
        replica writes) would be refused by Kafka on every attempt, stopping the replica
        at the same offset again and again. Its dead letter carries no value instead, and
        the reason says where the original still is.
        """
        value = msg.value() or b""
        key = msg.key()
        size = len(value) + len(key or b"")
        limit = self.record_limits[self.settings.dlq_topic]
        if size > limit:
            exc = InvalidMessage(
                exc.kind,
                f"{exc.reason}; the original ({size} bytes with its key) is over the "
                f"{limit}-byte record limit (BATCH_RUNNER_MAX_RESULT_BYTES, or less if the "
                "dead-letter topic's max.message.bytes leaves less room), so this dead "
                "letter carries no value: read it at its source offset",
            )
            value = b""
            if key is not None and len(key) > limit // 2:
                key = None
        self.metrics.dead_letters.labels(exc.kind).inc()
        log.warning(
            "invalid request sent to the dead-letter topic",
            extra={"partition": tp[1], "offset": offset, "reason": exc.reason},
        )
        headers = dead_letter_headers(
            exc,
            source_topic=tp[0],
            source_partition=tp[1],
            source_offset=offset,
            group=self.settings.group_id,
        )

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._fail(KafkaException(err))
            elif self._fatal is None and self._current(tp, epoch):
                self.offsets.done(tp[0], tp[1], offset)
                self.metrics.chunks.labels("dead_letter").inc()

        self.publisher.produce(
            self.settings.dlq_topic,
            value,
            key,
            on_delivery,
            [*headers],
        )

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            log.error(
                "a record could not be delivered: stopping without committing it",
                extra={"error": str(exc)},
            )
        self._stopping.set()

    # --- backpressure ----------------------------------------------------------------------

    def _resume_below(self) -> float:
        return self.settings.max_buffered_items * RESUME_FRACTION

    async def _apply_backpressure(self) -> None:
        assigned = sorted(self.source.assignment)
        if self.buffered_items >= self.settings.max_buffered_items:
            if len(self.source.paused) < len(assigned):
                await self.source.pause(assigned)
                log.debug("paused fetching", extra={"buffered_items": self.buffered_items})
        elif self.source.paused and self.buffered_items < self._resume_below():
            await self.source.resume(sorted(self.source.paused))
            log.debug("resumed fetching", extra={"buffered_items": self.buffered_items})

    # --- commits ---------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            await self._commit_now()

    async def _commit_now(self, timeout_s: float | None = None) -> None:
        # 1. what is done and contiguous since the last commit (never past unfinished work)
        positions = self.offsets.commit_positions()
        positions = {tp: o for tp, o in positions.items() if tp in self.source.assignment}
        if not positions:
            return
        # 2. commit, waiting a bounded time for the answer (the consumer thread keeps
        #    polling meanwhile); on failure keep the positions for the next round
        result = await self.source.commit(positions, timeout_s or self.settings.commit_timeout_s)
        if result.error is not None:
            level = logging.INFO if result.retriable else logging.WARNING
            log.log(level, "commit failed; will retry", extra={"error": result.error.str()})
        if not result.committed:
            return
        # 3. remember what the broker took, so it is not committed again
        self.cluster.answered()
        self.offsets.mark_committed(result.committed)
        self.metrics.commits.inc()
        now = time.monotonic()
        for tp, position in result.committed.items():
            self.progress.moved(tp, now)
            self.metrics.committed_offset.labels(tp[0], str(tp[1])).set(position)

    # --- progress ---------------------------------------------------------------------

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_CHECK_S)
            self.check_progress(time.monotonic())

    def check_progress(self, now: float) -> dict[TP, Stall]:
        """Find stalled partitions; log each stall when it starts and ends."""
        window = self.settings.stall_timeout_s
        replica = ReplicaState(
            buffer_full=self.buffered_items >= self.settings.max_buffered_items,
            model_failing=self.dispatcher.failing(window, now),
        )
        stalls = self.progress.check(now, self._has_work, replica)
        for tp, stall in stalls.items():
            if tp not in self.stalls or self.stalls[tp].why is not stall.why:
                log.warning(
                    "partition stalled",
                    extra={
                        "partition": f"{tp[0]}[{tp[1]}]",
                        "seconds": round(stall.seconds, 1),
                        "why": str(stall.why),
                        "paused": tp in self.source.paused,
                        "in_flight_chunks": len(self.chunks.get(tp, {})),
                    },
                )
        for tp in self.stalls.keys() - stalls.keys():
            log.info("partition moving again", extra={"partition": f"{tp[0]}[{tp[1]}]"})
        self.stalls = stalls
        return stalls

    def _has_work(self, tp: TP) -> bool:
        """Whether ``tp`` has chunks in flight or messages not yet fetched."""
        return bool(self.chunks.get(tp)) or self.metrics.unfetched.get(tp, 0) > 0

    # --- rebalance (called on the loop by the source) --------------------------------------

    async def on_assigned(self, partitions: list[TP]) -> None:
        """Start bookkeeping for newly assigned partitions, each in a new epoch."""
        self.offsets.assign(partitions)
        for tp in partitions:
            self._epoch_counter += 1
            self._epochs[tp] = self._epoch_counter
        self.progress.assign(partitions, time.monotonic())

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, int]:
        """Let in-flight work of ``partitions`` finish briefly; return what to commit.

        Chunks with nothing published yet are handed back at once; the others get
        ``revoke_grace_s`` capped at a quarter of ``max.poll.interval.ms`` (the group's
        rebalance timeout), and while draining at the drain's time left.
        """
        grace = 0.0 if self._forced else self.settings.effective_revoke_grace_s
        if self._drain_deadline is not None:
            grace = min(grace, self._time_left())
        self._hand_back_untouched(partitions)
        busy = [tp for tp in partitions if self.chunks.get(tp)]
        if busy and grace > 0:
            events = []
            for tp in busy:
                event = self._partition_idle.setdefault(tp, asyncio.Event())
                event.clear()
                events.append(event.wait())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*events), grace)
        positions = self.offsets.revoke(partitions)
        self._drop(partitions)
        return {} if self._forced or self._fatal is not None else positions

    async def on_lost(self, partitions: list[TP]) -> None:
        """Forget lost partitions: their work is redone by whoever owns them now."""
        self.offsets.revoke(partitions)
        self._drop(partitions)

    def _drop(self, partitions: list[TP]) -> None:
        self.progress.forget(partitions)
        for tp in partitions:
            self._epochs.pop(tp, None)
            for chunk in list(self.chunks.get(tp, {}).values()):
                self._abandon(chunk)
            self.chunks.pop(tp, None)
            self._partition_idle.pop(tp, None)
