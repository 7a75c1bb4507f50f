"""The chunk book and the record writer, in process: no broker, a fake record sink.

The writer is driven the way the pipeline drives it, through a sink that keeps every
record and lets the test deliver (or refuse) each one, as httpx tests its client through
a mock transport. What needs a broker stays in the broker tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
import pytest
from confluent_kafka import KafkaError

from consumer.chunk import Chunk
from consumer.chunks import ChunkBook
from consumer.metrics import Metrics
from consumer.outcome import Outcome
from consumer.resume import ChunkProgress
from consumer.splitter import WorkUnit
from consumer.writer import RecordWriter
from schemas import (
    ChunkSummary,
    InvalidMessage,
    Result,
    ResultErrorKind,
    decode_batch_request,
    decode_results_record,
    encode_batch_request,
    parse_dead_letter_headers,
)

if TYPE_CHECKING:
    from consumer.offsets import PartitionKey
    from consumer.publisher import DeliveryCallback, Headers

P0: PartitionKey = ("requests", 0)
P1: PartitionKey = ("requests", 1)
RESULTS, DLQ = "results", "dlq"


def make_chunk(tp: PartitionKey, offset: int, size: int, epoch: int = 1) -> Chunk:
    """Return a chunk of ``size`` items (``{"i": n}``) received at ``tp``/``offset``."""
    data = encode_batch_request(
        batch_id=f"b{tp[1]}",
        items=[orjson.dumps({"i": n}) for n in range(size)],
        start=0,
        total=size,
        chunk=0,
        chunks=1,
    )
    return Chunk(tp, offset, decode_batch_request(data), [], 0, epoch)


@dataclass
class Record:
    """One record the writer produced, with its delivery callback."""

    topic: str
    value: bytes
    key: bytes | str | None
    on_delivery: DeliveryCallback
    headers: Headers | None


@dataclass(frozen=True)
class Landed:
    """Where a delivered record landed: what the writer reads of a delivery report."""

    at: int

    def partition(self) -> int:
        """Return the results partition (one here)."""
        return 0

    def offset(self) -> int:
        """Return the record's offset."""
        return self.at


@dataclass
class FakeSink:
    """Keeps produced records; the test delivers or refuses them."""

    records: list[Record] = field(default_factory=list)
    delivered: int = 0

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        """Keep the record."""
        self.records.append(Record(topic, value, key, on_delivery, headers))

    def deliver(self, error: KafkaError | None = None) -> None:
        """Report every kept record delivered (or failed with ``error``), then forget them."""
        records, self.records = self.records, []
        for record in records:
            landed = Landed(self.delivered)
            self.delivered += 1
            record.on_delivery(error, landed)  # type: ignore[arg-type] # what the writer reads


@dataclass
class Listener:
    """Records what the writer reports."""

    chunks: list[Chunk] = field(default_factory=list)
    dead_letters: list[tuple[PartitionKey, int, int]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    def chunk_delivered(self, chunk: Chunk) -> None:
        """Take a finished chunk."""
        self.chunks.append(chunk)

    def dead_letter_delivered(self, tp: PartitionKey, offset: int, epoch: int) -> None:
        """Take a delivered dead letter."""
        self.dead_letters.append((tp, offset, epoch))

    def delivery_failed(self, error: BaseException) -> None:
        """Take a refused record."""
        self.failures.append(error)


def make_writer(limit: int = 10_000) -> tuple[RecordWriter, FakeSink, Listener]:
    """Return a writer with a fake sink and listener, both topics limited to ``limit``."""
    sink, listener = FakeSink(), Listener()
    writer = RecordWriter(
        sink.produce,
        listener,
        Metrics(),
        results_topic=RESULTS,
        dlq_topic=DLQ,
        record_limits={RESULTS: limit, DLQ: limit},
        group_id="g",
    )
    return writer, sink, listener


def ok(predictions: list[bytes]) -> Outcome:
    """Return a successful outcome with these predictions."""
    return Outcome(predictions, attempts=1, latency_ms=2.0, queue_ms=1.0)


def decoded(records: list[Record]) -> list[Result | ChunkSummary]:
    """Decode the results-topic records."""
    return [decode_results_record(r.value) for r in records]


def test_a_chunk_is_delivered_only_when_every_result_and_its_summary_are_acknowledged() -> None:
    """Results per unit, the summary after the last unit, and one report after all acks."""
    writer, sink, listener = make_writer()
    chunk = make_chunk(P0, 7, 4)
    items = chunk.request.items
    writer.write_unit(chunk, WorkUnit(0, items[:2]), ok([b"10", b"11"]))
    assert [r.index for r in decoded(sink.records) if isinstance(r, Result)] == [0, 1]
    sink.deliver()
    assert listener.chunks == []  # the chunk has units to go
    writer.write_unit(chunk, WorkUnit(2, items[2:]), ok([b"12", b"13"]))
    records = decoded(sink.records)
    assert [r.prediction for r in records if isinstance(r, Result)] == [12, 13]
    summary = records[-1]
    assert isinstance(summary, ChunkSummary)
    assert (summary.ok, summary.error) == (4, 0)
    assert {r.key for r in sink.records} == {"b0"}
    sink.deliver()
    assert listener.chunks == [chunk]
    assert listener.failures == []


def test_errors_oversized_predictions_and_refused_records() -> None:
    """An error outcome gives each item its error; an oversized prediction is an error.

    A refused record is reported as a failure and the chunk is never delivered.
    """
    writer, sink, listener = make_writer(limit=300)
    chunk = make_chunk(P0, 0, 3)
    items = chunk.request.items
    failed = Outcome(None, 3, 5.0, ResultErrorKind.HTTP_STATUS, "HTTP 400: bad", 400)
    writer.write_unit(chunk, WorkUnit(0, items[:1]), failed)
    big = orjson.dumps("x" * 400)
    writer.write_unit(chunk, WorkUnit(1, items[1:]), ok([b"1", big]))
    records = decoded(sink.records)
    kinds = [r.error.kind if r.error else None for r in records if isinstance(r, Result)]
    assert kinds == [ResultErrorKind.HTTP_STATUS, None, ResultErrorKind.RESULT_TOO_LARGE]
    summary = records[-1]
    assert isinstance(summary, ChunkSummary)
    assert (summary.ok, summary.error) == (1, 2)
    sink.deliver(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert listener.chunks == []
    assert len(listener.failures) == 4


def test_a_dead_letter_keeps_the_original_or_says_where_it_is() -> None:
    """A dead letter copies key and value with reason headers; too large, it has no value."""
    writer, sink, listener = make_writer(limit=100)
    error = InvalidMessage("not_json", "expected a JSON object")
    writer.dead_letter(P1, 5, 3, key=b"k", value=b"{not json", error=error)
    writer.dead_letter(P1, 6, 3, key=b"k", value=b"x" * 200, error=error)
    small, large = sink.records
    assert (small.topic, small.key, small.value) == (DLQ, b"k", b"{not json")
    headers = parse_dead_letter_headers(small.headers or [])  # type: ignore[arg-type]
    assert headers["dlq.kind"] == "not_json"
    assert headers["dlq.source.offset"] == "5"
    assert large.value == b""
    reason = parse_dead_letter_headers(large.headers or [])["dlq.reason"]  # type: ignore[arg-type]
    assert "over the 100-byte record limit" in reason
    assert "read it at its source offset" in reason
    sink.deliver()
    assert listener.dead_letters == [(P1, 5, 3), (P1, 6, 3)]


def test_the_book_counts_the_buffer_and_knows_stale_chunks() -> None:
    """Registering fills the buffer; completion frees it; a stale chunk does not count.

    The room event clears when the buffer is full and is set again below the resume
    threshold; fetch sizes follow the room and the average chunk size.
    """
    book = ChunkBook(max_buffered_items=10)
    book.assign([P0])
    first_epoch = book.epoch(P0)
    assert first_epoch is not None
    a, b = make_chunk(P0, 0, 6, first_epoch), make_chunk(P0, 1, 4, first_epoch)
    book.register(a)
    assert book.fetch_size(poll_batch=100) == 1  # 4 items of room, 6 per message
    book.register(b)
    assert book.full
    assert not book.room.is_set()
    assert book.complete(a)
    assert book.buffered_items == 4
    assert book.can_resume
    assert book.room.is_set()
    book.drop([P0])  # revoked...
    book.assign([P0])  # ...and given back: a new epoch
    assert book.epoch(P0) != first_epoch
    assert b.abandoned
    assert not book.complete(b)
    assert book.buffered_items == 0


def test_handing_back_drops_every_chunk_from_the_first_untouched_one() -> None:
    """Per partition: touched chunks before the first untouched one stay, the rest go."""
    book = ChunkBook(max_buffered_items=100)
    book.assign([P0, P1])
    chunks = [make_chunk(P0, offset, 2) for offset in range(4)]
    chunks[0].pending_items = 1  # results published: touched
    chunks[2].pending_items = 0  # touched, but after an untouched one
    other = make_chunk(P1, 0, 2)
    for chunk in [*chunks, other]:
        book.register(chunk)
    assert book.hand_back_untouched([P0]) == 6
    assert book.in_flight(P0) == [chunks[0]]
    assert [c.abandoned for c in chunks] == [False, True, True, True]
    assert book.in_flight(P1) == [other]
    assert book.buffered_items == 4


def test_with_resume_handing_back_drops_only_the_untouched_chunks() -> None:
    """With item-level resume a touched chunk after an untouched one stays to finish.

    The commit metadata vouches for it (finished, or its acknowledged items): dropping it
    made the next owner repeat the results it had published.
    """
    book = ChunkBook(max_buffered_items=100, resume=True)
    book.assign([P0])
    chunks = [make_chunk(P0, offset, 2) for offset in range(4)]
    chunks[0].pending_items = 1  # results published: touched
    chunks[2].pending_items = 0  # touched, after an untouched one
    for chunk in chunks:
        book.register(chunk)
    assert book.hand_back_untouched([P0]) == 4
    assert book.in_flight(P0) == [chunks[0], chunks[2]]
    assert [c.abandoned for c in chunks] == [False, True, False, True]
    assert book.buffered_items == 4


async def test_waiting_for_a_partition_to_go_idle() -> None:
    """wait_idle returns True once the partition's chunks complete, False at the timeout.

    Dropping a partition cancels the units still running for its chunks.
    """
    book = ChunkBook(max_buffered_items=100)
    book.assign([P0])
    chunk = make_chunk(P0, 0, 1)
    book.register(chunk)
    assert not await book.wait_idle([P0], 0.01)
    asyncio.get_running_loop().call_later(0.01, book.complete, chunk)
    assert await book.wait_idle([P0], 5.0)
    running = make_chunk(P0, 1, 1)
    book.register(running)
    unit = asyncio.create_task(asyncio.sleep(60))
    running.tasks.add(unit)
    book.drop([P0])
    with pytest.raises(asyncio.CancelledError):
        await unit
    assert await book.wait_idle([P0], 0.01)


def test_partitions_with_work_share_the_buffer() -> None:
    """A partition over its share of the buffer is paused; it resumes well below it.

    Two partitions with work share a 100-item buffer: the one holding 50 is paused, the
    other fetches on; a full buffer pauses both; a partition without work does not count,
    so one alone may use the whole buffer; fetches never take more than one share.
    """
    book = ChunkBook(max_buffered_items=100)
    book.assign([P0, P1])
    first = make_chunk(P0, 0, 50)
    book.register(first)

    def backlog(tp: PartitionKey) -> bool:
        return tp == P1

    assert book.pause_plan([P0, P1], set(), backlog) == ([P0], [])
    assert book.fetch_size(poll_batch=500) == 1  # 50 items of room, 50 per message
    book.register(make_chunk(P1, 0, 50))
    assert book.pause_plan([P0, P1], {P0}, backlog) == ([P1], [])  # full: all paused
    book.complete(first)
    # P0 has no work left, so P1 alone has work and its share is the whole buffer.
    assert book.pause_plan([P0, P1], {P0, P1}, backlog) == ([], [P0, P1])
    alone = ChunkBook(max_buffered_items=100)
    alone.assign([P0, P1])
    alone.register(make_chunk(P0, 0, 90))
    assert alone.pause_plan([P0, P1], set(), lambda _: False) == ([], [])


def test_results_carry_custom_ids_and_usage_and_the_metric_counts_tokens() -> None:
    """Batch lines' custom_ids reach every result, errors included; answers' usage too.

    The token metric adds up the usage of the answers written; an answer too large to
    keep gets an error result that still names its line and the tokens it used.
    """
    sink, listener = FakeSink(), Listener()
    metrics = Metrics()
    writer = RecordWriter(
        sink.produce,
        listener,
        metrics,
        results_topic=RESULTS,
        dlq_topic=DLQ,
        record_limits={RESULTS: 400, DLQ: 400},
        group_id="g",
    )
    lines = [orjson.dumps({"custom_id": f"q{n}", "body": {"model": "m"}}) for n in range(3)]
    data = encode_batch_request(batch_id="llm", items=lines, start=0, total=3, chunk=0, chunks=1)
    chunk = Chunk(P0, 0, decode_batch_request(data), [], 0, 1)
    items = chunk.request.items
    answer = b'{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
    writer.write_unit(chunk, WorkUnit(0, items[:1]), ok([answer]))
    big = orjson.dumps({"x": "y" * 500, "usage": {"prompt_tokens": 1, "total_tokens": 1}})
    writer.write_unit(chunk, WorkUnit(1, items[1:2]), ok([big]))
    failed = Outcome(None, 60, 5.0, ResultErrorKind.TIMEOUT, "no answer")
    writer.write_unit(chunk, WorkUnit(2, items[2:]), failed)
    results = [r for r in decoded(sink.records) if isinstance(r, Result)]
    assert [r.custom_id for r in results] == ["q0", "q1", "q2"]
    assert [r.error.kind if r.error else None for r in results] == [
        None,
        ResultErrorKind.RESULT_TOO_LARGE,
        ResultErrorKind.TIMEOUT,
    ]
    assert results[0].usage is not None
    assert results[0].usage.total_tokens == 7
    assert results[1].usage is not None  # the answer was too large to keep, its tokens spent
    assert results[1].usage.prompt_tokens == 1
    assert results[2].usage is None
    registry = metrics.registry
    assert registry.get_sample_value("batch_runner_tokens_total", {"kind": "prompt"}) == 6
    assert registry.get_sample_value("batch_runner_tokens_total", {"kind": "completion"}) == 2


def test_a_partition_holding_nothing_fetches_even_when_the_buffer_is_full() -> None:
    """A new batch on a quiet partition is not stuck behind a full buffer (newcomers).

    The full buffer pauses the partition that holds the items, leaves the empty one
    fetching (one message at a time) and resumes it if it was paused; without newcomers
    (``--fairness partitions``) both are paused, as before.
    """
    book = ChunkBook(max_buffered_items=100)
    book.assign([P0, P1])
    book.register(make_chunk(P0, 0, 100))
    assert book.full
    assert book.pause_plan([P0, P1], set(), lambda _: False) == ([P0], [])
    assert book.pause_plan([P0, P1], {P0, P1}, lambda _: False) == ([], [P1])
    assert book.fetch_size(poll_batch=500) == 1
    book.register(make_chunk(P1, 0, 3))
    assert book.pause_plan([P0, P1], {P0}, lambda _: False) == ([P1], [])
    fifo = ChunkBook(max_buffered_items=100, newcomers=False)
    fifo.assign([P0, P1])
    fifo.register(make_chunk(P0, 0, 100))
    assert fifo.pause_plan([P0, P1], set(), lambda _: False) == ([P0, P1], [])


def test_acknowledged_units_become_done_ranges_with_their_ok_and_error_counts() -> None:
    """What item-level resume commits: only units whose results are all acknowledged."""
    writer, sink, _ = make_writer()
    chunk = make_chunk(P0, 3, 6)
    items = chunk.request.items
    writer.write_unit(chunk, WorkUnit(4, items[4:]), ok([b"4", b"5"]))
    failed = Outcome(None, 1, 1.0, ResultErrorKind.BAD_ITEM, "bad")
    writer.write_unit(chunk, WorkUnit(0, items[:2]), failed)
    first, *rest = sink.records
    sink.records = rest
    first.on_delivery(None, Landed(0))  # type: ignore[arg-type] # what the writer reads
    assert chunk.done == ()  # one of the unit's two results is still unacknowledged
    sink.deliver()
    progress = chunk.progress
    assert progress is not None
    assert (progress.done, progress.ok, progress.error) == (((0, 2), (4, 6)), 2, 2)


def test_a_resumed_chunk_summary_counts_the_previous_owners_items() -> None:
    """A chunk resumed with 4 items answered elsewhere (1 error) summarises all 6 items."""
    writer, sink, listener = make_writer()
    chunk = make_chunk(P0, 3, 6)
    chunk.resume_from(ChunkProgress(((0, 3), (5, 6)), 3, 1))
    items = chunk.request.items
    writer.write_unit(chunk, WorkUnit(3, items[3:5]), ok([b"3", b"4"]))
    records = decoded(sink.records)
    assert [r.index for r in records if isinstance(r, Result)] == [3, 4]
    summary = records[-1]
    assert isinstance(summary, ChunkSummary)
    assert (summary.count, summary.ok, summary.error) == (6, 5, 1)
    sink.deliver()
    assert listener.chunks == [chunk]
    progress = chunk.progress
    assert progress is not None
    assert (progress.done, progress.ok, progress.error) == (((0, 6),), 5, 1)


def test_a_resumed_chunk_summary_keeps_the_previous_owners_cancelled_and_expired() -> None:
    """Cancelled and expired items answered elsewhere stay counted as such, not as errors.

    The previous owner's progress travels in the commit metadata; its cancelled and
    expired items are part of its errors, and the summary counts them apart as usual.
    """
    writer, sink, _ = make_writer()
    chunk = make_chunk(P0, 3, 6)
    chunk.resume_from(ChunkProgress(((0, 4),), 1, 3, None, 2, 1))
    items = chunk.request.items
    cancelled = Outcome(None, 0, 0.0, ResultErrorKind.CANCELLED, "batch cancelled")
    writer.write_unit(chunk, WorkUnit(4, items[4:]), cancelled)
    summary = decoded(sink.records)[-1]
    assert isinstance(summary, ChunkSummary)
    assert (summary.count, summary.ok, summary.error) == (6, 1, 5)
    assert (summary.cancelled, summary.expired) == (4, 1)
    sink.deliver()
    progress = chunk.progress
    assert progress is not None
    assert (progress.ok, progress.error, progress.cancelled, progress.expired) == (1, 5, 4, 1)


def test_a_resumed_chunk_keeps_where_the_previous_owners_results_start() -> None:
    """The batch status names the chunk's results range from the previous owner's first."""
    writer, sink, _ = make_writer()
    chunk = make_chunk(P0, 3, 6)
    chunk.resume_from(ChunkProgress(((0, 3),), 3, 0, (0, 7)))
    items = chunk.request.items
    writer.write_unit(chunk, WorkUnit(3, items[3:]), ok([b"3", b"4", b"5"]))
    sink.delivered = 10  # the new owner's records land after the previous owner's
    sink.deliver()
    assert (chunk.results_partition, chunk.first_offset) == (0, 7)
    assert chunk.last_offset is not None
    assert chunk.last_offset >= 7
    progress = chunk.progress
    assert progress is not None
    assert progress.results == (0, 7)
