"""Batches as jobs, the client's side: read a batch's status, wait for it, cancel it.

Everything here costs O(batch), not O(topic): a batch's status is the latest record with
its key on one partition of the compacted status topic, and its results sit on one
partition of the results topic between the offsets its status records. None of these
readers joins a consumer group or commits anything.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from producer.results import BatchState, decode_record
from schemas import (
    BATCH_CONTROL_V1,
    BatchControl,
    BatchStatus,
    InvalidMessage,
    batch_partition,
    cancel_key,
    decode_status_record,
    encode_status_record,
)
from schemas.errors import KafkaUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from confluent_kafka import Message


METADATA_TIMEOUT_S = 15.0  # bound on one metadata or offsets request


def _consumer(bootstrap: str, options: Mapping[str, str] | None) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            # Required by the client, never used: no subscribe(), no commit.
            "group.id": f"batch-runner-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 50,
            **(options or {}),
        },
    )


def partition_count(client: Consumer | Producer, topic: str, timeout_s: float) -> int | None:
    """Return ``topic``'s partition count, or None when it does not exist.

    Raise :class:`~schemas.errors.KafkaUnavailableError` when the cluster does not answer.
    """
    try:
        metadata = client.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot reach Kafka within {timeout_s:g}s: {exc}") from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return None
    return len(found.partitions)


def _latest(msg: Message, batch_id: str) -> BatchStatus | None:
    if msg.error() is not None or msg.key() != batch_id.encode() or not msg.value():
        return None
    try:
        record = decode_status_record(msg.value() or b"")
    except InvalidMessage:
        return None
    return record if isinstance(record, BatchStatus) else None


def read_status(  # noqa: PLR0913 - where to read, and how long to wait for what
    bootstrap: str,
    topic: str,
    batch_id: str,
    *,
    kafka_options: Mapping[str, str] | None = None,
    timeout_s: float = 15.0,
    until: Callable[[BatchStatus], bool] | None = None,
) -> tuple[BatchStatus | None, bool]:
    """Return the latest status of ``batch_id`` and whether the status topic exists.

    Reads the batch's partition of the status topic from its beginning to its current end;
    with ``until``, keeps reading (up to ``timeout_s``) until a status satisfies it.
    """
    consumer = _consumer(bootstrap, kafka_options)
    ask_s = min(timeout_s, METADATA_TIMEOUT_S)  # one broker request; the wait may be longer
    try:
        count = partition_count(consumer, topic, ask_s)
        if count is None:
            return None, False
        tp = TopicPartition(topic, batch_partition(batch_id, count))
        end = consumer.get_watermark_offsets(tp, timeout=ask_s)[1]
        consumer.assign([TopicPartition(topic, tp.partition, OFFSET_BEGINNING)])
        status: BatchStatus | None = None
        deadline = time.monotonic() + timeout_s
        position = 0
        while True:
            for msg in consumer.consume(1000, 0.1):
                position = max(position, (msg.offset() or 0) + 1)
                status = _latest(msg, batch_id) or status
            if position < end:
                position = max(position, consumer.position([tp])[0].offset)
            caught_up = position >= end
            if caught_up and (until is None or (status is not None and until(status))):
                return status, True
            if time.monotonic() >= deadline:
                return status, True
    finally:
        consumer.close()


def read_results_range(
    bootstrap: str,
    topic: str,
    status: BatchStatus,
    *,
    kafka_options: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> BatchState:
    """Read the batch's results from the offset range its status records (O(batch))."""
    state = BatchState(status.batch_id)
    first, last, partition = status.first_offset, status.last_offset, status.results_partition
    if first is None or last is None or partition is None:
        return state
    key = status.batch_id.encode()
    consumer = _consumer(bootstrap, kafka_options)
    try:
        consumer.assign([TopicPartition(topic, partition, first)])
        deadline = time.monotonic() + timeout_s
        position = first
        while position <= last:
            if time.monotonic() >= deadline:
                raise KafkaUnavailableError(
                    f"{topic}[{partition}] offsets {first}-{last} not read in {timeout_s:g}s"
                )
            for msg in consumer.consume(1000, 0.2):
                offset = msg.offset()
                if msg.error() is not None or offset is None:
                    continue
                position = max(position, offset + 1)
                if offset > last or msg.key() != key:
                    continue
                record = decode_record(msg)
                if record is not None and record.batch_id == status.batch_id:
                    state.add(record)
        state.total = status.total
        return state
    finally:
        consumer.close()


def cancel_batch(
    bootstrap: str,
    topic: str,
    batch_id: str,
    *,
    kafka_options: Mapping[str, str] | None = None,
    timeout_s: float = 15.0,
) -> int:
    """Write a cancel record for ``batch_id`` to every partition; return their count.

    Every replica reads the status partitions of the requests partitions it owns, so each
    one that might hold a chunk of the batch sees the cancel.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": int(timeout_s * 1000),
            **(kafka_options or {}),
        }
    )
    count = partition_count(producer, topic, timeout_s)
    if count is None:
        raise KafkaUnavailableError(
            f"topic {topic!r} does not exist: cancel needs the status topic "
            "(batch-runner kafka create-topics creates it)"
        )
    value = encode_status_record(
        BatchControl(schema=BATCH_CONTROL_V1, kind="cancel", batch_id=batch_id, at=time.time())
    )
    errors: list[str] = []

    def delivered(err: Any, _msg: Message) -> None:  # noqa: ANN401 - librdkafka's KafkaError
        if err is not None:
            errors.append(str(err))

    for partition in range(count):
        producer.produce(
            topic, value=value, key=cancel_key(batch_id), partition=partition, on_delivery=delivered
        )
    left = producer.flush(timeout_s)
    if errors or left:
        reason = errors[0] if errors else f"{left} records unacknowledged"
        raise KafkaUnavailableError(f"the cancel of {batch_id} was not delivered: {reason}")
    return count
