"""Item-level resume on a real broker: a replica taking a partition over skips answered items."""

from __future__ import annotations

import signal
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.resume import decode
from tests.consumer_harness import read_results, submit
from tests.helpers import end_offsets, unique, wait_for
from tools.testservers.inference import item_key

if TYPE_CHECKING:
    from tests.consumer_harness import MakeService, Service
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka


def committed_with_metadata(svc: Service) -> tuple[int, str]:
    """Return the group's committed offset and metadata on partition 0 (-1001, "": none)."""
    consumer = Consumer({"bootstrap.servers": svc.bootstrap, "group.id": svc.group})
    try:
        (tp,) = consumer.committed([TopicPartition(svc.topics.requests, 0)], timeout=10)
        return tp.offset, tp.metadata or ""
    finally:
        consumer.close()


def answered_before_kill(svc: Service) -> int:
    """Return how many items of offset 1 the commit metadata says are answered."""
    position, text = committed_with_metadata(svc)
    progress = decode(position, text).partial.get(1) if position >= 0 else None
    return 0 if progress is None else progress.count


def test_takeover_calls_the_model_only_for_items_not_answered(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """A replica SIGKILLed mid-chunk hands its answered items on through the commit metadata.

    Chunk 0 finishes; chunk 1 has items 0-19 answered and 20-39 held by the model when
    the first replica dies (SIGKILL, so nothing is committed on the way out). The second
    replica calls the model only for items 20-39, writes each missing result once, and
    the chunk's summary counts all 40 items.
    """
    held = {item_key(40 + i): ("hang",) for i in range(20, 40)}
    server.configure(item_scripts=held)
    svc = make_service(BATCH_RUNNER_ITEMS_PER_REQUEST="1", BATCH_RUNNER_MAX_IN_FLIGHT="64")
    items = list(range(80))
    submit(kafka_bootstrap, svc.topics.requests, unique("batch"), items, chunk_size=40)
    first = svc.start()
    # The answers of both chunks come back in any order: a commit may list chunk 1's 20
    # items while the last of chunk 0 is still unacknowledged; the next one has both.
    wait_for(
        lambda: answered_before_kill(svc) == 20 and committed_with_metadata(svc)[0] == 1,
        timeout_s=60,
        what="chunk 0 committed, and the commit metadata listing chunk 1's 20 answered items",
    )
    first.signal(signal.SIGKILL)
    first.wait(30)
    server.reset()  # counters to zero, no item held any more

    svc.start()
    # chunk 0: 40 results + summary; chunk 1: 20 + 20 results + summary
    wait_for(
        lambda: end_offsets(kafka_bootstrap, svc.topics.results, 1)[0] >= 82,
        timeout_s=60,
        what="the second replica to finish chunk 1",
    )
    wait_for(
        lambda: committed_with_metadata(svc)[0] == 2,
        timeout_s=30,
        what="the commit of chunk 1",
    )
    total = end_offsets(kafka_bootstrap, svc.topics.results, 1)[0]
    results, summaries, _ = read_results(
        kafka_bootstrap, svc.topics.results, expected_records=total
    )
    assert total == 82, "no result was written twice"
    assert Counter(r.index for r in results) == Counter(range(80))
    summary = next(s for s in summaries if s.chunk == 1)
    assert (summary.count, summary.ok, summary.error) == (40, 40, 0)
    attempts = server.stats().attempts
    assert sorted(attempts) == sorted(item_key(40 + i) for i in range(20, 40))
    assert set(attempts.values()) == {1}
