"""The record writer: results, chunk summaries and dead letters, within the record limits.

Everything the replica writes to Kafka goes through :class:`RecordWriter`. It encodes the
records, keeps each under its topic's record limit (a prediction too large becomes a
``result_too_large`` error; an invalid request too large to copy becomes a dead letter
without its value), hands them to a ``produce`` function (the results producer's, or a
fake one in tests) and turns the delivery reports into three events for its
:class:`WriterListener`: a chunk whose records are all acknowledged, a dead letter that is,
and a delivery that failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaException

from consumer.deliveries import (
    ok_record_delivered,
    record_callback,
    summary_callback,
    unit_callback,
)
from consumer.publisher import topic_record_limits, usable_record_bytes
from consumer.unit_records import encode_unit, one_ok
from schemas import (
    InvalidMessage,
    ResultErrorKind,
    dead_letter_headers,
    encode_summary,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from confluent_kafka import KafkaError, Message

    from consumer.annotations import Annotation
    from consumer.chunk import Chunk
    from consumer.metrics import Metrics
    from consumer.offsets import PartitionKey
    from consumer.outcome import Outcome
    from consumer.publisher import DeliveryCallback, Headers, Produce, ProduceAll
    from consumer.releaser import Record, Releaser
    from consumer.splitter import WorkUnit

log = logging.getLogger(__name__)


class WriterListener(Protocol):
    """What the pipeline does with delivery reports (called on the event loop)."""

    def chunk_delivered(self, chunk: Chunk) -> None:
        """Take a chunk whose results and summary are all acknowledged."""

    def dead_letter_delivered(self, tp: PartitionKey, offset: int, epoch: int) -> None:
        """Take the acknowledgement of the dead letter of the message at ``tp``/``offset``."""

    def delivery_failed(self, error: BaseException) -> None:
        """Take a refused record: nothing after it may be committed."""


class RecordWriter:
    """Encodes and produces the replica's records; reports their deliveries."""

    def __init__(  # noqa: PLR0913 - the writer's collaborators, each named
        self,
        produce: Produce,
        listener: WriterListener,
        metrics: Metrics,
        *,
        results_topic: str,
        dlq_topic: str,
        record_limits: Mapping[str, int],
        group_id: str,
        produce_all: ProduceAll | None = None,
    ) -> None:
        """Write results to ``results_topic`` and dead letters to ``dlq_topic``.

        ``record_limits`` maps each topic to the largest record value (with its key) it
        may be sent; the pipeline lowers them at start-up to what the topics accept.
        ``produce_all`` produces a unit's results in one call (the publisher's); without
        it they go through ``produce`` one by one.
        """
        self._produce = produce
        self._produce_all = produce_all or self._produce_each
        self._listener = listener
        self._metrics = metrics
        self.results_topic = results_topic
        self.dlq_topic = dlq_topic
        self.record_limits = dict(record_limits)
        self._group_id = group_id
        self.releaser: Releaser | None = None  # exactly-once mode: set by the pipeline

    async def fit_record_limits(self, producer_config: dict[str, Any]) -> None:
        """Lower the record limits to what the results and dead-letter topics accept.

        A record over a topic's ``max.message.bytes`` is refused by the broker, which
        stops the replica at the same offset on every restart; below the limit it becomes
        a ``result_too_large`` error or a dead letter without its value instead.
        ``producer_config`` reaches the cluster to read the topics' configuration.
        """
        limits = self.record_limits
        found = await asyncio.to_thread(topic_record_limits, producer_config, list(limits))
        for topic, max_message_bytes in found.items():
            usable = usable_record_bytes(max_message_bytes)
            if usable < limits[topic]:
                limits[topic] = max(usable, 1)
                log.warning(
                    "a topic takes smaller records than max_result_bytes: limit lowered",
                    extra={
                        "topic": topic,
                        "max_message_bytes": max_message_bytes,
                        "record_limit": limits[topic],
                    },
                )

    def write_unit(self, chunk: Chunk, unit: WorkUnit, outcome: Outcome) -> None:
        """Produce one result per item of ``unit`` and, after the chunk's last, its summary."""
        predictions = outcome.predictions
        if predictions is not None and len(unit.items) == 1 and self.releaser is None:
            limit = self.record_limits[self.results_topic]
            value = one_ok(chunk.request, unit, outcome, predictions[0], limit)
            if value is not None:  # the usual answer at one item per request: one plain record
                chunk.unacked += 1
                on_delivery = partial(ok_record_delivered, self._listener, chunk, unit.offset)
                self._produce(
                    self.results_topic, value, chunk.request.batch_id, on_delivery,
                    chunk.trace_headers,
                )  # fmt: skip
                chunk.ok_count += 1
                metrics = self._metrics
                metrics.published += 1
                metrics.items_ok.value += 1
                if chunk.created_ms > 0:
                    metrics.item_latency.observe(max(0.0, time.time() - chunk.created_ms / 1000))
                chunk.pending_items -= 1
                if chunk.pending_items == 0:
                    self.write_summary(chunk)
                return
        self._write_records(chunk, unit, outcome)

    def _write_records(self, chunk: Chunk, unit: WorkUnit, outcome: Outcome) -> None:
        """:meth:`write_unit` of any unit: annotated, errors, too large, exactly-once mode."""
        request = chunk.request
        count = len(unit.items)
        limit = self.record_limits[self.results_topic]
        values, errors, notes = encode_unit(request, unit, outcome, limit)
        if notes is not None:
            self._count_tokens(notes)
        stopped = (0, 0)
        if outcome.error_kind == ResultErrorKind.CANCELLED:
            chunk.cancelled_count += count
            stopped = (count, 0)
        elif outcome.error_kind == ResultErrorKind.EXPIRED:
            chunk.expired_count += count
            stopped = (0, count)
        on_delivery = (
            record_callback(self._listener, chunk, unit.offset, (errors, stopped))
            if count == 1
            else unit_callback(self._listener, chunk, unit.offset, count, (errors, stopped))
        )
        topic, key, headers = self.results_topic, request.batch_id, chunk.trace_headers
        chunk.unacked += count
        if self.releaser is None:
            self._produce_all(topic, values, key, on_delivery, headers)
        else:
            for value in values:
                self.releaser.add(chunk.tp, chunk.offset, (topic, value, key, on_delivery, headers))
        chunk.ok_count += count - errors
        chunk.error_count += errors
        metrics = self._metrics
        metrics.published += count
        if errors < count:
            metrics.items_ok.value += count - errors  # (inc() without its call: never < 0)
        if errors:
            metrics.items_error.inc(errors)
        if chunk.created_ms > 0:
            metrics.item_latency.observe(max(0.0, time.time() - chunk.created_ms / 1000))
        chunk.pending_items -= count
        if chunk.pending_items == 0:
            self.write_summary(chunk)

    def write_summary(self, chunk: Chunk) -> None:
        """Produce the summary of a chunk whose items all have results.

        Its counts include the items a previous owner answered, on a resume: the summary
        accounts for every item of the chunk, whoever wrote their results.
        """
        request = chunk.request
        summary = encode_summary(
            request,
            chunk.ok_count,
            chunk.error_count,
            cancelled=chunk.cancelled_count,
            expired=chunk.expired_count,
            source=(chunk.tp[1], chunk.offset),
        )
        chunk.unacked += 1
        chunk.summary_sent = True
        on_delivery = summary_callback(self._listener, chunk)
        record = (self.results_topic, summary, request.batch_id, on_delivery, chunk.trace_headers)
        self._emit(chunk.tp, chunk.offset, record)
        if self.releaser is not None:
            self.releaser.finish(chunk.tp, chunk.offset, lambda: not chunk.abandoned)

    def _emit(self, tp: PartitionKey, offset: int, record: Record) -> None:
        """Produce a record now, or hold it for its message's turn (exactly-once mode)."""
        if self.releaser is None:
            self._produce(*record)
        else:
            self.releaser.add(tp, offset, record)

    def _produce_each(
        self,
        topic: str,
        values: Sequence[bytes],
        key: str,
        on_delivery: DeliveryCallback,
        headers: Headers | None,
    ) -> None:
        for value in values:
            self._produce(topic, value, key, on_delivery, headers)

    def expect(self, tp: PartitionKey, offset: int) -> None:
        """Note a received message (exactly-once mode releases records in offset order)."""
        if self.releaser is not None:
            self.releaser.expect(tp, offset)

    def done(self, tp: PartitionKey, offset: int) -> None:
        """Note that the message's records are acknowledged and its offset done."""
        if self.releaser is not None:
            self.releaser.done(tp, offset)

    def _count_tokens(self, notes: list[Annotation]) -> None:
        """Add the answers' token usage to the metric (``kind``: prompt or completion)."""
        prompt = completion = 0
        for note in notes:
            if note.usage is not None:
                prompt += note.usage.prompt_tokens
                completion += note.usage.completion_tokens
        if prompt:
            self._metrics.tokens.labels("prompt").inc(prompt)
        if completion:
            self._metrics.tokens.labels("completion").inc(completion)

    def dead_letter(  # noqa: PLR0913 - where the message came from, and what it was
        self,
        tp: PartitionKey,
        offset: int,
        epoch: int,
        *,
        key: bytes | None,
        value: bytes,
        error: InvalidMessage,
    ) -> None:
        """Copy an invalid request to the dead-letter topic, with the reason in headers.

        An original too large to copy (over the dead-letter topic's record limit) would be
        refused by Kafka on every attempt, stopping the replica at the same offset again
        and again. Its dead letter carries no value instead, and the reason says where the
        original still is.
        """
        size = len(value) + len(key or b"")
        limit = self.record_limits[self.dlq_topic]
        if size > limit:
            error = InvalidMessage(
                error.kind,
                f"{error.reason}; the original ({size} bytes with its key) is over the "
                f"{limit}-byte record limit (BATCH_RUNNER_MAX_RESULT_BYTES, or less if the "
                "dead-letter topic's max.message.bytes leaves less room), so this dead "
                "letter carries no value: read it at its source offset",
            )
            value = b""
            if key is not None and len(key) > limit // 2:
                key = None
        self._metrics.dead_letters.labels(error.kind).inc()
        log.warning(
            "invalid request sent to the dead-letter topic",
            extra={"partition": tp[1], "offset": offset, "reason": error.reason},
        )
        headers = dead_letter_headers(
            error,
            source_topic=tp[0],
            source_partition=tp[1],
            source_offset=offset,
            group=self._group_id,
        )
        listener = self._listener

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                listener.delivery_failed(KafkaException(err))
            else:
                listener.dead_letter_delivered(tp, offset, epoch)

        self._emit(tp, offset, (self.dlq_topic, value, key, on_delivery, [*headers]))
        if self.releaser is not None:
            self.releaser.finish(tp, offset, lambda: True)  # a revoke drops it unreleased
