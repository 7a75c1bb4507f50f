"""What the consumer writes when a prediction cannot be written as it is.

A model may answer with a prediction too large for the results topic, and a request
may be too large to copy to the dead-letter topic. Such a record would be refused by
Kafka and stop the replica on every restart (a crash loop and a stuck partition);
instead the item gets a ``result_too_large`` error result, the dead letter carries no
value and says where the original is, and the offset moves on.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import pytest

from consumer.publisher import topic_record_limits, usable_record_bytes
from schemas import DLQ_KIND, DLQ_REASON, DLQ_SOURCE_OFFSET, parse_dead_letter_headers
from tests.consumer_harness import produce_raw, read_results, stop_after_commit, submit
from tests.helpers import create_topic, read_all, unique

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

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
    stop_after_commit(svc, replica, chunks, what="the committed offset to pass both chunks")


def test_a_request_too_large_to_copy_becomes_a_dead_letter_without_its_value(
    kafka_bootstrap: str,
    make_service: MakeService,
) -> None:
    """An invalid request over the record limit is dead-lettered empty, with its reason.

    With ``BATCH_RUNNER_MAX_MESSAGE_BYTES=1000`` and ``BATCH_RUNNER_MAX_RESULT_BYTES=2000``
    a 100 kB request is too large to process and too large to copy (the replica's
    producer refuses records over 2000 + 64 KiB outright). Its dead letter has an empty
    value and a reason naming the size, the limit and the source offset's role; a small
    poison message behind it keeps its bytes; a valid batch after both completes, and
    the replica is still running.
    """
    svc = make_service(
        BATCH_RUNNER_MAX_MESSAGE_BYTES="1000",
        BATCH_RUNNER_MAX_RESULT_BYTES="2000",
    )
    huge = b'{"schema":"batch-request/v1","padding":"' + b"x" * 100_000 + b'"}'
    produce_raw(kafka_bootstrap, svc.topics.requests, [huge, b"not json"])
    submit(kafka_bootstrap, svc.topics.requests, "after", [{"id": 1}], chunk_size=1)
    replica = svc.start()
    dead = read_all(kafka_bootstrap, svc.topics.dlq, expected=2)
    assert [m.value() for m in dead] == [b"", b"not json"]
    headers = [parse_dead_letter_headers(m.headers() or []) for m in dead]  # type: ignore[arg-type]
    assert [h[DLQ_KIND] for h in headers] == ["too_large", "not_json"]
    assert [int(h[DLQ_SOURCE_OFFSET]) for h in headers] == [0, 1]
    reason = headers[0][DLQ_REASON]
    assert f"the original ({len(huge) + len(b'raw')} bytes with its key)" in reason
    assert "over the 2000-byte record limit" in reason
    assert "read it at its source offset" in reason
    results, _, _ = read_results(kafka_bootstrap, svc.topics.results, expected_records=2)
    assert [r.status for r in results] == ["ok"]
    assert replica.process.poll() is None  # never stopped
    stop_after_commit(svc, replica, 3, what="the commit past both dead letters and the batch")


def test_the_limit_follows_a_results_topic_that_takes_smaller_records(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    make_service: MakeService,
) -> None:
    """A results topic with ``max.message.bytes`` 20,000 lowers the replica's record limit.

    The replica reads the topic's limit at start-up and says so; an item whose result
    would be refused by the broker (30,000 incompressible characters; with the default
    1,000,000-byte setting alone it would be produced and refused, stopping the replica)
    becomes a ``result_too_large`` error, and the batch completes. (Records are measured
    before compression, so the limit errs on the safe side.)
    """
    svc = make_service()
    small = create_topic(kafka_admin, unique("small-results"), 1, **{"max.message.bytes": "20000"})
    svc.topics = dataclasses.replace(svc.topics, results=small)
    # Random hex: lz4 cannot shrink it under the topic's limit, as it would a repeated
    # character (the broker checks the compressed batch).
    items: list[object] = [{"n": 0}, {"n": 1, "blob": os.urandom(15_000).hex()}, {"n": 2}]
    chunks = submit(kafka_bootstrap, svc.topics.requests, "small", items, chunk_size=3)
    replica = svc.start()
    results, summaries, _ = read_results(
        kafka_bootstrap, svc.topics.results, expected_records=len(items) + chunks
    )
    by_index = {r.index: r for r in results}
    assert [by_index[i].status for i in range(3)] == ["ok", "error", "ok"]
    error = by_index[1].error
    assert error is not None
    assert error.kind == "result_too_large"
    limit = 20_000 - 20_000 // 250 - 4096
    assert f"over the {limit}-byte limit" in error.message
    assert [(s.ok, s.error) for s in summaries] == [(2, 1)]
    lowered = [
        e for e in replica.events() if str(e.get("event")).startswith("a topic takes smaller")
    ]
    assert lowered, replica.log()[-3000:]
    assert lowered[0]["topic"] == svc.topics.results
    assert lowered[0]["max_message_bytes"] == 20_000
    assert lowered[0]["record_limit"] == limit
    stop_after_commit(svc, replica, 1, what="the commit past the batch")


def test_topic_record_limits_reads_each_topic_and_skips_what_it_cannot_read(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
) -> None:
    """A topic's own limit, the broker default for another, nothing for a missing topic."""
    small = create_topic(kafka_admin, unique("limit"), 1, **{"max.message.bytes": "50000"})
    plain = create_topic(kafka_admin, unique("limit"), 1)
    missing = unique("missing")
    limits = topic_record_limits({"bootstrap.servers": kafka_bootstrap}, [small, plain, missing])
    assert limits == {small: 50_000, plain: 1_048_588}  # Kafka's default
    assert usable_record_bytes(1_048_588) > 1_000_000  # the default setting fits the default
    assert usable_record_bytes(50_000) == 50_000 - 200 - 4096
