"""Exactly-once mode on a real broker: a read_committed reader sees each result once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from schemas import ChunkSummary, decode_results_record
from tests.consumer_harness import committed_total, submit
from tests.helpers import end_offsets, read_all, unique, wait_for

if TYPE_CHECKING:
    from tests.consumer_harness import MakeService
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka


def read_committed(
    bootstrap: str, topic: str, timeout_s: float = 60.0, *, partition: int = 0
) -> list[bytes]:
    """Read one partition of ``topic`` as a read_committed reader, to its end offset."""
    end = end_offsets(bootstrap, topic, partition + 1)[partition]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    values: list[bytes] = []
    if end == 0:
        consumer.close()
        return values
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err, offset = msg.error(), msg.offset()
                if err is None:
                    values.append(msg.value() or b"")
                elif err.code() == KafkaError._PARTITION_EOF and (offset or 0) >= end:
                    return values
    finally:
        consumer.close()
    raise AssertionError(f"the read_committed reader did not reach offset {end}")


def test_sigkill_mid_transaction_a_read_committed_reader_sees_each_result_once(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """A replica SIGKILLed with a transaction open leaves nothing a read_committed reader sees.

    The next replica redoes the uncommitted chunks; the killed one's open transaction is
    aborted by the broker. Read committed, every item has exactly one result and every
    chunk exactly one summary, though the topic holds more records than that.
    """
    server.configure(latency_ms=20.0)
    svc = make_service(
        BATCH_RUNNER_MAX_IN_FLIGHT="8",
        BATCH_RUNNER_EXACTLY_ONCE="true",
        BATCH_RUNNER_TRANSACTION_TIMEOUT_S="5",
    )
    items = [{"id": i} for i in range(1500)]
    chunks = submit(kafka_bootstrap, svc.topics.requests, "eos", items, chunk_size=50)
    first = svc.start()
    read_all(kafka_bootstrap, svc.topics.results, expected=400, timeout_s=60)
    first.signal(signal.SIGKILL)
    first.wait(30)
    assert committed_total(svc, 1) < chunks, "the replica finished before it was killed"
    second = svc.start()
    wait_for(
        lambda: committed_total(svc, 1) == chunks,
        timeout_s=120,
        what="the second replica to finish the batch",
    )
    records = [
        decode_results_record(v) for v in read_committed(kafka_bootstrap, svc.topics.results)
    ]
    summaries = Counter(r.chunk for r in records if isinstance(r, ChunkSummary))
    results = Counter(r.index for r in records if not isinstance(r, ChunkSummary))
    assert results == Counter(range(len(items))), "each item's result once"
    assert summaries == Counter(range(chunks)), "each chunk's summary once"
    second.signal(signal.SIGTERM)
    assert second.wait(60) == 0
