"""The ground the service stands on: manual commits in a group, and resuming from them."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from tests.helpers import committed_offsets, end_offsets

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka import Message

pytestmark = pytest.mark.kafka

MESSAGES = 1000
PARTITIONS = 3


def _group_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
        },
    )


def _position(msg: Message) -> tuple[int, int]:
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None
    assert offset is not None
    return partition, offset


def _take(consumer: Consumer, count: int, timeout_s: float = 60.0) -> list[Message]:
    """Consume until ``count`` data messages arrived (fetched extras are returned too)."""
    got: list[Message] = []
    remaining = int(timeout_s / 0.5)
    while len(got) < count and remaining > 0:
        remaining -= 1
        for msg in consumer.consume(num_messages=200, timeout=0.5):
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"consumer error: {err}")
            if err is None:
                got.append(msg)
    assert len(got) >= count, f"only {len(got)} of {count} messages arrived"
    return got


def test_group_resumes_exactly_from_committed_offsets(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    make_group: Callable[[], str],
) -> None:
    """A new group member starts where the broker's committed offsets say, no gap, no repeat.

    The first consumer processes (stores and commits) only part of what it fetched; the
    committed offsets on the broker must equal last-processed + 1 per partition, and a
    second consumer in the same group must start exactly there and see every remaining
    message once.
    """
    topic = make_topic("foundation", partitions=PARTITIONS)
    group = make_group()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(MESSAGES):
        producer.produce(topic, key=f"key-{i % 17}", value=str(i).encode())
    assert producer.flush(30) == 0
    assert sum(end_offsets(kafka_bootstrap, topic, PARTITIONS).values()) == MESSAGES

    first = _group_consumer(kafka_bootstrap, group)
    first.subscribe([topic])
    fetched = _take(first, 600)
    processed = fetched[:600]
    last_processed: dict[int, int] = {}
    for msg in processed:
        first.store_offsets(message=msg)
        partition, offset = _position(msg)
        last_processed[partition] = offset
    first.commit(asynchronous=False)
    first.close()

    committed = committed_offsets(kafka_bootstrap, group, topic, PARTITIONS)
    for partition, offset in last_processed.items():
        assert committed[partition] == offset + 1

    second = _group_consumer(kafka_bootstrap, group)
    second.subscribe([topic])
    rest = _take(second, MESSAGES - len(processed))
    second.close()

    first_seen: dict[int, int] = {}
    for msg in rest:
        first_seen.setdefault(*_position(msg))
    for partition, offset in first_seen.items():
        expected = committed.get(partition, -1001)
        assert offset == (max(expected, 0))

    values: dict[int, list[int]] = defaultdict(list)
    for msg in processed + rest:
        value = msg.value()
        assert value is not None
        values[_position(msg)[0]].append(int(value))
    everything = sorted(v for vs in values.values() for v in vs)
    assert everything == list(range(MESSAGES))
