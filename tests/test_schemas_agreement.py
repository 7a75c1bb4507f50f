"""The JSON Schema files and the Python decoders accept exactly the same documents.

Each property draws a valid document of one kind, spoils it with a few random edits
(fields removed, replaced by awkward values, unknown fields added) and checks that the
decoder accepts it if and only if the schema file accepts it and the rules a JSON Schema
cannot express hold. Those rules are written again here, independently of
``schemas/messages.py``, from the files' descriptions and docs/contract.md.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    BatchRequest,
    ChunkSummary,
    InvalidMessage,
    Result,
    decode_batch_request,
    decode_results_record,
    encode_record,
)
from tests.helpers import examples, json_depth, schema_validator

MAX_DEPTH = 32  # the default Limits.max_depth, which the schema files describe
REQUEST_SCHEMA = schema_validator("batch-request")
RESULT_SCHEMA = schema_validator("result")
SUMMARY_SCHEMA = schema_validator("chunk-summary")

# --- the rules no JSON Schema can state -------------------------------------------------------


def integers_written_as_integers(doc: dict[str, Any], fields: tuple[str, ...]) -> bool:
    """JSON Schema calls 3.0 an integer; the contract asks for integers written as 3."""
    return not any(isinstance(doc.get(name), float) for name in fields)


def positions_fit(doc: dict[str, Any], count: int) -> bool:
    """Check the chunks of a batch cut items 0..total-1 into consecutive non-empty runs."""
    chunk, chunks, start, total = doc["chunk"], doc["chunks"], doc["start"], doc["total"]
    end = start + count
    return bool(
        chunk < chunks
        and end <= total
        and (chunk != 0 or start == 0)
        and (chunk != chunks - 1 or end == total)
        and start >= chunk  # one item at least in each earlier chunk
        and total - end >= chunks - 1 - chunk  # and in each later one
    )


REQUEST_INTEGERS = (
    *("chunk", "chunks", "start", "total", "items_per_request", "priority", "attempt"),
)
SUMMARY_INTEGERS = (
    "chunk",
    "chunks",
    "start",
    "count",
    "total",
    "ok",
    "error",
    "cancelled",
    "expired",
)
RESULT_INTEGERS = ("index", "chunk", "attempts")
USAGE_INTEGERS = ("prompt_tokens", "completion_tokens", "total_tokens")


def indexes_fit(doc: dict[str, Any]) -> bool:
    """Check a retry's ``indexes``: one integer per item."""
    indexes = doc.get("indexes")
    return indexes is None or (
        len(indexes) == len(doc["items"]) and not any(isinstance(i, float) for i in indexes)
    )


def request_rules_hold(doc: dict[str, Any]) -> bool:
    """Check the request rules beyond its schema file (for a document the schema accepts)."""
    return (
        integers_written_as_integers(doc, REQUEST_INTEGERS)
        and positions_fit(doc, len(doc["items"]))
        and indexes_fit(doc)
        and all(json_depth(item) <= MAX_DEPTH for item in doc["items"])
        and all(json_depth(v) <= MAX_DEPTH + 1 for k, v in doc.items() if k != "items")
    )


def result_rules_hold(doc: dict[str, Any]) -> bool:
    """Check the result rules beyond its schema file (for a document the schema accepts)."""
    error = doc.get("error")
    usage = doc.get("usage")
    return (
        integers_written_as_integers(doc, RESULT_INTEGERS)
        and (not isinstance(error, dict) or not isinstance(error.get("http_status"), float))
        and (not isinstance(usage, dict) or integers_written_as_integers(usage, USAGE_INTEGERS))
    )


def summary_rules_hold(doc: dict[str, Any]) -> bool:
    """Check the summary rules beyond its schema file (for a document the schema accepts)."""
    return (
        integers_written_as_integers(doc, SUMMARY_INTEGERS)
        and doc["ok"] + doc["error"] == doc["count"]
        and doc.get("cancelled", 0) + doc.get("expired", 0) <= doc["error"]
        and positions_fit(doc, doc["count"])
    )


# --- documents ---------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
# Values chosen to sit on the edges of the schemas: signs, zero, integral floats, empty and
# over-long strings, the other status, a trailing newline, containers where scalars belong.
awkward = st.sampled_from(
    [
        None,
        True,
        -1,
        0,
        1,
        2,
        3,
        2.0,
        0.5,
        "",
        "x",
        "ok",
        "error",
        "a b",
        "iris\n",
        "x" * 65,
        "x" * 129,
        [],
        [1],
        {},
        {"k": "v"},
        {"kind": "timeout", "message": "slow"},
        {"kind": "http_status", "message": "HTTP 500", "http_status": 500.0},
        {"prompt_tokens": 2.0},
        {"total_tokens": -1, "prompt_tokens": 1},
        "batch-request/v1",
        "result/v1",
        "chunk-summary/v1",
        "batch-request/v2",
    ]
)
ids = st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True)
deep_item = st.integers(MAX_DEPTH - 1, MAX_DEPTH + 2).map(lambda n: json.loads("[" * n + "]" * n))


@st.composite
def position(draw: st.DrawFn, count: int) -> dict[str, int]:
    """Draw chunk, chunks, start and total that fit a chunk of ``count`` items."""
    chunks = draw(st.integers(1, 4))
    chunk = draw(st.integers(0, chunks - 1))
    start = 0 if chunk == 0 else draw(st.integers(chunk, chunk + 5))
    later = chunks - 1 - chunk
    end = start + count
    total = end if later == 0 else draw(st.integers(end + later, end + later + 5))
    return {"chunk": chunk, "chunks": chunks, "start": start, "total": total}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid batch request document (optional fields present, null or absent)."""
    items = draw(st.lists(json_values | deep_item, min_size=1, max_size=4))
    doc: dict[str, Any] = {"schema": "batch-request/v1", "batch_id": draw(ids), "items": items}
    doc.update(draw(position(len(items))))
    optional = {
        "target": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True),
        "items_per_request": st.integers(1, 50),
        "priority": st.integers(1, 100),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "submitted_at": st.floats(0, 2e9),
        "deadline": st.floats(0, 2e9),
        "attempt": st.integers(1, 5),
        "indexes": st.lists(st.integers(0, 99), min_size=len(items), max_size=len(items)),
    }
    for name, values in optional.items():
        choice = draw(st.sampled_from(["absent", "null", "value"]))
        if choice != "absent":
            doc[name] = None if choice == "null" else draw(values)
    return doc


@st.composite
def results(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid result document, ok or error."""
    doc: dict[str, Any] = {
        "schema": "result/v1",
        "batch_id": draw(ids),
        "index": draw(st.integers(0, 10**6)),
        "chunk": draw(st.integers(0, 100)),
        "attempts": draw(st.integers(0, 60)),
        "latency_ms": draw(st.floats(0, 1e7)),
    }
    queue = draw(st.sampled_from(["absent", "null", "value"]))
    if queue != "absent":  # written by consumers since queue_ms exists; older records lack it
        doc["queue_ms"] = None if queue == "null" else draw(st.floats(0, 1e7))
    if draw(st.booleans()):
        doc["status"] = "ok"
        doc["prediction"] = draw(json_values)
    else:
        doc["status"] = "error"
        doc["error"] = {
            "kind": draw(st.sampled_from(["http_status", "timeout", "connection"])),
            "message": draw(st.text(max_size=20)),
            "http_status": draw(st.none() | st.integers(100, 599)),
        }
    if draw(st.booleans()):
        doc["metadata"] = draw(
            st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5))
        )
    tokens = st.integers(0, 10**7)
    optional = {  # what OpenAI-compatible answers add
        "custom_id": st.text(max_size=8),
        "usage": st.fixed_dictionaries(
            {},
            optional={"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": tokens},
        ),
    }
    for name, values in optional.items():
        choice = draw(st.sampled_from(["absent", "null", "value"]))
        if choice != "absent":
            doc[name] = None if choice == "null" else draw(values)
    return doc


@st.composite
def summaries(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid chunk summary document."""
    count = draw(st.integers(1, 20))
    ok = draw(st.integers(0, count))
    doc: dict[str, Any] = {
        "schema": "chunk-summary/v1",
        "batch_id": draw(ids),
        "count": count,
        "ok": ok,
        "error": count - ok,
    }
    if count > ok and draw(st.booleans()):  # 0 is the default, never written
        doc["cancelled"] = draw(st.integers(1, count - ok))
    doc.update(draw(position(count)))
    return doc


@st.composite
def spoiled(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """Draw a valid document, then apply up to three random edits to it."""
    doc = draw(valid)
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["remove", "replace", "add"]))
        names = sorted(doc)
        if edit == "remove" and names:
            doc.pop(draw(st.sampled_from(names)))
        elif edit == "replace" and names:
            doc[draw(st.sampled_from(names))] = draw(awkward | json_values)
        else:
            doc[draw(st.text(min_size=1, max_size=6))] = draw(awkward | json_values | deep_item)
    return doc


def serialise(doc: dict[str, Any], style: int) -> bytes:
    """Write ``doc`` as compact JSON, pretty JSON, or compact with non-ASCII escaped."""
    if style == 0:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    if style == 1:
        return json.dumps(doc, ensure_ascii=False, indent=1).encode()
    return json.dumps(doc, separators=(",", ":")).encode()


def accepts(decode: Any, data: bytes, kind: type) -> bool:
    """Return whether ``decode`` turns ``data`` into a value of type ``kind``."""
    try:
        return isinstance(decode(data), kind)
    except InvalidMessage:
        return False


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=examples(600), deadline=None)
@given(spoiled(requests()), st.integers(0, 2))
def test_request_decoder_accepts_exactly_what_the_schema_and_rules_accept(
    doc: dict[str, Any], style: int
) -> None:
    """decode_batch_request succeeds iff batch-request.v1.json and the extra rules accept."""
    expected = REQUEST_SCHEMA.is_valid(doc) and request_rules_hold(doc)
    assert accepts(decode_batch_request, serialise(doc, style), BatchRequest) == expected


@settings(max_examples=examples(600), deadline=None)
@given(spoiled(results()), st.integers(0, 2))
def test_result_decoder_accepts_exactly_what_the_schema_and_rules_accept(
    doc: dict[str, Any], style: int
) -> None:
    """decode_results_record returns a Result iff result.v1.json and the extra rules accept."""
    expected = RESULT_SCHEMA.is_valid(doc) and result_rules_hold(doc)
    assert accepts(decode_results_record, serialise(doc, style), Result) == expected


@settings(max_examples=examples(600), deadline=None)
@given(spoiled(summaries()), st.integers(0, 2))
def test_summary_decoder_accepts_exactly_what_the_schema_and_rules_accept(
    doc: dict[str, Any], style: int
) -> None:
    """decode_results_record returns a ChunkSummary iff its schema and the rules accept."""
    expected = SUMMARY_SCHEMA.is_valid(doc) and summary_rules_hold(doc)
    assert accepts(decode_results_record, serialise(doc, style), ChunkSummary) == expected


@settings(max_examples=examples(300), deadline=None)
@given(results() | summaries())
def test_decoded_records_encode_back_to_documents_their_schema_accepts(
    doc: dict[str, Any],
) -> None:
    """Decoding then re-encoding a record gives a valid document with the same fields.

    Nulls written for optional fields are dropped on the way (null reads as absent), and
    a ``usage`` gets all three counts (an absent one reads as 0).
    """
    record = decode_results_record(serialise(doc, 0))
    again = json.loads(encode_record(record))
    schema = RESULT_SCHEMA if isinstance(record, Result) else SUMMARY_SCHEMA
    schema.validate(again)
    expected = {k: v for k, v in doc.items() if v is not None or k == "prediction"}
    if isinstance(expected.get("usage"), dict):  # a count that is absent reads as 0
        expected["usage"] = {name: expected["usage"].get(name, 0) for name in USAGE_INTEGERS}
    assert again == expected
    assert decode_results_record(encode_record(record)) == record


def test_a_null_prediction_is_a_prediction() -> None:
    """An ok result predicting null keeps it: present and null, not missing."""
    doc = {
        "schema": "result/v1",
        "batch_id": "b",
        "index": 0,
        "chunk": 0,
        "status": "ok",
        "attempts": 1,
        "latency_ms": 1.0,
        "prediction": None,
    }
    RESULT_SCHEMA.validate(doc)
    record = decode_results_record(json.dumps(doc).encode())
    assert isinstance(record, Result)
    assert record.prediction is None
    assert json.loads(encode_record(record)) == doc
    without = {k: v for k, v in doc.items() if k != "prediction"}
    assert not RESULT_SCHEMA.is_valid(without)
    assert not accepts(decode_results_record, json.dumps(without).encode(), Result)
    error = Result(
        schema="result/v1", batch_id="b", index=0, chunk=0, status="error", attempts=0, latency_ms=0
    )
    assert error.prediction is msgspec.UNSET
