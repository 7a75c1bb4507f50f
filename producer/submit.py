"""Submit a batch: split items into chunks that fit a Kafka message, publish, confirm.

:func:`submit` is the Python API (for notebooks and services); ``batch-runner submit`` is
its command line. Nothing is reported as submitted until every chunk has a positive
delivery report; if some chunks fail, :class:`SubmitError` names them. Re-running with
the same ``batch_id`` is safe: results are keyed by ``(batch_id, index)``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer

from producer.topics import TopicSpec, admin_client, create_topics
from schemas import (
    BATCH_STATUS_V1,
    REQUESTS_TOPIC,
    STATUS_TOPIC,
    BatchStatus,
    batch_partition,
    encode_batch_request,
    encode_status_record,
)
from schemas.errors import BadInputError, IncompleteError, KafkaUnavailableError
from schemas.fields import MAX_PRIORITY
from schemas.messages import BATCH_ID_PATTERN, MAX_BATCH_ID_LENGTH, MAX_ITEMS_PER_CHUNK

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from confluent_kafka import Message

# Room left in each message for the envelope (field names, batch id, metadata...).
ENVELOPE_BYTES = 1024
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000  # the broker's default message.max.bytes is 1 MiB


class SubmitError(IncompleteError):
    """Some chunks of the batch were not delivered (the message names them); re-run safely."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive items of a batch sent in one message."""

    number: int
    start: int
    items: Sequence[bytes]


@dataclass
class SubmitReport:
    """What was submitted."""

    batch_id: str
    topic: str
    items: int
    chunks: int
    bytes: int
    seconds: float
    partitions: set[int] = field(default_factory=set)
    status_partition: int | None = None  # None: no (co-partitioned) status topic, no record


def new_batch_id() -> str:
    """Return a fresh batch id: ``batch-YYYYMMDD-HHMMSS-<8 hex>`` (UTC)."""
    return f"batch-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def check_batch_id(batch_id: str) -> None:
    """Raise :class:`~schemas.errors.BadInputError` unless ``batch_id`` fits the contract."""
    import re  # noqa: PLC0415 - only needed here

    if not (0 < len(batch_id) <= MAX_BATCH_ID_LENGTH and re.match(BATCH_ID_PATTERN, batch_id)):
        allowed = f"1-{MAX_BATCH_ID_LENGTH} of A-Z a-z 0-9 . _ : -"
        raise BadInputError(f"batch id {batch_id!r}: use {allowed}")


def plan_chunks(
    items: Sequence[bytes],
    *,
    chunk_size: int,
    max_message_bytes: int,
    envelope_bytes: int = ENVELOPE_BYTES,
) -> list[Chunk]:
    """Cut ``items`` into chunks of at most ``chunk_size`` items and ``max_message_bytes``.

    Raises :class:`~schemas.errors.BadInputError` naming the first item that cannot fit any
    message.
    """
    if not 1 <= chunk_size <= MAX_ITEMS_PER_CHUNK:
        raise BadInputError(f"chunk size must be 1-{MAX_ITEMS_PER_CHUNK}")
    budget = max_message_bytes - envelope_bytes
    chunks: list[Chunk] = []
    start = 0
    size = 0
    for index, item in enumerate(items):
        cost = len(item) + 1
        if cost > budget:
            raise BadInputError(
                f"item {index} is {len(item)} bytes: over the {max_message_bytes}-byte "
                "message cap (raise --max-message-bytes up to the broker's message.max.bytes)",
            )
        if index > start and (index - start >= chunk_size or size + cost > budget):
            chunks.append(Chunk(len(chunks), start, items[start:index]))
            start, size = index, 0
        size += cost
    if len(items) > start:
        chunks.append(Chunk(len(chunks), start, items[start:]))
    return chunks


def _ensure_topic(  # noqa: PLR0913 - keyword options of topic creation
    producer: Producer,
    config: Mapping[str, Any],
    topic: str,
    *,
    create: bool,
    partitions: int,
    timeout_s: float,
) -> None:
    bootstrap = config["bootstrap.servers"]
    try:
        metadata = producer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"cannot reach Kafka at {bootstrap} within {timeout_s:g}s: {exc}"
        ) from None
    found = metadata.topics.get(topic)
    if found is not None and found.error is None:
        return
    if not create:
        raise KafkaUnavailableError(
            f"topic {topic!r} does not exist on {bootstrap}: create it with --create-topic "
            "(or batch-runner kafka create-topics)"
        )
    spec = TopicSpec(topic, partitions)
    create_topics(admin_client(config), [spec], timeout_s=timeout_s).check()


def submit(  # noqa: PLR0913, PLR0915, C901 - the options a batch can carry, keyword-only
    items: Sequence[bytes],
    *,
    bootstrap_servers: str,
    topic: str = REQUESTS_TOPIC,
    batch_id: str | None = None,
    chunk_size: int = 500,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    target: str | None = None,
    items_per_request: int | None = None,
    priority: int | None = None,
    metadata: Mapping[str, str] | None = None,
    create_topic: bool = False,
    partitions: int = 4,
    timeout_s: float = 30.0,
    kafka_options: Mapping[str, str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    status_topic: str | None = STATUS_TOPIC,
    deadline: float | None = None,
) -> SubmitReport:
    """Publish ``items`` (each one value's JSON text) as one batch; return what was sent.

    Raises :class:`~schemas.errors.BadInputError` if the input cannot be chunked,
    :class:`~schemas.errors.KafkaUnavailableError` if Kafka cannot be reached within
    ``timeout_s`` or the topic is missing (unless ``create_topic``), and
    :class:`SubmitError` if any chunk is not acknowledged. ``on_progress(done, total)`` is
    called as chunks are acknowledged.

    With a ``status_topic`` that exists, the batch's first status record (``submitted``)
    is written to the batch's partition and acknowledged before any chunk is sent; the
    chunks go to the same partition number of ``topic``. ``deadline`` (Unix seconds):
    items not sent to the model by then get an ``expired`` error.
    """
    if not items:
        raise BadInputError("no items to submit")
    batch_id = batch_id or new_batch_id()
    check_batch_id(batch_id)
    if priority is not None and not 1 <= priority <= MAX_PRIORITY:
        raise BadInputError(f"priority must be between 1 and {MAX_PRIORITY}, got {priority}")
    plan = plan_chunks(items, chunk_size=chunk_size, max_message_bytes=max_message_bytes)
    config = _producer_config(bootstrap_servers, max_message_bytes, timeout_s, kafka_options)
    producer = Producer(config)
    _ensure_topic(
        producer,
        config,
        topic,
        create=create_topic,
        partitions=partitions,
        timeout_s=timeout_s,
    )
    submitted_at = time.time()
    partition = write_submitted(
        producer,
        status_topic,
        topic,
        BatchStatus(
            schema=BATCH_STATUS_V1,
            batch_id=batch_id,
            state="submitted",
            total=len(items),
            chunks=len(plan),
            submitted_at=submitted_at,
            updated_at=submitted_at,
            deadline=deadline,
        ),
        timeout_s,
    )
    started = time.monotonic()
    failures: dict[int, str] = {}
    done = 0
    sent_bytes = 0
    report = SubmitReport(batch_id, topic, len(items), len(plan), 0, 0.0)
    report.status_partition = None if status_topic is None or partition < 0 else partition

    def delivered(number: int) -> Callable[[KafkaError | None, Message], None]:
        def callback(err: KafkaError | None, msg: Message) -> None:
            nonlocal done
            if err is not None:
                failures[number] = err.str()
                return
            done += 1
            partition = msg.partition()
            if partition is not None:
                report.partitions.add(partition)
            if on_progress is not None:
                on_progress(done, len(plan))

        return callback

    for chunk in plan:
        value = encode_batch_request(
            batch_id=batch_id,
            items=chunk.items,
            start=chunk.start,
            total=len(items),
            chunk=chunk.number,
            chunks=len(plan),
            target=target,
            items_per_request=items_per_request,
            priority=priority,
            metadata=dict(metadata) if metadata else None,
            submitted_at=submitted_at,
            deadline=deadline,
        )
        sent_bytes += len(value)
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=batch_id,
                    partition=partition,
                    on_delivery=delivered(chunk.number),
                )
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                failures[chunk.number] = str(exc)
                break
        producer.poll(0)
    remaining = producer.flush(timeout_s + 5)
    report.bytes = sent_bytes
    report.seconds = time.monotonic() - started
    if remaining:
        failures.setdefault(-1, f"{remaining} messages still unacknowledged after {timeout_s:g}s")
    if failures:
        listed = ", ".join(str(n) for n in sorted(failures) if n >= 0) or "unknown"
        reason = next(iter(failures.values()))
        raise SubmitError(
            f"batch {batch_id}: {len(failures)} of {len(plan)} chunks were not delivered "
            f"(chunks {listed}): {reason}. Nothing was lost: re-run with --batch-id {batch_id}",
        )
    return report


def _producer_config(
    bootstrap_servers: str,
    max_message_bytes: int,
    timeout_s: float,
    kafka_options: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Return the idempotent producer's configuration for one submit."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": max_message_bytes + ENVELOPE_BYTES,
        "message.timeout.ms": int(timeout_s * 1000),
        "socket.connection.setup.timeout.ms": int(min(timeout_s, 30) * 1000),
        **(kafka_options or {}),
    }


def write_submitted(
    producer: Producer,
    status_topic: str | None,
    topic: str,
    status: BatchStatus,
    timeout_s: float,
) -> int:
    """Write the ``submitted`` status; return the batch's partition (-1: the partitioner's).

    Nothing is written without a status topic, or with one not co-partitioned with
    ``topic`` (it belongs to another set of topics): the chunks then go where the
    producer's partitioner puts their key.
    """
    if status_topic is None:
        return -1
    found = producer.list_topics(timeout=timeout_s).topics
    status_meta, requests_meta = found.get(status_topic), found.get(topic)
    if status_meta is None or status_meta.error is not None or requests_meta is None:
        return -1
    count = len(status_meta.partitions)
    if count != len(requests_meta.partitions):
        return -1
    partition = batch_partition(status.batch_id, count)
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err.str())

    producer.produce(
        status_topic,
        value=encode_status_record(status),
        key=status.batch_id,
        partition=partition,
        on_delivery=delivered,
    )
    if producer.flush(timeout_s) or errors:
        reason = errors[0] if errors else f"not acknowledged within {timeout_s:g}s"
        raise SubmitError(f"batch {status.batch_id}: the submitted status record: {reason}")
    return partition
