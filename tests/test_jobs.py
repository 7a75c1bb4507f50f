"""Batches as jobs end to end: real broker, real HTTP server, replicas and the CLI as processes.

The lifecycle on ``batch-status`` (submitted → in_progress → a final state), the completion
event as any Kafka client sees it, ``wait``/``status``/``collect`` from the status record,
cancel mid-batch, deadline expiry, chunks on a foreign partition, and exact counts after a
SIGKILL of the owner and a rebalance.
"""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from schemas import (
    BatchStatus,
    batch_partition,
    decode_status_record,
    encode_batch_request,
)
from tests.consumer_harness import committed_total, read_results
from tests.helpers import end_offsets, unique, wait_for
from tests.test_producer_cli import cli
from tools.localkafka.broker import free_port

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from confluent_kafka import Message

    from tests.consumer_harness import MakeService, Service
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka


def statuses(bootstrap: str, topic: str, batch_id: str) -> list[BatchStatus]:
    """Read every status record of ``batch_id`` so far, as a plain consumer would."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("plain"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([topic])
    found: list[BatchStatus] = []
    eof: set[int] = set()
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            msgs: list[Message] = consumer.consume(500, 0.5)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    eof.add(msg.partition() or 0)
                    continue
                record = decode_status_record(msg.value() or b"")
                if isinstance(record, BatchStatus) and record.batch_id == batch_id:
                    found.append(record)
            assignment = consumer.assignment()
            if assignment and eof >= {tp.partition for tp in assignment}:
                break
    finally:
        consumer.close()
    return found


def final_status(bootstrap: str, topic: str, batch_id: str) -> BatchStatus:
    """Wait until a plain consumer sees the batch's completion event; return it."""

    def probe() -> BatchStatus | None:
        seen = statuses(bootstrap, topic, batch_id)
        return seen[-1] if seen and seen[-1].final else None

    return wait_for(probe, timeout_s=90, interval_s=0.5, what=f"{batch_id} final")


def write_items(tmp_path: Path, items: Sequence[object]) -> str:
    """Write ``items`` as a JSON Lines file; return its path."""
    path = tmp_path / f"{unique('items')}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return str(path)


def submit_cli(svc: Service, path: str, batch_id: str, *extra: str) -> None:
    """Submit ``path`` with ``batch-runner submit``."""
    done = cli(
        "submit",
        path,
        "--topic",
        svc.topics.requests,
        "--status-topic",
        svc.topics.status,
        "--batch-id",
        batch_id,
        "--quiet",
        *extra,
        bootstrap=svc.bootstrap,
    )
    assert done.returncode == 0, done.stderr


def test_a_batch_goes_submitted_in_progress_completed_and_any_consumer_sees_the_event(
    make_service: MakeService, tmp_path: Path
) -> None:
    """Submit writes ``submitted``; the owner ``in_progress`` then ``completed``, counts exact.

    ``wait`` exits 0; ``status`` answers from the record (no scan note); ``collect`` reads
    only the results range the record names and gives every item; a plain consumer of the
    status topic sees the states in order, the last one final.
    """
    svc = make_service(partitions=2)
    items = [{"x": i} for i in range(7)]
    submit_cli(svc, write_items(tmp_path, items), "life-1", "--chunk-size", "3")
    seen = statuses(svc.bootstrap, svc.topics.status, "life-1")
    assert [s.state for s in seen] == ["submitted"]
    svc.start()
    waited = cli(
        "wait", "life-1", "--status-topic", svc.topics.status, "--timeout", "90s",
        bootstrap=svc.bootstrap, timeout=120,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    report = json.loads(waited.stdout)
    assert (report["state"], report["ok"], report["errors"]) == ("completed", 7, 0)
    final = final_status(svc.bootstrap, svc.topics.status, "life-1")
    assert (final.chunks_done, final.done_ranges, final.done, final.total) == (3, [(0, 3)], [], 7)
    assert final.submitted_at is not None
    assert final.completed_at is not None
    states = [s.state for s in statuses(svc.bootstrap, svc.topics.status, "life-1")]
    assert states[0] == "submitted"
    assert "in_progress" in states
    assert states[-1] == "completed"
    status = cli("status", "life-1", "--status-topic", svc.topics.status, bootstrap=svc.bootstrap)
    assert status.returncode == 0, status.stderr
    assert "completed" in status.stdout
    assert "scanning" not in status.stderr
    collected = cli(
        "collect", "life-1", "--topic", svc.topics.results, "--status-topic", svc.topics.status,
        bootstrap=svc.bootstrap,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr
    assert "scanning" not in collected.stderr
    lines = [json.loads(line) for line in collected.stdout.splitlines()]
    assert [line["index"] for line in lines] == list(range(7))
    assert [line["prediction"] for line in lines] == items


def test_errors_end_in_completed_with_errors_and_wait_exits_1(
    make_service: MakeService, tmp_path: Path
) -> None:
    """Items the model refuses (400) count as errors; the state is ``completed_with_errors``."""
    svc = make_service()
    items = [{"x": 0}, {"x": 1, "fail": 400}, {"x": 2}, {"x": 3, "fail": 400}]
    submit_cli(svc, write_items(tmp_path, items), "errs-1", "--chunk-size", "2")
    svc.start()
    waited = cli(
        "wait", "errs-1", "--status-topic", svc.topics.status, "--timeout", "90s",
        bootstrap=svc.bootstrap, timeout=120,
    )  # fmt: skip
    assert waited.returncode == 1, waited.stderr
    report = json.loads(waited.stdout)
    assert (report["state"], report["ok"], report["errors"]) == ("completed_with_errors", 2, 2)


def test_status_and_collect_scan_with_a_note_for_a_batch_without_a_status_record(
    make_service: MakeService,
) -> None:
    """A batch another client produced (no ``submitted``, before any replica) still answers.

    Before the replica runs there is no status record: ``status`` says so and scans.
    """
    svc = make_service()
    producer = Producer({"bootstrap.servers": svc.bootstrap})
    value = encode_batch_request(
        batch_id="other-1", items=[b"1", b"2"], start=0, total=2, chunk=0, chunks=1
    )
    producer.produce(svc.topics.requests, key="other-1", value=value)
    assert producer.flush(10) == 0
    status = cli(
        "status", "other-1", "--status-topic", svc.topics.status,
        "--requests-topic", svc.topics.requests, "--results-topic", svc.topics.results,
        bootstrap=svc.bootstrap,
    )  # fmt: skip
    assert "no status record for other-1: scanning" in status.stderr
    assert "submitted 2 items" in status.stdout


def cancel_and_wait(svc: Service, batch_id: str, timeout: str) -> dict[str, Any]:
    """Cancel the batch with the CLI, wait for it (exit 3: cancelled); return the report."""
    cancelled = cli(
        "cancel", batch_id, "--status-topic", svc.topics.status, bootstrap=svc.bootstrap
    )
    assert cancelled.returncode == 0, cancelled.stderr
    waited = cli(
        "wait", batch_id, "--status-topic", svc.topics.status, "--timeout", timeout,
        bootstrap=svc.bootstrap, timeout=120,
    )  # fmt: skip
    assert waited.returncode == 3, waited.stderr
    report: dict[str, Any] = json.loads(waited.stdout)
    return report


def test_cancel_mid_batch_stops_calls_marks_summaries_and_moves_the_offsets_on(
    make_service: MakeService, server: TestInferenceServer, tmp_path: Path
) -> None:
    """After ``cancel`` the replica sends nothing more for the batch; the rest is cancelled.

    One request in flight at a time, 100 ms each: 60 items would take 6 s. After a few
    results the batch is cancelled: its state goes ``cancelling`` then ``cancelled`` (wait
    exits 3), ok + errors = 60 with the rest of kind ``cancelled``, the summaries count
    them, the model saw fewer than 60 items and no new request once the state was final,
    and the committed offset reached the end of the requests partition.
    """
    server.configure(latency_ms=100.0)
    svc = make_service(BATCH_RUNNER_MAX_IN_FLIGHT="1")
    items = [{"x": i} for i in range(60)]
    submit_cli(svc, write_items(tmp_path, items), "cancel-1", "--chunk-size", "10")
    svc.start()
    wait_for(lambda: server.stats().items >= 5, timeout_s=60, what="a few answers")
    report = cancel_and_wait(svc, "cancel-1", "90s")
    assert report["state"] == "cancelled"
    assert report["ok"] + report["errors"] == 60
    assert report["cancelled"] == report["errors"] > 0
    served = server.stats().items
    assert served < 60
    states = [s.state for s in statuses(svc.bootstrap, svc.topics.status, "cancel-1")]
    assert "cancelling" in states
    results, summaries, _ = read_results(svc.bootstrap, svc.topics.results, expected_records=60 + 6)
    assert sum(s.cancelled for s in summaries) == report["cancelled"]
    kinds = {r.error.kind for r in results if r.error is not None}
    assert kinds == {"cancelled"}
    wait_for(lambda: committed_total(svc) == 6, what="the offset at the end")
    assert server.stats().items == served  # nothing more was sent


def test_a_cancelled_batch_queued_behind_a_hung_request_is_answered_at_once(
    make_service: MakeService, server: TestInferenceServer, tmp_path: Path
) -> None:
    """Units still waiting for a request place get their cancelled results at once.

    The replica's one request place is held by another batch's request that hangs for
    the 60 s request timeout; the cancelled batch's 30 units wait behind it. The cancel
    answers them without waiting for the place: ``cancelled`` within 30 s, all 30 items
    counted, none sent to the model.
    """
    svc = make_service(
        BATCH_RUNNER_MAX_IN_FLIGHT="1",
        BATCH_RUNNER_REQUEST_TIMEOUT_S="60",
        BATCH_RUNNER_DRAIN_TIMEOUT_S="2",
    )
    submit_cli(svc, write_items(tmp_path, [{"fail": "hang"}]), "hold-1")
    submit_cli(svc, write_items(tmp_path, [{"x": i} for i in range(30)]), "cancel-2")
    svc.start()
    wait_for(lambda: server.stats().requests >= 1, timeout_s=60, what="the hung request")
    report = cancel_and_wait(svc, "cancel-2", "30s")
    assert (report["state"], report["cancelled"], report["ok"]) == ("cancelled", 30, 0)
    assert server.stats().requests == 1  # only the hung one


def test_items_not_started_by_the_deadline_expire(
    make_service: MakeService, server: TestInferenceServer, tmp_path: Path
) -> None:
    """``submit --deadline 1s`` and no replica until it passed: every item ``expired``."""
    svc = make_service()
    items = [{"x": i} for i in range(4)]
    submit_cli(svc, write_items(tmp_path, items), "late-1", "--deadline", "1s")
    passed = time.time() + 1.5
    wait_for(lambda: time.time() > passed, what="the deadline to pass")
    svc.start()
    waited = cli(
        "wait", "late-1", "--status-topic", svc.topics.status, "--timeout", "90s",
        bootstrap=svc.bootstrap, timeout=120,
    )  # fmt: skip
    assert waited.returncode == 3, waited.stderr
    report = json.loads(waited.stdout)
    assert (report["state"], report["expired"], report["ok"]) == ("expired", 4, 0)
    assert server.stats().items == 0
    results, _, _ = read_results(svc.bootstrap, svc.topics.results, expected_records=5)
    assert {r.error.kind for r in results if r.error is not None} == {"expired"}


def test_chunks_on_another_partition_are_counted_by_the_batch_owner(
    make_service: MakeService,
) -> None:
    """A client that put a batch's chunks on the wrong partition still gets an exact status.

    Two chunks on the batch's own partition, one on the other: the replica owning the
    other sends a progress record; the owner counts all three.
    """
    svc = make_service(partitions=2)
    own = batch_partition("foreign-1", 2)
    producer = Producer({"bootstrap.servers": svc.bootstrap})
    for chunk, partition in enumerate((own, 1 - own, own)):
        value = encode_batch_request(
            batch_id="foreign-1",
            items=[b"%d" % (chunk * 2), b"%d" % (chunk * 2 + 1)],
            start=chunk * 2,
            total=6,
            chunk=chunk,
            chunks=3,
        )
        producer.produce(svc.topics.requests, key="foreign-1", value=value, partition=partition)
    placed: list[int | None] = []
    producer.produce(
        svc.topics.results,  # unread by the replicas: only where the key lands matters
        key="foreign-1",
        value=b"{}",
        on_delivery=lambda _err, msg: placed.append(msg.partition()),
    )
    assert producer.flush(10) == 0
    assert placed == [own]  # librdkafka's default partitioner agrees with batch_partition
    svc.start()
    svc.start()
    final = final_status(svc.bootstrap, svc.topics.status, "foreign-1")
    assert (final.state, final.ok, final.chunks_done) == ("completed", 6, 3)


def test_a_dead_lettered_request_of_a_batch_fails_it_and_wait_exits_1(
    make_service: MakeService,
) -> None:
    """Chunk 1 of 2 is not a request at all: the batch can never complete, so ``failed``.

    Chunk 0 is processed and counted; the dead letter of chunk 1 makes the state
    ``failed`` (final), so ``wait`` returns (exit 1) instead of waiting for ever.
    """
    svc = make_service(partitions=2)
    own = batch_partition("broken-1", 2)
    producer = Producer({"bootstrap.servers": svc.bootstrap})
    good = encode_batch_request(
        batch_id="broken-1", items=[b"1", b"2"], start=0, total=4, chunk=0, chunks=2
    )
    for value in (good, b"not json"):
        producer.produce(svc.topics.requests, key="broken-1", value=value, partition=own)
    assert producer.flush(10) == 0
    svc.start()
    waited = cli(
        "wait", "broken-1", "--status-topic", svc.topics.status, "--timeout", "90s",
        bootstrap=svc.bootstrap, timeout=120,
    )  # fmt: skip
    assert waited.returncode == 1, waited.stderr
    assert json.loads(waited.stdout)["state"] == "failed"
    final = final_status(svc.bootstrap, svc.topics.status, "broken-1")
    assert (final.state, final.ok, final.chunks_done) == ("failed", 2, 1)


def test_status_survives_a_sigkill_of_its_owner_and_a_rebalance_with_exact_counts(
    make_service: MakeService, server: TestInferenceServer, tmp_path: Path
) -> None:
    """Kill the owner mid-batch, start two replicas: the batch completes, counted once.

    Chunks the killed replica finished but never committed are redone (their results are
    written twice); the new owner restores the batch from the status partition and finds
    those chunks done: the final counts are exactly the batch's items and chunks.

    The killed replica is the first step of a rolling upgrade (``--status-done-list``): its
    records also list the done chunks one by one, as older replicas read them (their rule:
    ``chunks_done`` = the list's length). The replicas after it write ranges only, and
    read the killed one's records.
    """
    server.configure(latency_ms=50.0)
    svc = make_service(
        partitions=2, BATCH_RUNNER_MAX_IN_FLIGHT="1", BATCH_RUNNER_COMMIT_INTERVAL_S="30"
    )
    items = [{"x": i} for i in range(120)]
    submit_cli(svc, write_items(tmp_path, items), "kill-1", "--chunk-size", "5")
    first = svc.start(BATCH_RUNNER_STATUS_DONE_LIST="true")
    # A few chunks done (and counted) but none committed: the commit interval is long.
    wait_for(lambda: server.stats().items >= 30, timeout_s=60, what="a few chunks done")
    first.signal(signal.SIGKILL)
    first.wait(30)
    upgrading = statuses(svc.bootstrap, svc.topics.status, "kill-1")
    assert max(s.chunks_done for s in upgrading) >= 2
    assert not any(s.final for s in upgrading)
    for status in upgrading:  # submit's record, then the first replica's
        assert len(set(status.done)) == status.chunks_done, status  # what older replicas check
        assert status.done == [c for a, b in status.done_ranges for c in range(a, b)]
    svc.start()
    svc.start()
    final = final_status(svc.bootstrap, svc.topics.status, "kill-1")
    assert (final.state, final.ok, final.errors) == ("completed", 120, 0)
    assert (final.chunks_done, final.done_ranges, final.done) == (24, [(0, 24)], [])
    written = sum(end_offsets(svc.bootstrap, svc.topics.results, 2).values())
    assert written > 120 + 24  # chunks were redone: their records are on the topic twice
    results, _, _ = read_results(svc.bootstrap, svc.topics.results, expected_records=written)
    assert {r.index for r in results} == set(range(120))
    print(f"records written {written} for 120 items and 24 summaries")  # noqa: T201


def test_retry_resubmits_exactly_the_failed_items_and_verify_is_clean(
    make_service: MakeService, server: TestInferenceServer, tmp_path: Path
) -> None:
    """Two items fail once (400, then fine): retry sends exactly those two, with their indexes.

    Attempt 1 ends ``completed_with_errors`` and verifies clean (every index has one final
    outcome); ``retry`` submits attempt 2 with the two items; the batch ends ``completed``;
    ``collect`` gives every index its latest attempt's result; ``verify`` counts 6 ok.
    """
    svc = make_service()
    items = [{"x": i} for i in range(6)]
    items[1]["fail"] = [400]  # type: ignore[assignment] # a directive for the test server
    items[4]["fail"] = [400]  # type: ignore[assignment]
    submit_cli(svc, write_items(tmp_path, items), "retry-1", "--chunk-size", "4")
    svc.start()
    topics = (
        "--requests-topic", svc.topics.requests, "--results-topic", svc.topics.results,
        "--status-topic", svc.topics.status,
    )  # fmt: skip
    waited = cli("wait", "retry-1", *topics[4:], "--timeout", "90s", bootstrap=svc.bootstrap)
    assert waited.returncode == 1, waited.stderr
    first = cli("verify", "retry-1", *topics, bootstrap=svc.bootstrap)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (json.loads(first.stdout)["ok"], json.loads(first.stdout)["error"]) == (4, 2)
    sent_before = server.stats().items
    retried = cli("retry", "retry-1", *topics, bootstrap=svc.bootstrap)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == {"batch_id": "retry-1", "attempt": 2, "items": 2}
    waited = cli("wait", "retry-1", *topics[4:], "--timeout", "90s", bootstrap=svc.bootstrap)
    assert waited.returncode == 0, waited.stderr
    report = json.loads(waited.stdout)
    assert (report["state"], report["attempt"], report["ok"], report["errors"]) == (
        "completed",
        2,
        6,
        0,
    )
    assert server.stats().items - sent_before == 2  # exactly the failed items
    collected = cli(
        "collect", "retry-1", "--topic", svc.topics.results, "--status-topic",
        svc.topics.status, bootstrap=svc.bootstrap,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr
    lines = [json.loads(line) for line in collected.stdout.splitlines()]
    assert [(line["index"], line["status"]) for line in lines] == [(i, "ok") for i in range(6)]
    verified = cli("verify", "retry-1", *topics, bootstrap=svc.bootstrap)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] == 6


def test_job_commands_answer_bad_input_and_missing_pieces_clearly(
    make_service: MakeService, tmp_path: Path
) -> None:
    """Each job command says what is wrong, with its exit code.

    A bad ``--deadline`` (2); ``wait`` without a status topic or cluster (4) and for a batch with no
    final status within its timeout (5); ``retry`` and ``verify`` of an unknown batch (1);
    ``cancel`` of a batch already final (1).
    """
    svc = make_service()
    path = write_items(tmp_path, [{"x": 1}])
    bad = cli("submit", path, "--topic", svc.topics.requests, "--deadline", "soon",
              bootstrap=svc.bootstrap)  # fmt: skip
    assert bad.returncode == 2
    assert "duration 'soon'" in bad.stderr
    nowhere = cli("wait", "x", "--status-topic", unique("absent"), bootstrap=svc.bootstrap)
    assert nowhere.returncode == 4
    assert "no status topic" in nowhere.stderr
    unreachable = cli("wait", "x", "--timeout", "2s", bootstrap=f"127.0.0.1:{free_port()}")
    assert unreachable.returncode == 4
    assert "cannot reach Kafka" in unreachable.stderr
    pending = cli("wait", "nobody", "--status-topic", svc.topics.status, "--timeout", "1s",
                  bootstrap=svc.bootstrap)  # fmt: skip
    assert pending.returncode == 5
    assert "not final within 1s (no status record)" in pending.stderr
    topics = ("--requests-topic", svc.topics.requests, "--results-topic", svc.topics.results,
              "--status-topic", svc.topics.status)  # fmt: skip
    retried = cli("retry", "nobody", *topics, bootstrap=svc.bootstrap)
    assert retried.returncode == 1
    assert "no status record" in retried.stderr
    verified = cli("verify", "nobody", *topics, bootstrap=svc.bootstrap)
    assert verified.returncode == 1
    assert "no status record: nothing to verify against" in verified.stderr
    submit_cli(svc, path, "done-1")
    svc.start()
    final_status(svc.bootstrap, svc.topics.status, "done-1")
    late = cli("cancel", "done-1", "--status-topic", svc.topics.status, bootstrap=svc.bootstrap)
    assert late.returncode == 1
    assert "already completed" in late.stderr
