"""A work unit's results: produced in one call, acknowledged by one callback per unit.

In process, through the fake sink of ``test_consumer_rooms`` (it keeps every record and
lets the test deliver or refuse each one), plus a ``produce_all`` that records its calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from confluent_kafka import KafkaError

from consumer.chunk import Chunk
from consumer.metrics import Metrics
from consumer.splitter import WorkUnit
from consumer.writer import RecordWriter
from schemas import (
    ChunkSummary,
    Result,
    decode_batch_request,
    encode_batch_request,
    encode_ok_result,
)
from tests.test_consumer_rooms import (
    DLQ,
    P0,
    RESULTS,
    FakeSink,
    Landed,
    Listener,
    decoded,
    make_chunk,
    make_writer,
    ok,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from consumer.publisher import DeliveryCallback, Headers


@dataclass
class BatchSink(FakeSink):
    """A fake sink that also takes a unit's records in one call, and counts those calls."""

    calls: list[int] = field(default_factory=list)

    def produce_all(
        self,
        topic: str,
        values: Sequence[bytes],
        key: bytes | str | None,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        """Keep the records, in order, and how many came in the call."""
        self.calls.append(len(values))
        for value in values:
            self.produce(topic, value, key, on_delivery, headers)

    def deliver_one(self, error: KafkaError | None = None) -> None:
        """Report the oldest kept record delivered (or failed with ``error``)."""
        record = self.records.pop(0)
        landed = Landed(self.delivered)
        self.delivered += 1
        record.on_delivery(error, landed)  # type: ignore[arg-type] # what the writer reads


def batch_writer() -> tuple[RecordWriter, BatchSink, Listener]:
    """Return a writer producing through ``BatchSink.produce_all``."""
    sink, listener = BatchSink(), Listener()
    writer = RecordWriter(
        sink.produce,
        listener,
        Metrics(),
        results_topic=RESULTS,
        dlq_topic=DLQ,
        record_limits={RESULTS: 10_000, DLQ: 10_000},
        group_id="g",
        produce_all=sink.produce_all,
    )
    return writer, sink, listener


def test_a_units_results_go_out_in_one_call_with_the_bytes_record_by_record_gives() -> None:
    """One ``produce_all`` call per unit; the records equal those produced one by one."""
    writer, sink, listener = batch_writer()
    one_by_one, plain_sink, _ = make_writer()
    for target in (writer, one_by_one):
        chunk = make_chunk(P0, 3, 5)
        items = chunk.request.items
        target.write_unit(chunk, WorkUnit(0, items[:3]), ok([b"0", b"[1]", b'{"a":2}']))
        target.write_unit(chunk, WorkUnit(3, items[3:]), ok([b"3", b"null"]))
    assert sink.calls == [3, 2]  # the two units (the summary goes through produce())
    assert [(r.value, r.key, r.headers) for r in sink.records] == [
        (r.value, r.key, r.headers) for r in plain_sink.records
    ]
    results = [r for r in decoded(sink.records) if isinstance(r, Result)]
    assert [(r.index, r.prediction) for r in results] == [
        (0, 0),
        (1, [1]),
        (2, {"a": 2}),
        (3, 3),
        (4, None),
    ]
    sink.deliver()
    assert listener.failures == []
    assert len(listener.chunks) == 1


def test_a_refused_record_keeps_its_unit_and_its_chunk_from_counting_as_done() -> None:
    """Later records of the unit acknowledged do not make up for a refused one.

    The failure is reported; the unit's items never enter the commit metadata and the
    chunk is never delivered, even once its summary is acknowledged.
    """
    writer, sink, listener = batch_writer()
    chunk = make_chunk(P0, 0, 4)
    items = chunk.request.items
    writer.write_unit(chunk, WorkUnit(0, items[:2]), ok([b"0", b"1"]))
    writer.write_unit(chunk, WorkUnit(2, items[2:]), ok([b"2", b"3"]))
    sink.deliver_one(KafkaError(KafkaError._MSG_TIMED_OUT))  # item 0
    sink.deliver()  # items 1 to 3 and the summary
    assert len(listener.failures) == 1
    assert listener.chunks == []
    assert chunk.done == ((2, 4),)  # the second unit only
    assert chunk.unacked == 2  # the unit with the refused record


def test_a_refused_summary_keeps_its_chunk_from_counting_as_done() -> None:
    """Every result acknowledged, the summary refused: the chunk is never delivered."""
    writer, sink, listener = batch_writer()
    chunk = make_chunk(P0, 0, 2)
    writer.write_unit(chunk, WorkUnit(0, chunk.request.items), ok([b"0", b"1"]))
    sink.deliver_one()
    sink.deliver_one()
    assert chunk.done == ((0, 2),)
    sink.deliver_one(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert len(listener.failures) == 1
    assert listener.chunks == []


def test_where_a_chunks_records_landed_spans_all_of_its_reports() -> None:
    """First and last offsets cover every unit's records and the summary; reported once."""
    writer, sink, listener = batch_writer()
    sink.delivered = 40  # the results partition's next offset
    chunk = make_chunk(P0, 0, 5)
    items = chunk.request.items
    writer.write_unit(chunk, WorkUnit(2, items[2:]), ok([b"2", b"3", b"4"]))
    for _ in range(3):
        sink.deliver_one()
    assert (chunk.results_partition, chunk.first_offset, chunk.last_offset) == (0, 40, 42)
    writer.write_unit(chunk, WorkUnit(0, items[:2]), ok([b"0", b"1"]))
    sink.deliver_one()
    assert chunk.last_offset == 42  # the unit's reports are taken when it is complete
    sink.deliver()  # its second record and the summary
    assert (chunk.first_offset, chunk.last_offset) == (40, 45)
    assert listener.chunks == [chunk]
    progress = chunk.progress
    assert progress is not None
    assert (progress.done, progress.ok, progress.results) == (((0, 5),), 5, (0, 40))


def test_a_one_item_unit_is_done_on_its_only_report() -> None:
    """A unit of one record: its only report is both its first and its last."""
    writer, sink, listener = batch_writer()
    sink.delivered = 9
    chunk = make_chunk(P0, 0, 1)
    writer.write_unit(chunk, WorkUnit(0, chunk.request.items), ok([b"7"]))
    summary = decoded(sink.records)[-1]
    assert isinstance(summary, ChunkSummary)
    sink.deliver()
    assert (chunk.first_offset, chunk.last_offset, chunk.done) == (9, 10, ((0, 1),))
    assert listener.chunks == [chunk]


def test_a_refused_one_item_record_keeps_its_chunk_from_counting_as_done() -> None:
    """The one-item short path's report: refused, its item never counts as done, nor its chunk.

    The other unit's record and the summary acknowledged do not make up for it.
    """
    writer, sink, listener = batch_writer()
    sink.delivered = 3
    chunk = make_chunk(P0, 0, 2)
    items = chunk.request.items
    writer.write_unit(chunk, WorkUnit(0, items[:1]), ok([b"0"]))
    writer.write_unit(chunk, WorkUnit(1, items[1:]), ok([b"1"]))
    assert sink.calls == []  # one record each: produced singly
    sink.deliver_one(KafkaError(KafkaError._MSG_TIMED_OUT))  # item 0
    sink.deliver()  # item 1 and the summary
    assert len(listener.failures) == 1
    assert listener.chunks == []
    assert chunk.done == ((1, 2),)
    assert (chunk.unacked, chunk.acked_ok) == (1, 1)
    assert (chunk.first_offset, chunk.last_offset) == (4, 5)


def test_one_item_units_take_the_short_path_only_when_nothing_needs_more() -> None:
    """A one-item answer is encoded as ``encode_ok_result`` does; anything more still happens.

    The short path (no ``custom_id`` in the item, no ``usage`` in the answer, the record
    under the limit) writes the same bytes; an item with a ``custom_id``, an answer with
    ``usage`` and an answer over the limit get what the general path gives them.
    """
    writer, sink, _ = make_writer(limit=400)
    chunk = make_chunk(P0, 0, 4)
    items = chunk.request.items
    plain = b'{"label":1}'
    writer.write_unit(chunk, WorkUnit(0, items[:1]), ok([plain]))
    expected = encode_ok_result(chunk.request, 0, plain, 1, 2.0, 1.0)
    assert sink.records[0].value == expected
    usage = b'{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
    writer.write_unit(chunk, WorkUnit(1, items[1:2]), ok([usage]))
    writer.write_unit(chunk, WorkUnit(2, items[2:3]), ok([orjson.dumps("x" * 500)]))
    lines = [orjson.dumps({"custom_id": "q3"})]
    data = encode_batch_request(batch_id="b", items=lines, start=3, total=4, chunk=1, chunks=2)
    named = Chunk(P0, 1, decode_batch_request(data), [], 0, 1)
    writer.write_unit(named, WorkUnit(0, named.request.items), ok([plain]))
    results = [r for r in decoded(sink.records) if isinstance(r, Result)]
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert results[1].usage is not None
    assert results[1].usage.total_tokens == 7
    assert results[2].error is not None
    assert results[2].error.kind == "result_too_large"
    assert results[3].custom_id == "q3"
