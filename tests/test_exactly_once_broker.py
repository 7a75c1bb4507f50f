"""Exactly-once mode through a broker restart: the replica recovers, each result once.

The broker of this test is one of its own (``LocalKafka(keep_data=True)``): SIGKILLed
mid-batch and started again on the same data directory and ports, as the chaos suite's
``broker-kill`` does.
"""

from __future__ import annotations

import signal
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.admin import AdminClient

from schemas import ChunkSummary, decode_results_record
from tests.consumer_harness import Service, committed_total, create_topics, submit
from tests.helpers import wait_for
from tests.test_exactly_once import read_committed
from tools.localkafka.broker import LocalKafka

if TYPE_CHECKING:
    from pathlib import Path

    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka

PARTITIONS = 2


def test_broker_restart_results_keep_flowing_each_seen_once(
    tmp_path: Path, server: TestInferenceServer
) -> None:
    """After a broker SIGKILL and restart the replica finishes the batch, exactly once.

    Its open transaction dies with the broker (or is aborted after it returns); the
    replica must get its transactional producer working again and carry on from its
    committed offsets, never stall. A read_committed reader then sees every item's
    result and every chunk's summary once.
    """
    server.configure(latency_ms=10.0)
    kafka = LocalKafka(workdir=tmp_path / "broker", keep_data=True)
    kafka.start()
    try:
        bootstrap = kafka.bootstrap_servers
        svc = Service(
            bootstrap=bootstrap,
            topics=create_topics(AdminClient({"bootstrap.servers": bootstrap}), PARTITIONS),
            endpoint=server.endpoint("v1"),
            workdir=tmp_path,
            env={
                "BATCH_RUNNER_PROTOCOL": "v1",
                "BATCH_RUNNER_MAX_IN_FLIGHT": "4",
                "BATCH_RUNNER_EXACTLY_ONCE": "true",
                "BATCH_RUNNER_TRANSACTION_TIMEOUT_S": "5",
            },
        )
        items = [{"id": i} for i in range(3000)]
        chunks = submit(bootstrap, svc.topics.requests, "eos-restart", items, chunk_size=50)
        replica = svc.start()
        try:
            wait_for(
                lambda: committed_total(svc, PARTITIONS) >= 4,
                timeout_s=60,
                what="the replica's first transactions",
            )
            kafka.kill()
            kafka.start()  # the same data directory and ports
            wait_for(
                lambda: committed_total(svc, PARTITIONS) == chunks,
                timeout_s=180,
                what=f"the replica to finish the batch after the restart:\n{replica.log()[-4000:]}",
            )
            assert replica.process.poll() is None, "the replica recovered without exiting"
            values: list[bytes] = []
            for partition in range(PARTITIONS):
                values += read_committed(bootstrap, svc.topics.results, partition=partition)
            records = [decode_results_record(v) for v in values]
            summaries = Counter(r.chunk for r in records if isinstance(r, ChunkSummary))
            results = Counter(r.index for r in records if not isinstance(r, ChunkSummary))
            duplicated = sorted(i for i, n in results.items() if n > 1)
            missing = sorted(set(range(len(items))) - set(results))
            assert (duplicated, missing) == ([], []), "each item's result once"
            assert summaries == Counter(range(chunks)), "each chunk's summary once"
            replica.signal(signal.SIGTERM)
            assert replica.wait(60) == 0
        finally:
            svc.stop_all()
    finally:
        kafka.stop()
