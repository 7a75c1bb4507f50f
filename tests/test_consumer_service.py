"""The consumer service end to end: real broker, real HTTP server, replicas as processes.

Every rule of the delivery semantics has a test here: results for every item, commits
that never pass unfinished work, retries, dead letters, crash and graceful restarts,
scaling out, and backpressure that keeps a slow replica in its group.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from chaos.fleet import metric_value
from schemas import DLQ_KIND, DLQ_REASON, DLQ_SOURCE_OFFSET, parse_dead_letter_headers
from tests.consumer_harness import (
    Service,
    committed_total,
    create_topics,
    produce_raw,
    read_results,
    stop_after_commit,
    submit,
    wait_exit,
)
from tests.helpers import committed_offsets, end_offsets, http_get, read_all, wait_for
from tools.localkafka.broker import LocalKafka, free_port

if TYPE_CHECKING:
    from pathlib import Path

    from tests.consumer_harness import MakeService
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka


def test_happy_path_every_item_gets_one_ok_result_and_the_offset_reaches_the_end(
    kafka_bootstrap: str,
    make_service: MakeService,
) -> None:
    """Every item of a 1,000-item batch gets one ok result and the offset reaches the end.

    Ten chunks: 1,000 ok results with the right indices and predictions, ten summaries,
    and the committed offset at the end of the requests topic.
    """
    svc = make_service()
    items = [{"id": i, "x": i * 0.5} for i in range(1000)]
    started = time.monotonic()
    chunks = submit(kafka_bootstrap, svc.topics.requests, "happy", items, chunk_size=100)
    replica = svc.start(BATCH_RUNNER_ITEMS_PER_REQUEST="1")
    results, summaries, _ = read_results(
        kafka_bootstrap,
        svc.topics.results,
        expected_records=1000 + chunks,
    )
    elapsed = time.monotonic() - started
    print(f"happy path: 1000 items in {elapsed:.2f}s ({1000 / elapsed:.0f} items/s)")  # noqa: T201
    assert sorted(r.index for r in results) == list(range(1000))
    for result in results:
        assert result.status == "ok"
        assert result.batch_id == "happy"
        assert result.prediction == items[result.index]
        assert result.attempts == 1
    assert sorted(s.chunk for s in summaries) == list(range(chunks))
    assert all(s.ok == 100 and s.error == 0 for s in summaries)
    stop_after_commit(svc, replica, chunks, what="the committed offset to reach the end")


def test_commit_never_passes_a_slow_chunk(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """The committed offset never passes a slow chunk that later chunks overtook.

    While the first chunk is in flight and the four after it are done, the broker's
    committed offset stays at 0; once it is done the offset jumps to the end.
    """
    svc = make_service()
    submit(
        kafka_bootstrap, svc.topics.requests, "slow", [{"id": 0, "delay_ms": 4000}], chunk_size=1
    )
    fast = [{"id": i} for i in range(40)]
    submit(kafka_bootstrap, svc.topics.requests, "fast", fast, chunk_size=10)
    svc.start()
    # The four fast chunks are answered and acknowledged while the slow one waits.
    read_all(kafka_bootstrap, svc.topics.results, expected=40 + 4, timeout_s=30)
    for _ in range(10):
        offsets = committed_offsets(kafka_bootstrap, svc.group, svc.topics.requests, 1)
        assert offsets[0] < 1, f"committed {offsets[0]} past the unfinished chunk at 0"
        time.sleep(0.1)
    assert server.stats().in_flight == 1  # the slow chunk is really still in flight
    wait_for(lambda: committed_total(svc, 1) == 5, what="the commit after the slow chunk")


def test_retries_recover_or_end_in_an_error_result(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """Retryable failures recover with the right attempt counts; the rest become errors.

    503 then 200, 429 with Retry-After, a reset and a timeout recover on attempt 2; a
    permanent 500 ends as an error after the attempt cap; a 400 fails at once; the rest
    of the batch completes.
    """
    server.configure(retry_after_s=0.2)
    svc = make_service(
        BATCH_RUNNER_MAX_ATTEMPTS="3",
        BATCH_RUNNER_BACKOFF_BASE_S="0.05",
        BATCH_RUNNER_BACKOFF_MAX_S="0.1",
        BATCH_RUNNER_REQUEST_TIMEOUT_S="1",
        BATCH_RUNNER_MAX_RESPONSE_BYTES="300",
    )
    items: list[object] = [
        {"id": "unavailable", "fail": [503, "ok"]},
        {"id": "throttled", "fail": [429, "ok"]},
        {"id": "reset", "fail": ["reset", "ok"]},
        {"id": "hang", "fail": ["hang", "ok"]},
        {"id": "poison", "fail": "permanent"},
        {"id": "bad-request", "fail": 400},
        {"id": "garbage", "fail": "garbage"},
        {"id": "wrong-count", "fail": "wrong_count"},
        {"id": "huge-answer", "padding": "x" * 400},
        *[{"id": f"plain-{i}"} for i in range(20)],
    ]
    submit(kafka_bootstrap, svc.topics.requests, "retries", items, chunk_size=len(items))
    svc.start()
    results, summaries, _ = read_results(
        kafka_bootstrap,
        svc.topics.results,
        expected_records=len(items) + 1,
    )
    by_id = {items[r.index]["id"]: r for r in results}  # type: ignore[index]
    assert len(by_id) == len(items)
    for name in ("unavailable", "throttled", "reset", "hang"):
        assert by_id[name].status == "ok", by_id[name]
        assert by_id[name].attempts == 2, (name, by_id[name])
    poison = by_id["poison"]
    assert poison.status == "error"
    assert poison.attempts == 3
    assert poison.error is not None
    assert poison.error.kind == "http_status"
    assert poison.error.http_status == 500
    bad = by_id["bad-request"]
    assert bad.status == "error"
    assert bad.attempts == 1
    assert bad.error is not None
    assert bad.error.http_status == 400
    expected_errors = {
        "garbage": ("bad_response", 3),  # a 200 that is not JSON: retried, then an error
        "wrong-count": ("wrong_count", 1),  # the model answered: retrying cannot help
        "huge-answer": ("response_too_large", 1),
    }
    for name, (kind, tries) in expected_errors.items():
        result = by_id[name]
        assert result.status == "error", result
        assert result.error is not None
        assert (result.error.kind, result.attempts) == (kind, tries), result
    assert all(by_id[f"plain-{i}"].status == "ok" for i in range(20))
    assert summaries[0].ok == len(items) - 5
    assert summaries[0].error == 5
    per_item = server.stats().attempts
    assert max(per_item.values()) == 3  # poison and garbage: never more than the cap


def test_poison_messages_go_to_the_dlq_and_the_offset_moves_on(
    kafka_bootstrap: str,
    make_service: MakeService,
) -> None:
    """Invalid messages become dead letters with their reason, and the offset moves on.

    Non-JSON, invalid UTF-8, a wrong schema and an oversized message are copied to the
    DLQ unchanged with reason headers; a valid batch behind them completes.
    """
    svc = make_service(BATCH_RUNNER_MAX_MESSAGE_BYTES="20000")
    poison = [
        b"definitely { not json",
        b"\x00\xff invalid UTF-8",
        orjson.dumps({"schema": "batch-request/v1", "batch_id": "x", "items": "nope"}),
        orjson.dumps({"schema": "batch-request/v1", "padding": "x" * 30000}),
    ]
    produce_raw(kafka_bootstrap, svc.topics.requests, poison)
    submit(kafka_bootstrap, svc.topics.requests, "after-poison", [{"id": 1}], chunk_size=1)
    svc.start()
    dead = read_all(kafka_bootstrap, svc.topics.dlq, expected=len(poison))
    assert [m.value() for m in dead] == poison  # original bytes, unchanged
    headers = [parse_dead_letter_headers(m.headers() or []) for m in dead]  # type: ignore[arg-type]
    kinds = [h[DLQ_KIND] for h in headers]
    assert kinds == ["not_json", "encoding", "schema", "too_large"]
    assert headers[2][DLQ_REASON].startswith("items: expected `array`")
    assert [int(h[DLQ_SOURCE_OFFSET]) for h in headers] == [0, 1, 2, 3]
    results, _, _ = read_results(kafka_bootstrap, svc.topics.results, expected_records=2)
    assert [r.status for r in results] == ["ok"]
    wait_for(lambda: committed_total(svc, 1) == 5, what="the commit past the poison")


def test_sigkill_mid_batch_loses_nothing(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """A replica killed mid-batch loses nothing: a new one in the group finishes the batch.

    Every item has a result, and duplicates only come from chunks that were not
    committed when the first replica died.
    """
    server.configure(latency_ms=20.0)
    svc = make_service(BATCH_RUNNER_MAX_IN_FLIGHT="8")
    items = [{"id": i} for i in range(1500)]
    chunks = submit(kafka_bootstrap, svc.topics.requests, "crash", items, chunk_size=50)
    first = svc.start()
    read_all(kafka_bootstrap, svc.topics.results, expected=400, timeout_s=60)
    first.signal(signal.SIGKILL)
    first.wait(30)
    committed = committed_total(svc, 1)
    assert committed < chunks, "the replica finished before it was killed"
    svc.start()
    total = end_offsets(kafka_bootstrap, svc.topics.results, 1)[0]
    wait_for(
        lambda: committed_total(svc, 1) == chunks,
        timeout_s=90,
        what="the second replica to finish the batch",
    )
    total = end_offsets(kafka_bootstrap, svc.topics.results, 1)[0]
    results, _, _ = read_results(kafka_bootstrap, svc.topics.results, expected_records=total)
    counts = Counter(r.index for r in results)
    assert set(counts) == set(range(len(items))), "an item has no result"
    for index, count in counts.items():
        if count > 1:
            chunk = index // 50
            assert chunk >= committed, f"item {index} of committed chunk {chunk} repeated"


def test_sigterm_drains_commits_and_a_restart_repeats_nothing(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """SIGTERM drains, commits and exits 0; a restarted replica repeats nothing.

    The first replica finishes what it fetched; a new replica completes the rest, and
    no item has two results.
    """
    server.configure(latency_ms=20.0)
    svc = make_service(
        BATCH_RUNNER_MAX_IN_FLIGHT="8",
        BATCH_RUNNER_MAX_BUFFERED_ITEMS="200",
    )
    items = [{"id": i} for i in range(1500)]
    chunks = submit(kafka_bootstrap, svc.topics.requests, "drain", items, chunk_size=50)
    first = svc.start()
    read_all(kafka_bootstrap, svc.topics.results, expected=300, timeout_s=60)
    first.signal(signal.SIGTERM)
    assert wait_exit(first, 60) == 0
    committed = committed_total(svc, 1)
    assert 0 < committed < chunks
    svc.start()
    wait_for(
        lambda: committed_total(svc, 1) == chunks,
        timeout_s=90,
        what="the second replica to finish the batch",
    )
    total = end_offsets(kafka_bootstrap, svc.topics.results, 1)[0]
    results, summaries, _ = read_results(
        kafka_bootstrap,
        svc.topics.results,
        expected_records=total,
    )
    counts = Counter(r.index for r in results)
    assert set(counts) == set(range(len(items)))
    assert max(counts.values()) == 1, "a drained replica's work was repeated"
    assert len(summaries) == chunks


def test_two_replicas_share_partitions_and_hand_over_without_loss(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """Two replicas share a 4-partition topic and hand over without loss.

    Both produce results; stopping one hands its partitions to the other, and every
    item of every batch gets a result.
    """
    server.configure(latency_ms=10.0)
    svc = make_service(partitions=4, BATCH_RUNNER_MAX_IN_FLIGHT="8")
    a = svc.start()
    b = svc.start()
    batches = {f"batch-{n}": [{"batch": n, "i": i} for i in range(200)] for n in range(8)}
    wait_for(
        lambda: all("partitions assigned" in r.log() for r in (a, b)),
        what="both replicas to get partitions",
    )
    for batch_id, items in batches.items():
        submit(kafka_bootstrap, svc.topics.requests, batch_id, items, chunk_size=50)
    read_all(kafka_bootstrap, svc.topics.results, expected=400, timeout_s=60)
    b.signal(signal.SIGTERM)
    assert wait_exit(b, 60) == 0
    expected = sum(len(v) for v in batches.values()) + 4 * len(batches)
    results, _, messages = read_results(
        kafka_bootstrap,
        svc.topics.results,
        expected_records=expected,
        timeout_s=120,
    )
    seen = {(r.batch_id, r.index) for r in results}
    assert seen == {(b_id, i) for b_id, items in batches.items() for i in range(len(items))}
    replicas = {dict(m.headers() or []).get("batch-runner-replica") for m in messages}
    assert len(replicas) == 2, f"results came from {replicas}"


def read_each_item_once(kafka_bootstrap: str, svc: Service, items: int, chunks: int) -> None:
    """Read the results of one batch of ``items`` (and ``chunks`` summaries): one per item."""
    results, _, _ = read_results(
        kafka_bootstrap,
        svc.topics.results,
        expected_records=items + chunks,
        timeout_s=120,
    )
    assert Counter(r.index for r in results) == Counter(range(items))


def test_backpressure_keeps_a_slow_replica_in_its_group(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """Backpressure keeps a slow replica in its group past max.poll.interval.ms.

    With a tiny buffer cap and a slow server the replica pauses fetching, is never
    revoked, and finishes every item exactly once.
    """
    server.configure(latency_ms=100.0)
    svc = make_service(
        BATCH_RUNNER_MAX_IN_FLIGHT="2",
        BATCH_RUNNER_MAX_BUFFERED_ITEMS="4",
        BATCH_RUNNER_LOG_LEVEL="DEBUG",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_MAX_POLL_INTERVAL_MS="7000",
    )
    items = [{"id": i} for i in range(160)]
    chunks = submit(kafka_bootstrap, svc.topics.requests, "slow-drip", items, chunk_size=4)
    replica = svc.start()
    read_each_item_once(kafka_bootstrap, svc, len(items), chunks)
    log = replica.log()
    assert "paused fetching" in log
    assert "partitions revoked" not in log
    assert "partitions lost" not in log
    assert server.stats().max_in_flight <= 2


def test_a_full_buffer_that_drains_fast_waits_for_room_instead_of_pausing(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """With one partition and a fast model, a full buffer is waited out, not paused.

    A pause makes librdkafka drop what it prefetched and fetch it again after the resume:
    the replica used to pause and resume each time its buffer filled (51 pauses for 100
    messages of 4 items through a buffer of 8). Nothing else wants fetching, so it now
    waits for room and pauses only when none comes within a poll timeout, which a commit
    round due shortens to 20 ms (6 to 8 pauses for those 100 messages, about one per
    round); every item is still answered once. The paused-partitions gauge still shows
    the saturated replica: a partition waited out counts as one not fetched.
    """
    server.configure(latency_ms=1.0)
    svc = make_service(
        BATCH_RUNNER_MAX_IN_FLIGHT="8",
        BATCH_RUNNER_MAX_BUFFERED_ITEMS="8",
        BATCH_RUNNER_LOG_LEVEL="DEBUG",
    )
    items = [{"id": i} for i in range(800)]
    chunks = submit(kafka_bootstrap, svc.topics.requests, "fast-drip", items, chunk_size=4)
    port = free_port()
    replica = svc.start(BATCH_RUNNER_METRICS_PORT=str(port))

    def gauge(name: str) -> float | None:
        text = http_get(f"http://127.0.0.1:{port}/metrics")[1]  # b"" until it listens
        return metric_value(text, name)

    wait_for(lambda: gauge("batch_runner_buffered_items"), what="the replica to take work")
    # Saturated, the fetch loop waits for room nearly all the time: 48-50 readings of 50
    # showed the partition not fetched (11 before the gauge counted a partition waited
    # out, which it then showed only while paused).
    readings = [gauge("batch_runner_paused_partitions") for _ in range(50)]
    assert readings.count(1.0) > 35, f"{readings}"
    read_each_item_once(kafka_bootstrap, svc, len(items), chunks)
    pauses = replica.log().count("paused fetching")
    assert pauses < chunks / 4, f"{pauses} pauses for {chunks} messages"


def test_configuration_errors_fail_at_start_up_before_joining(
    kafka_bootstrap: str,
    make_service: MakeService,
) -> None:
    """A missing endpoint, a missing topic or a bad Kafka option exit 2 with a clear message.

    None of them joins the group.
    """
    svc = make_service()
    cases = [
        ({"BATCH_RUNNER_ENDPOINT": ""}, "no inference endpoint is configured"),
        ({"BATCH_RUNNER_REQUESTS_TOPIC": "no-such-topic"}, "no-such-topic do not exist"),
        ({"KAFKA_NO_SUCH_OPTION": "1"}, "No such configuration property"),
        ({"BATCH_RUNNER_MAX_IN_FLIGHT": "0"}, "max_in_flight must be > 0"),
    ]
    for env, message in cases:
        replica = svc.start(**env)
        assert wait_exit(replica, 60) == 2, replica.log()
        assert message in replica.log()
    groups = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_consumer_groups()
    assert svc.group not in {g.group_id for g in groups.result(timeout=10).valid}


def test_second_signal_stops_at_once_without_committing(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """SIGTERM starts a drain; a second SIGTERM exits 130 at once and commits nothing unfinished."""
    server.configure(latency_ms=60_000.0)
    svc = make_service()
    submit(kafka_bootstrap, svc.topics.requests, "stuck", [{"id": 1}], chunk_size=1)
    replica = svc.start()
    try:
        wait_for(lambda: server.stats().in_flight == 1, what="the request to reach the server")
        replica.signal(signal.SIGTERM)
        wait_for(lambda: "draining" in replica.log(), what="the drain to start")
        replica.signal(signal.SIGTERM)
        assert wait_exit(replica, 20) == 130
        assert committed_total(svc, 1) == 0
    finally:
        server.release_hangs()


def test_a_broker_that_goes_away_and_comes_back_loses_nothing(
    server: TestInferenceServer,
    tmp_path: Path,
) -> None:
    """The broker frozen mid-batch (SIGSTOP) then resumed: every item still gets a result.

    The replica neither crashes nor commits past undelivered results.
    """
    server.configure(latency_ms=5.0)
    with LocalKafka() as kafka:
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        topics = create_topics(admin)
        svc = Service(kafka.bootstrap_servers, topics, server.endpoint("v1"), tmp_path)
        items = [{"id": i} for i in range(600)]
        chunks = submit(kafka.bootstrap_servers, topics.requests, "frozen", items, chunk_size=20)
        replica = svc.start(BATCH_RUNNER_MAX_IN_FLIGHT="4")
        try:
            read_all(kafka.bootstrap_servers, topics.results, expected=50, timeout_s=60)
            os.kill(kafka.pid, signal.SIGSTOP)
            try:
                time.sleep(6)  # the broker is away; the replica must wait, not fail
                assert replica.process.poll() is None, replica.log()
            finally:
                os.kill(kafka.pid, signal.SIGCONT)
            wait_for(
                lambda: committed_total(svc, 1) == chunks,
                timeout_s=120,
                what="the batch to finish after the broker came back",
            )
            total = end_offsets(kafka.bootstrap_servers, topics.results, 1)[0]
            results, _, _ = read_results(
                kafka.bootstrap_servers,
                topics.results,
                expected_records=total,
            )
            assert {r.index for r in results} == set(range(len(items)))
            assert replica.process.poll() is None
        finally:
            svc.stop_all()
