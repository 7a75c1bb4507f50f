"""Liveness: every assigned partition keeps moving through rebalances, drains and outages.

Each test reproduces a way a partition used to stop (or a replica used to stall) and
asserts that work still completes. Real broker, real HTTP server, replicas as processes.
"""

from __future__ import annotations

import signal
import zlib
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.consumer_harness import read_results, submit, wait_exit
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.consumer_harness import MakeService
    from tools.testserver import TestInferenceServer

pytestmark = pytest.mark.kafka


def batch_on(partition: int, partitions: int, prefix: str) -> str:
    """Return a batch id that librdkafka's default partitioner puts on ``partition``.

    The default (``consistent_random``) maps a key to CRC-32(key) modulo the count.
    """
    n = 0
    while True:
        batch_id = f"{prefix}-{n}"
        if zlib.crc32(batch_id.encode()) % partitions == partition:
            return batch_id
        n += 1


def test_a_paused_partition_that_comes_back_is_fetched_again(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """A partition paused by backpressure, revoked, then assigned back is fetched again.

    Replica A fills its buffer (both partitions paused); B joins and takes one of them;
    once everything is done B stops and its partition goes back to A, whose buffer is
    now empty. New batches on both partitions must be answered: librdkafka keeps a
    partition's pause flag across revoke and assign, so a replica that does not resume
    what it is given never fetches that partition again.
    """
    server.configure(latency_ms=20.0)
    svc = make_service(
        partitions=2,
        BATCH_RUNNER_MAX_IN_FLIGHT="2",
        BATCH_RUNNER_MAX_BUFFERED_ITEMS="10",
        BATCH_RUNNER_LOG_LEVEL="DEBUG",
    )
    first = {batch_on(p, 2, f"first-p{p}"): [{"p": p, "i": i} for i in range(500)] for p in (0, 1)}
    for batch_id, items in first.items():
        submit(kafka_bootstrap, svc.topics.requests, batch_id, items, chunk_size=5)
    a = svc.start()
    wait_for(lambda: "paused fetching" in a.log(), what="replica A to pause its partitions")
    b = svc.start()
    wait_for(
        lambda: '"partitions":["' in b.log(),
        timeout_s=60,
        what="replica B to take a partition",
    )
    read_results(kafka_bootstrap, svc.topics.results, expected_records=1000 + 200, timeout_s=120)
    b.signal(signal.SIGTERM)
    assert wait_exit(b, 60) == 0
    wait_for(
        lambda: a.log().count("partitions assigned") >= 2,
        what="the partition to go back to replica A",
    )
    second = {batch_on(p, 2, f"second-p{p}"): [{"p": p, "j": i} for i in range(20)] for p in (0, 1)}
    for batch_id, items in second.items():
        submit(kafka_bootstrap, svc.topics.requests, batch_id, items, chunk_size=5)
    results, _, _ = read_results(
        kafka_bootstrap,
        svc.topics.results,
        expected_records=1200 + 40 + 8,
        timeout_s=60,
    )
    answered = Counter(r.batch_id for r in results)
    for batch_id in second:
        assert answered[batch_id] >= 20, f"{batch_id} was never fetched: {answered}"
