"""What the consumer writes when a prediction cannot be written as it is.

A model may answer with a prediction too large for the results topic. Such a record
would be refused by Kafka and stop the replica on every restart (a crash loop and a
stuck partition); instead the item gets a ``result_too_large`` error result, the rest
of the batch goes on, and the offset moves on.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import pytest

from tests.consumer_harness import read_results, submit, wait_exit
from tests.helpers import committed_offsets, wait_for

if TYPE_CHECKING:
    from tests.consumer_harness import MakeService

pytestmark = pytest.mark.kafka


def test_a_prediction_over_the_result_limit_becomes_an_error_result(
    kafka_bootstrap: str,
    make_service: MakeService,
) -> None:
    """Items whose echoed prediction makes a record over 2,000 bytes get an error each.

    The identity model answers each item with itself, so an item of 3,000 characters
    makes a result record over ``BATCH_RUNNER_MAX_RESULT_BYTES=2000``; in a unit of four
    items (one request), only that item is an error, the others are ok, the summary
    counts both, and the committed offset reaches the end of the requests topic.
    """
    items: list[object] = [{"n": i} for i in range(12)]
    big = {3: "x" * 3000, 8: "y" * 3000}
    for index, text in big.items():
        items[index] = {"n": index, "blob": text}
    svc = make_service()
    chunks = submit(kafka_bootstrap, svc.topics.requests, "big", items, chunk_size=6)
    replica = svc.start(
        BATCH_RUNNER_ITEMS_PER_REQUEST="4",
        BATCH_RUNNER_MAX_RESULT_BYTES="2000",
    )
    results, summaries, _ = read_results(
        kafka_bootstrap, svc.topics.results, expected_records=len(items) + chunks
    )
    by_index = {r.index: r for r in results}
    assert sorted(by_index) == list(range(len(items)))
    for index, result in by_index.items():
        if index in big:
            assert result.status == "error", result
            assert result.error is not None
            assert result.error.kind == "result_too_large"
            assert "over the 2000-byte limit" in result.error.message
            assert "BATCH_RUNNER_MAX_RESULT_BYTES" in result.error.message
            assert result.attempts == 1  # the model answered; nothing to retry
        else:
            assert result.status == "ok", result
            assert result.prediction == items[index]
    assert sorted((s.chunk, s.ok, s.error) for s in summaries) == [(0, 5, 1), (1, 5, 1)]
    wait_for(
        lambda: (
            committed_offsets(kafka_bootstrap, svc.group, svc.topics.requests, 1) == {0: chunks}
        ),
        what="the committed offset to pass both chunks",
    )
    replica.signal(signal.SIGTERM)
    assert wait_exit(replica, 30) == 0
