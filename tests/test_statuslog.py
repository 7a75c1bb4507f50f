"""The status topic's reader restores what it is given even while the cluster cannot say yet.

Real broker. A replica that rejoins after a broker stall can be assigned a status
partition the broker it asks does not know yet ("unknown partition"): the restore asks
again instead of raising out of the rebalance callback (which ended the replica).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.cimpl import NewPartitions

from consumer.statuslog import StatusLog

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.kafka


def produce(bootstrap: str, topic: str, partition: int, value: bytes) -> None:
    """Write one record to ``partition`` and wait for its acknowledgement."""
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value, partition=partition)
    assert producer.flush(30) == 0


async def test_a_partition_the_cluster_does_not_know_yet_is_restored_once_it_does(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    make_topic: Callable[..., str],
) -> None:
    """Partition 1 appears 2 s after the restore began: the restore waits, then reads on.

    Its record comes with the restore or, when it was written after the restore asked
    for the partition's end, with the reads that follow (the partition is assigned).
    """
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, 0, b"on-0")
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "probe"})
    with pytest.raises(KafkaException, match="Unknown partition"):  # the fault itself
        probe.get_watermark_offsets(TopicPartition(topic, 1), timeout=10)
    probe.close()

    def grow() -> None:
        time.sleep(2.0)
        for future in kafka_admin.create_partitions([NewPartitions(topic, 2)]).values():
            future.result(30)
        produce(kafka_bootstrap, topic, 1, b"on-1")

    grower = threading.Thread(target=grow)
    reader = StatusLog({"bootstrap.servers": kafka_bootstrap, "group.id": "restore"}, topic)
    grower.start()
    try:
        restored, others = await reader.restore([0, 1])
        grower.join()
        values = [m.value() for m in restored]
        deadline = time.monotonic() + 30
        while b"on-1" not in values and time.monotonic() < deadline:
            values += [m.value() for m in await reader.poll()]
    finally:
        grower.join()
        await reader.close()
    assert b"on-0" in [m.value() for m in restored]
    assert sorted(v or b"" for v in values) == [b"on-0", b"on-1"]
    assert others == []


async def test_empty_status_partitions_are_restored_without_a_warning(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Partitions with no record are read to their (empty) end: nothing to warn about."""
    topic = make_topic(partitions=2)
    produce(kafka_bootstrap, topic, 0, b"on-0")
    caplog.set_level(logging.INFO, logger="consumer.statuslog")
    reader = StatusLog({"bootstrap.servers": kafka_bootstrap, "group.id": "empty"}, topic)
    try:
        restored, _ = await reader.restore([0, 1])
    finally:
        await reader.close()
    assert [m.value() for m in restored] == [b"on-0"]
    warned = [r for r in caplog.records if r.name == "consumer.statuslog"]
    assert not [r for r in warned if r.levelno >= logging.WARNING], warned
