"""Read the results topic without joining a consumer group, and track batches.

:class:`TopicReader` assigns itself every partition of a topic at a chosen position
(beginning, end, or a time) and never commits: it cannot steal partitions from the
service or move its offsets. :class:`BatchState` de-duplicates results by index (after a
crash the service may write an item twice) and knows when a batch is complete.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from schemas import ChunkSummary, InvalidMessage, Result, decode_results_record
from schemas.errors import BadInputError, KafkaUnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from confluent_kafka import Message


class ReaderError(KafkaUnavailableError):
    """The topic cannot be read (unreachable cluster, missing topic)."""


def parse_start(text: str) -> int | datetime:
    """Turn ``--from`` (``beginning``, ``now``/``end``, or an ISO time) into a position.

    Returns ``OFFSET_BEGINNING``/``OFFSET_END``, or an aware datetime (UTC if none given).
    """
    lowered = text.lower()
    if lowered in {"beginning", "earliest", "start"}:
        return OFFSET_BEGINNING
    if lowered in {"now", "end", "latest"}:
        return OFFSET_END
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInputError(
            f"--from {text!r}: use beginning, now, or an ISO time like 2026-11-25T08:00:00",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class TopicReader:
    """Reads every partition of one topic from a position, outside any consumer group."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        start: int | datetime,
        *,
        kafka_options: Mapping[str, str] | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        """Assign all partitions of ``topic`` at ``start`` (see :func:`parse_start`)."""
        self.topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                # Required by the client, never used: no subscribe(), no commit.
                "group.id": f"batch-runner-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
                # Results of an exactly-once consumer are visible once their transaction
                # commits (aborted ones never); records written without one are always.
                "isolation.level": "read_committed",
                **(kafka_options or {}),
            },
        )
        try:
            metadata = self._consumer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            self._consumer.close()
            raise ReaderError(
                f"cannot reach Kafka at {bootstrap} within {timeout_s:g}s: {exc}",
            ) from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            self._consumer.close()
            raise ReaderError(f"topic {topic!r} does not exist on {bootstrap}")
        self.partitions = sorted(found.partitions)
        positions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in self.partitions]
        if isinstance(start, datetime):
            millis = int(start.timestamp() * 1000)
            stamps = [TopicPartition(topic, p, millis) for p in self.partitions]
            positions = self._consumer.offsets_for_times(stamps, timeout=timeout_s)
            for tp in positions:
                if tp.offset < 0:
                    tp.offset = OFFSET_END  # nothing at or after that time yet
        elif start == OFFSET_END:
            positions = [TopicPartition(topic, p, OFFSET_END) for p in self.partitions]
        self._consumer.assign(positions)
        self._eof: set[int] = set()

    def high_watermarks(self, timeout_s: float = 10.0) -> dict[int, int]:
        """Return the next offset to be written, per partition."""
        return {
            p: self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p),
                timeout=timeout_s,
            )[1]
            for p in self.partitions
        }

    def at_end(self) -> bool:
        """Whether every partition reported end-of-partition since the last record."""
        return len(self._eof) == len(self.partitions)

    def poll(self, timeout_s: float = 0.2, max_messages: int = 1000) -> list[Message]:
        """Return the records that arrived (end-of-partition notices update :meth:`at_end`)."""
        out: list[Message] = []
        for msg in self._consumer.consume(num_messages=max_messages, timeout=timeout_s):
            err = msg.error()
            partition = msg.partition()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF and partition is not None:  # noqa: SLF001
                    self._eof.add(partition)
                    continue
                raise ReaderError(f"reading {self.topic}: {err.str()}")
            if partition is not None:
                self._eof.discard(partition)
            out.append(msg)
        return out

    def close(self) -> None:
        """Close the consumer (nothing to commit: it never joined a group)."""
        self._consumer.close()


@dataclass
class BatchState:
    """One batch as seen on the results topic, duplicates removed."""

    batch_id: str
    results: dict[int, Result] = field(default_factory=dict)
    summaries: dict[int, ChunkSummary] = field(default_factory=dict)
    attempt_summaries: dict[tuple[int, int], ChunkSummary] = field(default_factory=dict)
    duplicates: int = 0
    total: int | None = None
    chunks: int | None = None

    def add(self, record: Result | ChunkSummary) -> bool:
        """Record one result or summary; return whether it was new."""
        if isinstance(record, ChunkSummary):
            self.attempt_summaries[record.attempt or 1, record.chunk] = record
            if (record.attempt or 1) > 1:
                return True  # a retry's positions are within the attempt
            self.total, self.chunks = record.total, record.chunks
            if record.chunk in self.summaries:
                return False
            self.summaries[record.chunk] = record
            return True
        held = self.results.get(record.index)
        if held is not None and (record.attempt or 1) <= (held.attempt or 1):
            self.duplicates += 1
            return False
        self.results[record.index] = record  # new, or a later attempt (a retry)
        return True

    @property
    def ok(self) -> int:
        """Items with an ok result."""
        return sum(1 for r in self.results.values() if r.status == "ok")

    @property
    def errors(self) -> int:
        """Items with an error result."""
        return len(self.results) - self.ok

    @property
    def complete(self) -> bool:
        """Every chunk summarised, or every index of the batch has a result."""
        if self.chunks is not None and len(self.summaries) >= self.chunks:
            return True
        return self.total is not None and len(self.results) >= self.total

    def tokens(self) -> dict[str, int]:
        """Return the sums of the results' ``usage``: prompt, completion and total tokens."""
        prompt = completion = total = 0
        for result in self.results.values():
            if result.usage is not None:
                prompt += result.usage.prompt_tokens
                completion += result.usage.completion_tokens
                total += result.usage.total_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}

    def latency_percentiles(self) -> tuple[float, float]:
        """Return p50 and p99 of the items' ``latency_ms`` (0, 0 without results)."""
        return percentiles([r.latency_ms for r in self.results.values()])

    def queue_percentiles(self) -> tuple[float, float]:
        """Return p50 and p99 of the items' ``queue_ms`` (records without it are left out)."""
        return percentiles([r.queue_ms for r in self.results.values() if r.queue_ms is not None])

    def summary(self) -> dict[str, Any]:
        """Return counts, latency and queue figures, as printed at the end of a tail or collect.

        ``latency`` is the model's side (first attempt to answer), ``queue`` the consumer's
        wait for a free request slot before it; the token sums add up the results' ``usage``
        (0 for models that report none).
        """
        p50, p99 = self.latency_percentiles()
        queue_p50, queue_p99 = self.queue_percentiles()
        return {
            "batch_id": self.batch_id,
            "total": self.total,
            "results": len(self.results),
            "ok": self.ok,
            "errors": self.errors,
            "duplicates_ignored": self.duplicates,
            "p50_latency_ms": round(p50, 3),
            "p99_latency_ms": round(p99, 3),
            "p50_queue_ms": round(queue_p50, 3),
            "p99_queue_ms": round(queue_p99, 3),
            **self.tokens(),
        }


def percentiles(values: list[float]) -> tuple[float, float]:
    """Return the p50 and p99 of ``values`` (0, 0 when empty)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0, 0.0
    return _percentile(ordered, 0.50), _percentile(ordered, 0.99)


def _percentile(sorted_values: list[float], q: float) -> float:
    rank = q * (len(sorted_values) - 1)
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def decode_record(msg: Message) -> Result | ChunkSummary | None:
    """Decode one results-topic record; ``None`` for records that are not ours."""
    try:
        return decode_results_record(msg.value() or b"")
    except InvalidMessage:
        return None


def read_batch(
    bootstrap: str,
    topic: str,
    batch_id: str,
    *,
    wait_s: float = 0.0,
    kafka_options: Mapping[str, str] | None = None,
) -> BatchState:
    """Read everything written so far for ``batch_id`` (waiting up to ``wait_s`` for more).

    Reads from the beginning up to the high watermarks seen at the start; with
    ``wait_s`` > 0, keeps reading until the batch is complete or the time is up.
    """
    key = batch_id.encode()
    state = BatchState(batch_id)
    reader = TopicReader(bootstrap, topic, OFFSET_BEGINNING, kafka_options=kafka_options)
    try:
        targets = reader.high_watermarks()
        deadline = time.monotonic() + wait_s
        positions = dict.fromkeys(reader.partitions, -1)
        while True:
            for msg in reader.poll():
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None:
                    positions[partition] = offset
                if msg.key() != key:
                    continue
                record = decode_record(msg)
                if record is not None and record.batch_id == batch_id:
                    state.add(record)
            caught_up = reader.at_end() or all(
                positions[p] + 1 >= targets[p] for p in reader.partitions
            )
            if caught_up and (state.complete or time.monotonic() >= deadline):
                return state
    finally:
        reader.close()
