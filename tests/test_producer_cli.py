"""The user's commands end to end: ``batch-runner submit | tail | collect | status``.

Each test drives the real CLI as a subprocess against the real broker, the way a user or
a script would, and checks what landed on the topics, what was printed and the exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from producer.submit import plan_chunks
from schemas import (
    ResultErrorKind,
    decode_batch_request,
    decode_results_record,
    encode_batch_request,
)
from schemas.errors import BadInputError
from schemas.messages import encode_error_result, encode_ok_result, encode_summary
from tests.consumer_harness import produce_raw, stop_after_commit
from tests.helpers import read_all, unique, wait_for
from tools.localkafka.broker import free_port

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.consumer_harness import MakeService

pytestmark = pytest.mark.kafka

IRIS = [
    {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.5, "petal_width": 0.3},
    {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5},
]


def cli(
    *args: str,
    bootstrap: str | None = None,
    stdin: bytes | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``batch-runner ARGS`` and return the finished process (text output)."""
    env = dict(os.environ)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    if bootstrap is not None:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        check=False,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def submitted(bootstrap: str, topic: str, expected: int) -> list[object]:
    """Read ``expected`` request chunks back and return their items, in batch order."""
    chunks = [
        decode_batch_request(m.value() or b"")
        for m in read_all(bootstrap, topic, expected=expected)
    ]
    chunks.sort(key=lambda c: c.chunk)
    assert [c.chunk for c in chunks] == list(range(expected))
    assert all(c.chunks == expected for c in chunks)
    items = [orjson.loads(bytes(item)) for c in chunks for item in c.items]
    assert all(c.total == len(items) for c in chunks)
    return items


def test_submit_csv_jsonl_and_json_publish_exactly_the_items(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    """CSV (numbers typed), JSONL and a JSON array each arrive as the same chunked items."""
    csv_file = tmp_path / "iris.csv"
    csv_file.write_text(
        "sepal_length,sepal_width,petal_length,petal_width,name\n"
        + "".join(
            f"{r['sepal_length']},{r['sepal_width']},{r['petal_length']},{r['petal_width']},x\n"
            for r in IRIS
        ),
    )
    jsonl_file = tmp_path / "iris.jsonl"
    jsonl_file.write_bytes(b"\n".join(orjson.dumps(r) for r in IRIS) + b"\n\n")
    json_file = tmp_path / "iris.json"
    json_file.write_bytes(orjson.dumps(IRIS))
    expected_csv = [{**r, "name": "x"} for r in IRIS]
    for path, expected in ((csv_file, expected_csv), (jsonl_file, IRIS), (json_file, IRIS)):
        topic = make_topic("submit")
        done = cli(
            "submit", str(path), "--topic", topic, "--chunk-size", "2",
            "--target", "iris", "--items-per-request", "2", "--metadata", "owner=me",
            bootstrap=kafka_bootstrap,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        batch_id = done.stdout.strip()
        assert batch_id.startswith("batch-")
        assert submitted(kafka_bootstrap, topic, 2) == expected
        first = decode_batch_request(read_all(kafka_bootstrap, topic, expected=1)[0].value() or b"")
        assert (first.batch_id, first.target, first.items_per_request) == (batch_id, "iris", 2)
        assert first.metadata == {"owner": "me"}
        assert "submitted 3 items in 2 chunks" in done.stderr


def test_submit_from_stdin_with_a_chosen_batch_id(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
) -> None:
    """``-`` reads stdin; ``--batch-id`` is used as given and becomes the key."""
    topic = make_topic("stdin")
    lines = b"\n".join(orjson.dumps(r) for r in IRIS)
    done = cli(
        "submit", "-", "--format", "jsonl", "--topic", topic, "--batch-id", "my-batch.1", "--quiet",
        bootstrap=kafka_bootstrap, stdin=lines,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "my-batch.1"
    assert done.stderr == ""
    record = read_all(kafka_bootstrap, topic, expected=1)[0]
    assert record.key() == b"my-batch.1"
    assert submitted(kafka_bootstrap, topic, 1) == IRIS


def test_byte_cap_splits_chunks_and_rejects_an_oversized_item() -> None:
    """Chunks respect both the item count and the byte cap; one item over it is named."""
    items = [b"x" * 100] * 10
    plan = plan_chunks(items, chunk_size=4, max_message_bytes=1024 + 350, envelope_bytes=1024)
    assert [len(c.items) for c in plan] == [3, 3, 3, 1]
    assert [c.start for c in plan] == [0, 3, 6, 9]
    with pytest.raises(BadInputError, match="item 1 is 2000 bytes: over the 2024-byte"):
        plan_chunks([b"1", b"y" * 2000], chunk_size=10, max_message_bytes=2024, envelope_bytes=1024)


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.json", "missing.json: no such file"),
        (b"a,b\n1,2\n3\n", "bad.csv", "bad.csv:3: unreadable CSV row: expected 2 fields, got 1"),
        (b'a,b\n1,"2"x\n', "quote.csv", "quote.csv:2: unreadable CSV row: ','"),
        (b'"a,b\n1,2\n', "head.csv", "head.csv:2: unreadable CSV header: unexpected end"),
        (b'{"a": 1}\n{"a": \n', "bad.jsonl", "bad.jsonl:2: not valid JSON"),
        (b"", "empty.jsonl", "empty.jsonl: no items (the input is empty)"),
        (b'{"not": "an array"}', "object.json", "expected a JSON array of items, got dict"),
    ],
    ids=[
        "missing-file",
        "short-csv-row",
        "broken-csv-quote",
        "broken-csv-header",
        "bad-jsonl-line",
        "empty",
        "not-an-array",
    ],
)
def test_bad_input_files_get_a_clear_error_and_exit_2(
    kafka_bootstrap: str,
    tmp_path: Path,
    content: bytes | None,
    name: str,
    message: str,
) -> None:
    """Unreadable input names the file and line, exits 2, and publishes nothing."""
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    done = cli("submit", str(path), bootstrap=kafka_bootstrap)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_oversized_item_is_rejected_before_anything_is_sent(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    """An item larger than the message cap fails the whole submit; the topic stays empty."""
    topic = make_topic("big")
    path = tmp_path / "big.jsonl"
    path.write_bytes(b'{"a": 1}\n' + orjson.dumps({"blob": "x" * 5000}) + b"\n")
    done = cli(
        "submit",
        str(path),
        "--topic",
        topic,
        "--max-message-bytes",
        "4096",
        bootstrap=kafka_bootstrap,
    )
    assert done.returncode == 2
    assert "item 1 is 5011 bytes" in done.stderr
    with pytest.raises(AssertionError, match="read 0 of 1"):
        read_all(kafka_bootstrap, topic, expected=1, timeout_s=3)


def test_missing_topic_says_so_and_create_topic_creates_it(
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """A missing topic exits 4 and offers --create-topic, which then works."""
    topic = unique("absent")
    path = tmp_path / "iris.json"
    path.write_bytes(orjson.dumps(IRIS))
    done = cli("submit", str(path), "--topic", topic, bootstrap=kafka_bootstrap)
    assert done.returncode == 4
    assert f"topic '{topic}' does not exist" in done.stderr
    assert "--create-topic" in done.stderr
    created = cli(
        "submit",
        str(path),
        "--topic",
        topic,
        "--create-topic",
        "--partitions",
        "2",
        bootstrap=kafka_bootstrap,
    )
    assert created.returncode == 0, created.stderr
    assert submitted(kafka_bootstrap, topic, 1) == IRIS


def test_unreachable_broker_fails_within_the_timeout(tmp_path: Path) -> None:
    """With nothing listening, submit gives up after --timeout with exit 4, not a hang."""
    path = tmp_path / "iris.json"
    path.write_bytes(orjson.dumps(IRIS))
    started = time.monotonic()
    done = cli("submit", str(path), "--timeout", "3", bootstrap=f"127.0.0.1:{free_port()}")
    elapsed = time.monotonic() - started
    assert done.returncode == 4
    assert "cannot reach Kafka at 127.0.0.1:" in done.stderr
    assert elapsed < 30


def test_no_cluster_configured_is_a_usage_error(tmp_path: Path) -> None:
    """Without KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers, submit says what to set."""
    path = tmp_path / "iris.json"
    path.write_bytes(orjson.dumps(IRIS))
    done = cli("submit", str(path))
    assert done.returncode == 2
    assert "set KAFKA_BOOTSTRAP_SERVERS" in done.stderr


def _write_results(bootstrap: str, topic: str, batch_id: str, order: list[int], total: int) -> None:
    """Write results (in ``order``, repeats allowed) and one summary, as the service would."""
    request = decode_batch_request(
        encode_batch_request(
            batch_id=batch_id,
            items=[b"0"] * total,
            start=0,
            total=total,
            chunk=0,
            chunks=1,
        ),
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    for index in order:
        if index == 3:
            value = encode_error_result(
                request, index, ResultErrorKind.HTTP_STATUS, "HTTP 500", 500, 60, 9.0
            )
        else:
            value = encode_ok_result(
                request, index, orjson.dumps({"label": index}), 1, float(index)
            )
        producer.produce(topic, key=batch_id, value=value)
    producer.produce(topic, key=batch_id, value=encode_summary(request, total - 1, 1))
    producer.produce(topic, key="other", value=b"not ours")
    assert producer.flush(30) == 0


def test_collect_writes_input_order_without_duplicates_and_joins_inputs(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    """Out-of-order, repeated results collect to one line per item, in order, errors too."""
    topic = make_topic("results", partitions=3)
    _write_results(kafka_bootstrap, topic, "b-collect", [4, 0, 2, 1, 0, 3, 4, 2], total=5)
    out = tmp_path / "out.jsonl"
    done = cli("collect", "b-collect", "-o", str(out), "--topic", topic, bootstrap=kafka_bootstrap)
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2, 3, 4]
    assert lines[0]["prediction"] == {"label": 0}
    assert lines[3]["status"] == "error"
    assert lines[3]["error"]["http_status"] == 500
    summary = orjson.loads(done.stderr.strip().splitlines()[-1])
    assert summary["duplicates_ignored"] == 3
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes(b"".join(orjson.dumps({"id": f"row-{i}"}) + b"\n" for i in range(5)))
    joined = cli(
        "collect",
        "b-collect",
        "--join-input",
        str(inputs),
        "--topic",
        topic,
        bootstrap=kafka_bootstrap,
    )
    assert joined.returncode == 0, joined.stderr
    rows = [orjson.loads(line) for line in joined.stdout.splitlines()]
    assert [(r["id"], r["index"]) for r in rows] == [(f"row-{i}", i) for i in range(5)]


def test_collect_of_an_incomplete_batch_reports_what_is_missing(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    """A batch with items still pending exits 1 and says how many are missing."""
    topic = make_topic("partial")
    request = decode_batch_request(
        encode_batch_request(
            batch_id="b-part", items=[b"1"] * 4, start=0, total=4, chunk=0, chunks=1
        ),
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key="b-part", value=encode_ok_result(request, 1, b"1", 1, 1.0))
    assert producer.flush(30) == 0
    done = cli(
        "collect",
        "b-part",
        "-o",
        str(tmp_path / "o.jsonl"),
        "--topic",
        topic,
        bootstrap=kafka_bootstrap,
    )
    assert done.returncode == 1
    assert "1 of 2 items have no result yet" in done.stderr or "have no result yet" in done.stderr


def test_submit_tail_collect_and_status_with_a_real_consumer(
    kafka_bootstrap: str,
    make_service: MakeService,
    tmp_path: Path,
) -> None:
    """Submit → a real consumer → tail --until-complete, collect and status agree."""
    svc = make_service(partitions=2)
    svc.start()
    items = tmp_path / "items.jsonl"
    items.write_bytes(b"".join(orjson.dumps({"n": i}) + b"\n" for i in range(250)))
    done = cli(
        "submit", str(items), "--topic", svc.topics.requests, "--batch-id", "e2e",
        "--chunk-size", "100",
        bootstrap=kafka_bootstrap,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tail = cli(
        "tail", "--topic", svc.topics.results, "--until-complete", "e2e",
        "--timeout", "60", "--json",
        bootstrap=kafka_bootstrap, timeout=90,
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    printed = [decode_results_record(line.encode()) for line in tail.stdout.splitlines()]
    assert sorted(getattr(r, "index", -1) for r in printed) == list(range(250))
    summary = orjson.loads(tail.stderr.strip().splitlines()[-1])
    assert (summary["ok"], summary["errors"], summary["total"]) == (250, 0, 250)
    assert summary["p99_latency_ms"] >= summary["p50_latency_ms"] > 0
    assert summary["p99_queue_ms"] >= summary["p50_queue_ms"] >= 0
    out = tmp_path / "out.jsonl"
    collected = cli(
        "collect",
        "e2e",
        "-o",
        str(out),
        "--topic",
        svc.topics.results,
        bootstrap=kafka_bootstrap,
    )
    assert collected.returncode == 0, collected.stderr
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["prediction"] for r in rows] == [{"n": i} for i in range(250)]
    assert all(r["queue_ms"] >= 0 for r in rows)
    status = cli(
        "status", "e2e", "--json", "--group", svc.group,
        "--requests-topic", svc.topics.requests, "--dlq-topic", svc.topics.dlq,
        "--results-topic", svc.topics.results, bootstrap=kafka_bootstrap,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    report = orjson.loads(status.stdout)
    assert (report["submitted"], report["ok"], report["pending"]) == (250, 250, 0)
    assert len(report["lag"]) == 2
    assert (report["dead_letters"], report["group_note"]) == (0, None)


def status_of(bootstrap: str, batch_id: str, group: str, *topics: str) -> tuple[int, str, str]:
    """Run ``status`` for ``batch_id`` in text and JSON; return the exit code and both outputs."""
    requests, results, dlq = topics
    common = (
        "status", batch_id, "--group", group, "--requests-topic", requests,
        "--results-topic", results, "--dlq-topic", dlq,
    )  # fmt: skip
    text = cli(*common, bootstrap=bootstrap)
    as_json = cli(*common, "--json", bootstrap=bootstrap)
    assert text.returncode == as_json.returncode, text.stderr + as_json.stderr
    return text.returncode, text.stdout, as_json.stdout


def test_status_says_when_the_group_is_unknown(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    """A group no consumer joined is named unknown, its partitions committed none, not -1."""
    topics = (make_topic("requests", partitions=2), make_topic("results"), make_topic("dlq"))
    done = cli("submit", "-", "--topic", topics[0], "--batch-id", "b-unknown",
               bootstrap=kafka_bootstrap, stdin=orjson.dumps(IRIS))  # fmt: skip
    assert done.returncode == 0, done.stderr
    code, text, as_json = status_of(kafka_bootstrap, "b-unknown", unique("typo-group"), *topics)
    assert code == 0
    report = orjson.loads(as_json)
    assert report["group_state"] == "dead"
    assert "is unknown to the cluster" in report["group_note"]
    assert [row["committed"] for row in report["lag"]] == [None, None]
    assert "note: group 'typo-group-" in text
    assert "is unknown to the cluster" in text
    assert "committed none" in text
    assert "committed -1" not in text


def test_status_says_when_a_joined_group_has_committed_nothing(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    """A group with a member and no commits is reported as such, with its state."""
    topics = (make_topic("requests"), make_topic("results"), make_topic("dlq"))
    group = unique("idle-group")
    member = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    member.subscribe([topics[0]])
    try:
        wait_for(lambda: member.poll(0.2) is None and member.assignment(), what="an assignment")
        _, text, as_json = status_of(kafka_bootstrap, "b-idle", group, *topics)
    finally:
        member.close()
    report = orjson.loads(as_json)
    assert (report["group_state"], report["group_members"]) == ("stable", 1)
    assert report["group_note"] == (
        f"group {group!r} (stable, 1 members) has committed nothing on {topics[0]} yet"
    )
    assert "has committed nothing" in text


def test_status_counts_a_batch_that_went_wholly_to_the_dead_letter_topic(
    kafka_bootstrap: str, make_service: MakeService
) -> None:
    """Invalid requests keyed by the batch id: status points at the dead letters and why."""
    svc = make_service()
    produce_raw(kafka_bootstrap, svc.topics.requests, [b"not json", b'{"schema": 1}'], key="b-dlq")
    stop_after_commit(svc, svc.start(), 2, what="both invalid requests to be done")
    topics = (svc.topics.requests, svc.topics.results, svc.topics.dlq)
    code, text, as_json = status_of(kafka_bootstrap, "b-dlq", svc.group, *topics)
    assert code == 1
    report = orjson.loads(as_json)
    assert (report["submitted"], report["dead_letters"]) == (None, 2)
    assert len(report["dead_letter_reasons"]) == 2
    assert report["group_note"] is None
    assert "batch b-dlq: not found among valid requests" in text
    assert f"dead letters 2 on {svc.topics.dlq}" in text


def test_tail_does_not_join_or_commit_for_the_service_group(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
) -> None:
    """Tail reads every partition without a group: the service's group has no commits after."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    def reader_groups() -> set[str]:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        groups = admin.list_consumer_groups().result(timeout=10)
        return {g.group_id for g in groups.valid if g.group_id.startswith("batch-runner-reader")}

    topic = make_topic("results", partitions=2)
    _write_results(kafka_bootstrap, topic, "b-tail", [0, 1, 2, 3, 4], total=5)
    before = reader_groups()  # the broker may be shared with other runs
    done = cli(
        "tail", "--topic", topic, "--until-complete", "b-tail", "--timeout", "30", "--json",
        bootstrap=kafka_bootstrap,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 5
    assert reader_groups() <= before
