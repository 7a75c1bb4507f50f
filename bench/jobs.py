"""Scenario ``jobs``: the cost of ``status`` and ``collect`` with and without a full topic.

Batches as jobs promise that ``status`` (one partition of the compacted status topic) and
``collect`` (the batch's offset range on its results partition) cost O(batch), not
O(topic). The scenario measures both for a 3-item batch on empty topics, then produces
``unrelated`` results of other batches onto the same results partition with a bulk
producer, measures them again for a second 3-item batch, and reports the ratios (goal
≤ 1.2). Beside them, in the same run: the old scan (``collect --scan``) on the full topic
(when it is small enough to finish), the completion-event delay (the batch's last result
record's timestamp → its final status received by a plain consumer already waiting on
the status partition) and the cancel latency (the
cancel record acknowledged → the last new inference call of the batch at the server, and
→ the owner's ``cancelled`` status).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from bench.kafka_io import make_topics
from bench.procs import start_replica, stop_all
from bench.procs import wait_assigned as wait_replicas_assigned
from producer.jobs import cancel_batch, read_results_range, read_status
from producer.results import read_batch
from producer.submit import submit
from schemas import BatchStatus, Result, batch_partition, decode_status_record, encode_record

if TYPE_CHECKING:
    from bench.kafka_io import Topics
    from bench.procs import Server
    from bench.scenarios import Context

REPEAT = 5  # timings per figure; the median is reported
SCAN_LIMIT = 2_000_000  # above this many unrelated results, the scan is not timed
CANCEL_ITEMS = 3000


def _items(count: int) -> list[bytes]:
    return [orjson.dumps({"i": i}) for i in range(count)]


def _final(bootstrap: str, topics: Topics, batch_id: str) -> BatchStatus:
    status, _ = read_status(
        bootstrap, topics.status, batch_id, timeout_s=120, until=lambda s: s.final
    )
    if status is None or not status.final:
        raise TimeoutError(f"{batch_id}: no final status")
    return status


def _timed(fn: Any) -> float:  # noqa: ANN401 - any zero-argument call
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def _status_and_collect(bootstrap: str, topics: Topics, batch_id: str) -> tuple[float, float]:
    """Return the median milliseconds of ``status`` and of ``collect`` for ``batch_id``."""

    def status() -> BatchStatus | None:
        return read_status(bootstrap, topics.status, batch_id)[0]

    def collect() -> None:
        found = status()
        if found is None:
            raise RuntimeError(f"{batch_id}: no status")
        state = read_results_range(bootstrap, topics.results, found)
        if len(state.results) != found.total:
            raise RuntimeError(f"{batch_id}: {len(state.results)} of {found.total} results")

    status_ms = [_timed(status) for _ in range(REPEAT)]
    collect_ms = [_timed(collect) for _ in range(REPEAT)]
    return statistics.median(status_ms), statistics.median(collect_ms)


def _event_delay_ms(bootstrap: str, topics: Topics, batch_id: str) -> float:
    """Submit ``batch_id`` (3 items); return its last result written → final status received.

    A plain consumer of the batch's status partition, assigned at its end and polling
    before the submit, stands for any client waiting for the completion event.
    """
    waiter = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
         "fetch.wait.max.ms": 10}
    )  # fmt: skip
    seen: list[float] = []
    key = batch_id.encode()

    def wait() -> None:
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            msg = waiter.poll(0.1)
            if msg is None or msg.error() is not None or msg.key() != key:
                continue
            record = decode_status_record(msg.value() or b"")
            if isinstance(record, BatchStatus) and record.final:
                seen.append(time.time())

    partition = batch_partition(batch_id, topics.partitions)
    waiter.assign([TopicPartition(topics.status, partition, OFFSET_END)])
    waiter.poll(0.5)  # connected, positioned
    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    submit(_items(3), bootstrap_servers=bootstrap, topic=topics.requests, batch_id=batch_id,
           status_topic=topics.status)  # fmt: skip
    thread.join(70)
    waiter.close()
    status = _final(bootstrap, topics, batch_id)
    if not seen or status.results_partition is None or status.last_offset is None:
        raise RuntimeError(f"{batch_id}: no completion event seen")
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    try:
        reader.assign(
            [TopicPartition(topics.results, status.results_partition, status.last_offset)]
        )
        msg = None
        while msg is None or msg.error() is not None:
            msg = reader.poll(5)
        written = msg.timestamp()[1] / 1000
    finally:
        reader.close()
    return (seen[0] - written) * 1000


def _bulk_results(bootstrap: str, topic: str, count: int) -> float:
    """Produce ``count`` ok results of other batches to partition 0; return records/s."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 200,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "acks": 1,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    record = Result(
        schema="result/v1",
        batch_id="unrelated-0000",
        index=0,
        chunk=0,
        status="ok",
        attempts=1,
        latency_ms=1.0,
        prediction=1,
    )
    value = encode_record(record)
    keys = [f"unrelated-{n:04d}".encode() for n in range(1000)]
    started = time.perf_counter()
    produce = producer.produce
    for n in range(count):
        while True:
            try:
                produce(topic, value, keys[n % 1000], partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(600)
    if left:
        raise RuntimeError(f"{left} unrelated results not acknowledged")
    return count / (time.perf_counter() - started)


def _cancel_latency(bootstrap: str, topics: Topics, server: Server) -> dict[str, float]:
    """Cancel a long batch mid-way; return when the last call came and when it was final."""
    import urllib.request  # noqa: PLC0415 - only here

    def served() -> int:
        with urllib.request.urlopen(f"{server.url}/_control/stats", timeout=5) as answer:  # noqa: S310 - the local test server
            stats: dict[str, Any] = orjson.loads(answer.read())
        return int(stats["requests"])

    submit(_items(CANCEL_ITEMS), bootstrap_servers=bootstrap, topic=topics.requests,
           batch_id="cancel-1", status_topic=topics.status, chunk_size=100)  # fmt: skip
    start = served()
    while served() - start < 200:
        time.sleep(0.01)
    cancel_batch(bootstrap, topics.status, "cancel-1")
    cancelled_at, cancelled_wall = time.perf_counter(), time.time()
    last, count = cancelled_at, served()
    while time.perf_counter() - cancelled_at < 3.0:
        now = served()
        if now != count:
            last, count = time.perf_counter(), now
        time.sleep(0.005)
    status = _final(bootstrap, topics, "cancel-1")
    final_ms = ((status.completed_at or cancelled_wall) - cancelled_wall) * 1000
    return {
        "cancel_last_call_ms": round((last - cancelled_at) * 1000, 1),
        "cancel_to_cancelled_ms": round(final_ms, 1),
        "cancel_items_cancelled": status.cancelled,
    }


def jobs_cost(ctx: Context) -> dict[str, Any]:
    """Scenario ``jobs``: status and collect of a 3-item batch, empty topics vs N unrelated."""
    from bench.scenarios import Goal, result  # noqa: PLC0415 - the scenarios import this module

    unrelated = ctx.size(10_000_000, 20_000)
    topics = make_topics(ctx.bootstrap, 1)
    with ctx.server(20.0) as server:
        env = {
            **ctx.consumer_env(topics, server),
            "BATCH_RUNNER_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
            "BATCH_RUNNER_MAX_IN_FLIGHT": "4",
        }
        replica = start_replica(env, ctx.workdir, ctx.wrapper("jobs"))
        try:
            wait_replicas_assigned([replica], topics.request_partitions(), 120)
            delays = [_event_delay_ms(ctx.bootstrap, topics, "empty-1")]
            status_empty, collect_empty = _status_and_collect(ctx.bootstrap, topics, "empty-1")
            rate = _bulk_results(ctx.bootstrap, topics.results, unrelated)
            delays.append(_event_delay_ms(ctx.bootstrap, topics, "full-1"))
            status_full, collect_full = _status_and_collect(ctx.bootstrap, topics, "full-1")
            scan_ms = None
            if unrelated <= SCAN_LIMIT:
                scan_ms = _timed(lambda: read_batch(ctx.bootstrap, topics.results, "full-1"))
            cancel = _cancel_latency(ctx.bootstrap, topics, server)
        finally:
            stop_all([replica])
    figures = {
        "unrelated_results": unrelated,
        "bulk_produce_per_s": round(rate),
        "status_empty_ms": round(status_empty, 1),
        "status_full_ms": round(status_full, 1),
        "status_ratio": round(status_full / status_empty, 3),
        "collect_empty_ms": round(collect_empty, 1),
        "collect_full_ms": round(collect_full, 1),
        "collect_ratio": round(collect_full / collect_empty, 3),
        "scan_collect_full_ms": None if scan_ms is None else round(scan_ms, 1),
        "completion_event_delay_ms": [round(d, 1) for d in delays],
        **cancel,
    }
    beside = (
        f"{unrelated:,} unrelated results produced at {rate:,.0f}/s; status "
        f"{status_empty:.0f} → {status_full:.0f} ms, collect {collect_empty:.0f} → "
        f"{collect_full:.0f} ms (median of {REPEAT}, in-process)"
    )
    return result(
        f"jobs: status and collect of a 3-item batch, empty topics vs {unrelated:,} "
        "unrelated results",
        figures,
        [Goal("status_ratio", "<=", 1.2), Goal("collect_ratio", "<=", 1.2)],
        {},
        beside,
    )
