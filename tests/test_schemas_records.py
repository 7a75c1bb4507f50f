"""Strict decoding, part two: results-topic records, chunk positions, and the raw checks.

``tests/test_schemas.py`` covers the bad inputs of requests the contract names; this file
pins the rules added on top (chunk positions, ids with a trailing newline, integers written
as floats), the results-topic decoder's errors, and the byte-level depth, UTF-8 and
duplicate-key checks against independent references.
"""

# The tables of bad messages keep one case per line (as in tests/test_schemas.py):
# ruff: noqa: E501

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    ChunkSummary,
    InvalidMessage,
    Limits,
    Result,
    decode_batch_request,
    decode_results_record,
    encode_batch_request,
    item_values,
)
from tests.helpers import IRIS, examples, json_depth, request_doc, result_doc, summary_doc


def request(**changes: Any) -> bytes:
    """Return the encoded :func:`request_doc` with ``changes`` (None removes a field)."""
    return orjson.dumps(request_doc(**changes))


def result(**changes: Any) -> bytes:
    """Return the encoded :func:`result_doc` with ``changes`` (None removes a field)."""
    return orjson.dumps(result_doc(**changes))


def summary(**changes: Any) -> bytes:
    """Return the encoded :func:`summary_doc` with ``changes`` (None removes a field)."""
    return orjson.dumps(summary_doc(**changes))


def failure(decode: Any, data: bytes, limits: Limits | None = None) -> tuple[str, str]:
    """Decode ``data`` expecting InvalidMessage; return its (kind, reason)."""
    with pytest.raises(InvalidMessage) as info:
        decode(data, limits or Limits())
    return info.value.kind, info.value.reason


# --- requests: the rules beyond those -------------------------------------------------------

DEEP = json.loads("[" * 34 + "]" * 34)


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (b"", "not_json", "message: empty"),
        (b"\xef\xbb\xbf" + request(), "not_json", "message: JSON is malformed: invalid character (byte 0)"),
        (request() + b" {}", "not_json", "message: JSON is malformed: trailing characters"),
        (request(items=["x"], total=1).replace(b'"x"', b'"\\ud800"'), "not_json", "message: "),
        (request(schema=None), "version", "schema: missing"),
        (request(schema=1), "version", "schema: expected `str`, got `int` (this reader understands batch-request/v1)"),
        (request(batch_id="iris\n"), "schema", "batch_id: expected `str` matching regex"),
        (request(target="http://evil.example/"), "schema", "target: expected `str` matching regex"),
        (request(chunk=0.0), "schema", "chunk: expected `int`, got `float`"),
        (request(chunks=True), "schema", "chunks: expected `int`, got `bool`"),
        (request(items=[IRIS, 1], total=2, metadata={"k": "v" * 1025}), "schema", "metadata[...]: expected `str` of length <= 1024"),
        (request(metadata={str(i): "v" for i in range(65)}), "limits", "metadata: more than 64 entries"),
        (request(items=[1] * 10_001, total=10_001), "limits", "items: 10001 items exceed the limit of 10000"),
        (request(chunks=2, start=2, total=9), "inconsistent", "the first chunk starts at 2, not at 0"),
        (request(chunk=2, chunks=4, start=1, total=9), "inconsistent", "chunk 2 starts at 1, too early for the 2 chunks before it"),
        (request(chunks=3, total=4), "inconsistent", "total = 4 leaves 1 items after this chunk, too few for the 2 chunks after it"),
        (request(items=[IRIS, DEEP], total=2), "limits", "items[1]: nested deeper than 32 levels"),
        (request(extension=[DEEP]), "limits", "extension: nested deeper than 33 levels"),
        (request(extension="\u00e9").replace(b"\xc3\xa9", b"\xc3"), "encoding", "message: invalid UTF-8 at byte"),
        (request().replace(b'"items"', b'"x":1,"x":2,"items"'), "duplicate_key", "x: appears more than once"),
        (request().replace(b'"items"', b'"batch\\u005fid":"b","items"'), "duplicate_key", "batch_id: appears more than once"),
    ],
    ids=[
        "empty", "byte-order-mark", "trailing-data", "lone-surrogate", "no-version",
        "version-not-string", "id-with-newline", "target-url", "integral-float",
        "bool-for-int", "metadata-value-long", "metadata-too-many", "too-many-items",
        "first-chunk-late", "chunk-too-early", "later-chunks-starve", "deep-item-named",
        "deep-unknown-field", "invalid-utf8-unknown-field", "duplicate-unknown-key",
        "duplicate-escaped-key",
    ],
)  # fmt: skip
def test_request_rules_give_precise_errors(data: bytes, kind: str, reason: str) -> None:
    """Each rule a request can break names the field and the problem in the reason."""
    got_kind, got_reason = failure(decode_batch_request, data)
    assert (got_kind, got_reason[: len(reason)]) == (kind, reason), got_reason


def test_optional_fields_written_as_null_read_as_absent() -> None:
    """Clients whose serialisers write null for unset fields are understood."""
    nulls = {"target": None, "items_per_request": None, "metadata": None, "submitted_at": None}
    data = orjson.dumps({**json.loads(request()), **nulls})
    decoded = decode_batch_request(data)
    assert (decoded.target, decoded.items_per_request, decoded.metadata) == (None, None, None)


def test_message_size_limit_is_exact() -> None:
    """A message of exactly max_message_bytes decodes; one byte more is too large."""
    data = request()
    assert decode_batch_request(data, Limits(max_message_bytes=len(data)))
    kind, reason = failure(decode_batch_request, data, Limits(max_message_bytes=len(data) - 1))
    assert kind == "too_large"
    assert reason == f"message of {len(data)} bytes exceeds the {len(data) - 1}-byte limit"


def test_encoder_refuses_positions_no_reader_accepts() -> None:
    """encode_batch_request raises ValueError rather than emit a chunk that would be rejected."""
    with pytest.raises(ValueError, match="the last chunk ends at 2, not at total = 3"):
        encode_batch_request(batch_id="b", items=[b"1", b"2"], start=0, total=3, chunk=0, chunks=1)
    with pytest.raises(ValueError, match="the first chunk starts at 1, not at 0"):
        encode_batch_request(batch_id="b", items=[b"1"], start=1, total=3, chunk=0, chunks=2)


def test_whitespace_everywhere_still_decodes_and_still_catches_duplicates() -> None:
    """Pretty-printed requests decode; a duplicate hidden among the whitespace is found."""
    doc = json.loads(request(metadata={"a": "b"}))
    pretty = json.dumps(doc, indent="\t").encode()
    assert decode_batch_request(pretty).metadata == {"a": "b"}
    doubled = pretty.replace(b'\t"start": 0,', b'\t"start": 0,\n\t"start" :  1 ,', 1)
    assert failure(decode_batch_request, doubled) == (
        "duplicate_key",
        "start: appears more than once",
    )


# --- depth: exact whatever the strings hold ---------------------------------------------------


# Strings made of the characters that could fool a bytes-level scan: brackets, quotes,
# backslashes (and the escapes they start), non-ASCII text and control characters.
tricky_text = st.text(alphabet='[]{}"\\/ue\u00e9\n\t0', max_size=10)
tricky_values = st.recursive(
    st.none() | st.integers(-1000, 1000) | tricky_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(tricky_text, children, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=examples(600), deadline=None)
@given(st.lists(tricky_values, min_size=1, max_size=4), st.integers(1, 5), st.booleans())
def test_depth_limit_is_exact_for_strings_full_of_brackets_quotes_and_escapes(
    items: list[Any],
    limit: int,
    ascii_only: bool,  # noqa: FBT001 - drawn by hypothesis
) -> None:
    """The byte-level depth check agrees with a walk over the parsed value, item by item."""
    doc = json.loads(request(items=items, total=len(items)))
    data = json.dumps(doc, ensure_ascii=ascii_only).encode()
    too_deep = [i for i, item in enumerate(items) if json_depth(item) > limit]
    if too_deep:
        assert failure(decode_batch_request, data, Limits(max_depth=limit)) == (
            "limits",
            f"items[{too_deep[0]}]: nested deeper than {limit} levels",
        )
    else:
        assert len(decode_batch_request(data, Limits(max_depth=limit)).items) == len(items)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(tricky_values, min_size=1, max_size=3), st.sampled_from(["x", "a\u00e9", "k\\"]))
def test_duplicate_keys_are_found_however_the_message_is_written(
    items: list[Any], key: str
) -> None:
    """A repeated top-level key is rejected whatever the strings and escapes around it."""
    body = json.dumps({"items": items, "total": len(items)}, ensure_ascii=False)[1:-1]
    head = '"schema":"batch-request/v1","batch_id":"b","chunk":0,"chunks":1,"start":0'
    dup = json.dumps(key, ensure_ascii=False)
    data = f"{{{head},{dup}:1,{body},{dup}:[1]}}".encode()
    assert failure(decode_batch_request, data) == (
        "duplicate_key",
        f"{key}: appears more than once",
    )
    assert decode_batch_request(f"{{{head},{dup}:1,{body}}}".encode()).items


# --- the results topic --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (b"", "not_json", "message: empty"),
        (b"{not json", "not_json", "message: JSON is malformed"),
        (b"[1]", "schema", "message: expected `object`, got `array`"),
        (b"x" * (10 * 1024 * 1024), "too_large", "message of 10485760 bytes exceeds"),
        (b'{"index":1}', "version", "schema: missing (this reader understands result/v1 and chunk-summary/v1)"),
        (b'{"schema":5}', "version", "schema: expected `str`, got `int` (this reader understands result/v1"),
        (b'{"schema":"result/v2"}', "version", "schema: unknown record type 'result/v2'"),
        (result(batch_id=None), "schema", "batch_id: missing"),
        (result(status="maybe"), "schema", "status: invalid enum value 'maybe'"),
        (result(prediction=None), "schema", "prediction: missing (status is ok)"),
        (result(error={"kind": "timeout", "message": "slow"}), "schema", "error: not allowed when status is ok"),
        (result(status="error", prediction=None), "schema", "error: missing (status is error)"),
        (result(status="error", error={"kind": "timeout", "message": "m"}), "schema", "prediction: not allowed when status is error"),
        (result(status="error", prediction=None, error={"kind": 5, "message": "m"}), "schema", "error.kind: expected `str`, got `int`"),
        (result(status="error", prediction=None, error={"message": "m"}), "schema", "error.kind: missing"),
        (result().replace(b'"setosa"', b"[" * 5000 + b"]" * 5000), "limits", "message: nested too deeply to parse"),
        (result().replace(b'"index":4', b'"index":4,"index":5'), "duplicate_key", "index: appears more than once"),
        (result().replace(b'"iris-1"', b'"\xff"'), "encoding", "message: invalid UTF-8 at byte"),
        (result().replace(b'"index"', b'"\xff":1,"index"'), "encoding", "message: invalid UTF-8 at byte"),
        (result(extra="\u00e9").replace(b"\xc3\xa9", b"\xe9"), "encoding", "message: invalid UTF-8 at byte"),
        (summary(ok=3), "inconsistent", "ok + error = 4 is not count = 3"),
        (summary(total=5), "inconsistent", "start + count = 6 exceeds total = 5"),
        (summary(chunk=2), "inconsistent", "chunk = 2 must be below chunks = 2"),
        (summary(total=9), "inconsistent", "the last chunk ends at 6, not at total = 9"),
        (summary(count=-1), "schema", "count: expected `int` >= 1"),
    ],
    ids=[
        "empty", "not-json", "array", "ten-megabytes", "no-version", "version-not-string",
        "unknown-version", "missing-field", "bad-status", "ok-without-prediction",
        "ok-with-error", "error-without-error", "error-with-prediction", "error-kind-type",
        "error-kind-missing", "deep-prediction", "duplicate-key", "invalid-utf8-value",
        "invalid-utf8-key", "invalid-utf8-unknown-field", "counts-disagree",
        "past-total", "chunk-out-of-range", "last-chunk-short", "negative-count",
    ],
)  # fmt: skip
def test_results_records_give_precise_errors(data: bytes, kind: str, reason: str) -> None:
    """Each bad results-topic record raises InvalidMessage naming the field and the problem."""
    got_kind, got_reason = failure(decode_results_record, data)
    assert (got_kind, got_reason[: len(reason)]) == (kind, reason), got_reason


def test_results_records_decode_to_their_types() -> None:
    """A result and a summary on the same topic come back as Result and ChunkSummary."""
    ok = decode_results_record(result(prediction={"label": "setosa", "p": [0.9, 0.1]}))
    assert isinstance(ok, Result)
    assert ok.prediction == {"label": "setosa", "p": [0.9, 0.1]}
    counted = decode_results_record(summary(metadata={"run": "7"}, extra=[1, 2]))
    assert isinstance(counted, ChunkSummary)
    assert (counted.ok, counted.error, counted.metadata) == (2, 1, {"run": "7"})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
record_fields = st.sampled_from(
    [*json.loads(result()), *json.loads(summary()), "error", "prediction", "metadata"]
)


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=600) | st.builds(result).map(lambda d: d[: len(d) // 2]))
def test_random_bytes_give_a_record_or_invalid_message(data: bytes) -> None:
    """Arbitrary bytes (and truncated records) decode or raise InvalidMessage, nothing else."""
    try:
        record = decode_results_record(data)
    except InvalidMessage:
        return
    assert isinstance(record, Result | ChunkSummary)


@settings(max_examples=examples(500), deadline=None)
@given(
    st.dictionaries(record_fields | st.text(max_size=5), json_values),
    st.sampled_from(["result/v1", "chunk-summary/v1"]),
)
def test_random_json_objects_give_a_record_or_invalid_message(
    doc: dict[str, Any], version: str
) -> None:
    """Random objects with the records' field names decode or raise InvalidMessage only."""
    doc["schema"] = version
    try:
        record = decode_results_record(json.dumps(doc).encode())
    except InvalidMessage:
        return
    assert isinstance(record, Result | ChunkSummary)


def test_items_python_cannot_hold_fail_only_when_asked_for_as_values() -> None:
    """1e400 passes the decoder as written, but item_values names it instead of crashing."""
    decoded = decode_batch_request(request(items=[1, 2], total=2).replace(b"[1,2]", b"[1,1e400]"))
    assert [bytes(item) for item in decoded.items] == [b"1", b"1e400"]
    with pytest.raises(InvalidMessage, match=r"^limits: items\[1\]: "):
        item_values(decoded)
