"""The message contract: strict decoding, precise errors, and agreement with the JSON Schemas."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    DLQ_HEADERS,
    BatchRequest,
    ChunkSummary,
    InvalidMessage,
    Limits,
    Result,
    ResultErrorKind,
    dead_letter_headers,
    decode_batch_request,
    decode_results_record,
    encode_batch_request,
    encode_error_result,
    encode_ok_result,
    encode_summary,
    item_values,
    parse_dead_letter_headers,
)
from tests.helpers import IRIS, examples, json_depth, request_doc, schema_validator

REQUEST_SCHEMA = schema_validator("batch-request")
RESULT_SCHEMA = schema_validator("result")
SUMMARY_SCHEMA = schema_validator("chunk-summary")
DLQ_SCHEMA = schema_validator("dead-letter-headers")


def reason_of(data: bytes, limits: Limits | None = None) -> tuple[str, str]:
    """Decode ``data`` expecting failure; return the error's (kind, reason)."""
    with pytest.raises(InvalidMessage) as info:
        decode_batch_request(data, limits or Limits())
    return info.value.kind, info.value.reason


def test_round_trip_keeps_items_byte_for_byte() -> None:
    """An encoded request decodes to the same fields, each item's JSON text unchanged."""
    items = [orjson.dumps(IRIS), b"[1,2,3]", b'"text"', b"4.5"]
    data = encode_batch_request(
        batch_id="b-1",
        items=items,
        start=10,
        total=14,
        chunk=1,
        chunks=2,
        target="iris",
        items_per_request=2,
        metadata={"owner": "team-a"},
        submitted_at=1.5,
    )
    request = decode_batch_request(data)
    assert [bytes(i) for i in request.items] == items
    assert (request.start, request.total, request.chunk, request.chunks) == (10, 14, 1, 2)
    assert request.target == "iris"
    assert request.items_per_request == 2
    assert request.metadata == {"owner": "team-a"}
    assert item_values(request) == [IRIS, [1, 2, 3], "text", 4.5]
    REQUEST_SCHEMA.validate(orjson.loads(data))


def test_unknown_fields_are_ignored_on_read_and_never_emitted() -> None:
    """A newer producer's extra fields are accepted and dropped on re-encoding."""
    data = orjson.dumps(request_doc(urgency="high", extra={"nested": [1]}))
    request = decode_batch_request(data)
    again = encode_batch_request(
        batch_id=request.batch_id,
        items=request.items,
        start=request.start,
        total=request.total,
        chunk=request.chunk,
        chunks=request.chunks,
    )
    assert b"urgency" not in again
    assert b"extra" not in again


def test_priority_is_an_integer_from_1_to_100_and_round_trips() -> None:
    """``priority`` 1-100 is read and written back; 0, 101, 2.5 and strings are invalid."""
    request = decode_batch_request(orjson.dumps(request_doc(priority=3)))
    assert request.priority == 3
    again = encode_batch_request(
        batch_id=request.batch_id,
        items=request.items,
        start=request.start,
        total=request.total,
        chunk=request.chunk,
        chunks=request.chunks,
        priority=request.priority,
    )
    assert decode_batch_request(again).priority == 3
    assert decode_batch_request(orjson.dumps(request_doc(priority=None))).priority is None
    for bad in (0, 101, 2.5, "high"):
        with pytest.raises(InvalidMessage, match="priority"):
            decode_batch_request(orjson.dumps(request_doc(priority=bad)))


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (b"not json", "not_json", "message: JSON is malformed"),
        (b"[1, 2]", "schema", "message: expected `object`, got `array`"),
        (b'"a string"', "schema", "message: expected `object`, got `str`"),
        (orjson.dumps(request_doc(items=[])), "schema", "items: expected `array` of length >= 1"),
        (orjson.dumps(request_doc(items="x")), "schema", "items: expected `array`, got `str`"),
        (orjson.dumps(request_doc(start="0")), "schema", "start: expected `int`, got `str`"),
        (orjson.dumps(request_doc(start=-1)), "schema", "start: expected `int` >= 0"),
        (orjson.dumps(request_doc(batch_id=None)), "schema", "batch_id: missing"),
        (orjson.dumps(request_doc(batch_id="a b")), "schema", "batch_id: expected `str` matching"),
        (orjson.dumps(request_doc(batch_id="x" * 129)), "schema", "batch_id: expected `str` of length <= 128"),
        (orjson.dumps(request_doc(metadata={"k": 1})), "schema", "metadata[...]: expected `str`, got `int`"),
        (orjson.dumps(request_doc(schema="batch-request/v2")), "version", "schema: invalid enum value 'batch-request/v2' (this reader understands batch-request/v1)"),
        (orjson.dumps(request_doc(total=2)), "inconsistent", "start + len(items) = 3 exceeds total = 2"),
        (orjson.dumps(request_doc(total=9)), "inconsistent", "the last chunk ends at 3, not at total = 9"),
        (orjson.dumps(request_doc(chunk=2, chunks=2)), "inconsistent", "chunk = 2 must be below chunks = 2"),
        (b'{"schema":"batch-request/v1","batch_id":"a","batch_id":"b","chunk":0,"chunks":1,"start":0,"total":1,"items":[1]}', "duplicate_key", "batch_id: appears more than once"),
        (b'{ "schema": "batch-request/v1", "batch_id": "a", "chunk": 0, "chunks": 1, "start": 0, "start": 0, "total": 1, "items": [1] }', "duplicate_key", "start: appears more than once"),
        (orjson.dumps(request_doc(items=[json.loads("[" * 40 + "]" * 40)], total=1)), "limits", "items[0]: nested deeper than 32 levels"),
        (orjson.dumps(request_doc()).replace(b"5.2", b"NaN", 1), "not_json", "message: JSON is malformed"),
        (orjson.dumps(request_doc()).replace(b"5.2", b"Infinity", 1), "not_json", "message: JSON is malformed"),
        (orjson.dumps(request_doc(items=["\u00e9"], total=1)).replace(b"\xc3\xa9", b"\xff"), "encoding", "items[0]: invalid UTF-8 (at byte"),
        (b'{"schema":"batch-request/v1","batch_id":"\xff"}', "encoding", "message: invalid UTF-8 at byte 41"),
        (b"x" * (10 * 1024 * 1024), "too_large", "message of 10485760 bytes exceeds the 1048576-byte limit"),
    ],
    ids=[
        "not-json", "array", "string", "empty-items", "items-not-array", "wrong-type",
        "negative", "missing-field", "bad-batch-id", "long-batch-id", "metadata-not-string",
        "unknown-version", "start-total-overflow", "last-chunk-short", "chunk-out-of-range",
        "duplicate-key-compact", "duplicate-key-spaced", "deep-nesting", "nan", "infinity",
        "invalid-utf8-in-item", "invalid-utf8", "ten-megabytes",
    ],
)  # fmt: skip
def test_bad_input_gets_a_precise_error(data: bytes, kind: str, reason: str) -> None:
    """Each kind of bad message raises InvalidMessage naming the field and the problem."""
    got_kind, got_reason = reason_of(data)
    assert got_kind == kind
    assert got_reason.startswith(reason), got_reason


def test_item_count_and_depth_limits_are_configurable() -> None:
    """Limits bound items per chunk and nesting depth exactly at the configured values."""
    deep = json.loads("[" * 5 + "]" * 5)
    assert decode_batch_request(
        orjson.dumps(request_doc(items=[deep], total=1)), Limits(max_depth=5)
    )
    kind, reason = reason_of(
        orjson.dumps(request_doc(items=[[deep]], total=1)), Limits(max_depth=5)
    )
    assert (kind, reason) == ("limits", "items[0]: nested deeper than 5 levels")
    kind, reason = reason_of(orjson.dumps(request_doc()), Limits(max_items=2))
    assert (kind, reason) == ("limits", "items: 3 items exceed the limit of 2")


def test_results_and_summaries_validate_and_decode() -> None:
    """Encoded results and summaries match their schema files and decode to their types.

    Results carry ``queue_ms`` (the wait for a request slot) beside ``latency_ms``.
    """
    request = decode_batch_request(orjson.dumps(request_doc(metadata={"run": "7"})))
    ok = encode_ok_result(request, 2, b'"setosa"', 1, 12.3456, 0.5)
    error = encode_error_result(
        request, 1, ResultErrorKind.HTTP_STATUS, "HTTP 500", 500, 60, 600000.0, 7.25
    )
    summary = encode_summary(request, 2, 1)
    RESULT_SCHEMA.validate(orjson.loads(ok))
    RESULT_SCHEMA.validate(orjson.loads(error))
    SUMMARY_SCHEMA.validate(orjson.loads(summary))
    ok_record = decode_results_record(ok)
    assert isinstance(ok_record, Result)
    assert (ok_record.index, ok_record.prediction, ok_record.latency_ms) == (2, "setosa", 12.346)
    assert ok_record.queue_ms == 0.5
    assert ok_record.metadata == {"run": "7"}
    error_record = decode_results_record(error)
    assert isinstance(error_record, Result)
    assert error_record.error is not None
    assert (error_record.error.kind, error_record.error.http_status) == ("http_status", 500)
    assert error_record.queue_ms == 7.25
    summary_record = decode_results_record(summary)
    assert isinstance(summary_record, ChunkSummary)
    assert (summary_record.ok, summary_record.error, summary_record.count) == (2, 1, 3)
    with pytest.raises(InvalidMessage, match="unknown record type 'other'"):
        decode_results_record(b'{"schema":"other"}')


def test_dead_letter_headers_follow_their_schema() -> None:
    """Dead-letter headers carry every required name, validate, and parse back."""
    error = InvalidMessage("schema", "items[3]: expected object")
    headers = dead_letter_headers(
        error,
        source_topic="batch-requests",
        source_partition=2,
        source_offset=41,
        group="batch-runner",
        failed_at=0.0,
    )
    parsed = parse_dead_letter_headers([*headers, ("other", b"x")])
    assert set(parsed) == set(DLQ_HEADERS)
    DLQ_SCHEMA.validate(parsed)
    assert parsed["dlq.reason"] == "items[3]: expected object"
    assert parsed["dlq.failed_at"] == "1970-01-01T00:00:00Z"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
batch_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid request document (with optional fields and unknown extras)."""
    items = draw(st.lists(json_values, min_size=1, max_size=8))
    chunks = draw(st.integers(1, 5))
    chunk = draw(st.integers(0, chunks - 1))
    # Earlier chunks hold at least one item each, and so do later ones.
    start = 0 if chunk == 0 else draw(st.integers(chunk, chunk + 1000))
    end = start + len(items)
    later = chunks - 1 - chunk
    total = end if later == 0 else draw(st.integers(end + later, end + later + 100))
    doc = request_doc(batch_id=draw(batch_ids), items=items, chunk=chunk, chunks=chunks)
    doc.update(start=start, total=total)
    if draw(st.booleans()):
        doc["target"] = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True))
    if draw(st.booleans()):
        doc["items_per_request"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        doc["metadata"] = draw(
            st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
        )
    if draw(st.booleans()):
        doc["x-extension"] = draw(json_values)
    return doc


@settings(max_examples=examples(300), deadline=None)
@given(requests(), st.booleans())
def test_every_document_the_schema_accepts_decodes(doc: dict[str, Any], spaced: bool) -> None:  # noqa: FBT001 - drawn by hypothesis
    """A document valid under batch-request.v1.json decodes, compact or pretty-printed."""
    REQUEST_SCHEMA.validate(doc)
    data = json.dumps(doc, indent=2).encode() if spaced else orjson.dumps(doc)
    request = decode_batch_request(data)
    assert item_values(request) == [orjson.loads(orjson.dumps(i)) for i in doc["items"]]
    assert request.batch_id == doc["batch_id"]


@settings(max_examples=examples(300), deadline=None)
@given(requests())
def test_everything_the_encoder_emits_validates(doc: dict[str, Any]) -> None:
    """What the Python encoders emit is valid under the JSON Schema files."""
    data = encode_batch_request(
        batch_id=doc["batch_id"],
        items=[orjson.dumps(i) for i in doc["items"]],
        start=doc["start"],
        total=doc["total"],
        chunk=doc["chunk"],
        chunks=doc["chunks"],
        target=doc.get("target"),
        items_per_request=doc.get("items_per_request"),
        metadata=doc.get("metadata"),
    )
    REQUEST_SCHEMA.validate(orjson.loads(data))
    request = decode_batch_request(data)
    RESULT_SCHEMA.validate(orjson.loads(encode_ok_result(request, 0, orjson.dumps(doc), 1, 1.0)))
    RESULT_SCHEMA.validate(
        orjson.loads(
            encode_error_result(request, 0, ResultErrorKind.TIMEOUT, "slow", None, 3, 2.0)
        ),
    )
    SUMMARY_SCHEMA.validate(orjson.loads(encode_summary(request, len(request.items), 0)))


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_decode_or_raise_invalid_message(data: bytes) -> None:
    """Arbitrary bytes either decode to a valid request or raise InvalidMessage, nothing else."""
    try:
        request = decode_batch_request(data)
    except InvalidMessage:
        return
    assert isinstance(request, BatchRequest)


@settings(max_examples=examples(500), deadline=None)
@given(st.dictionaries(st.sampled_from(list(request_doc())) | st.text(max_size=5), json_values))
def test_random_json_objects_decode_or_raise_invalid_message(doc: dict[str, Any]) -> None:
    """Random JSON objects with the contract's field names never raise anything else."""
    try:
        request = decode_batch_request(orjson.dumps(doc))
    except InvalidMessage:
        return
    REQUEST_SCHEMA.validate(msgspec.to_builtins(request))


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(json_values, min_size=1, max_size=5), st.integers(1, 4))
def test_depth_limit_is_exact_for_any_items(items: list[Any], limit: int) -> None:
    """Items pass iff none nests deeper than the limit, whatever their strings contain."""
    data = orjson.dumps(request_doc(items=items, total=len(items), metadata={"k": "v"}))
    deepest = max(json_depth(item) for item in items)
    if deepest > limit:
        with pytest.raises(InvalidMessage, match=r"^limits: items\[\d+\]: nested deeper than"):
            decode_batch_request(data, Limits(max_depth=limit))
    else:
        assert decode_batch_request(data, Limits(max_depth=limit)).items


def test_depth_check_sees_through_brackets_and_quotes_inside_strings() -> None:
    """Strings full of brackets, quotes and escapes neither hide nor fake nesting."""
    tricky = {"a": '"]]]}}}', "b": ["[[[{{{", {"c": '\\"['}]}  # depth 3
    data = orjson.dumps(request_doc(items=[tricky], total=1))
    assert decode_batch_request(data, Limits(max_depth=3)).items
    kind, reason = reason_of(data, Limits(max_depth=2))
    assert (kind, reason) == ("limits", "items[0]: nested deeper than 2 levels")


def test_large_numbers_pass_through_as_written() -> None:
    """A number too large for a double is valid JSON: it reaches the model byte for byte."""
    data = orjson.dumps(request_doc(items=[0], total=1)).replace(b"[0]", b"[1e400]")
    assert [bytes(i) for i in decode_batch_request(data).items] == [b"1e400"]
