"""The status topic's schema files and decoder agree (``batch-status``, ``batch-control``).

As for the other records (``tests/test_schemas_agreement.py``): a valid document, spoiled
by random edits, decodes iff its schema file accepts it and the rules the file's
description lists hold (written again here from that description).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    BatchControl,
    BatchStatus,
    InvalidMessage,
    decode_status_record,
    encode_status_record,
)
from tests.helpers import examples, schema_validator
from tests.test_schemas_agreement import (
    accepts,
    ids,
    integers_written_as_integers,
    serialise,
    spoiled,
)

STATUS_SCHEMA = schema_validator("batch-status")
CONTROL_SCHEMA = schema_validator("batch-control")
COUNTS = ("ok", "errors", "cancelled", "expired")
STATUS_INTEGERS = (
    *("total", "chunks", "attempt", "chunks_done", "results_partition"),
    *("first_offset", "last_offset", *COUNTS),
)
CONTROL_INTEGERS = (
    *("attempt", "chunk", "chunks", "total", "results_partition"),
    *("first_offset", "last_offset", *COUNTS),
)
STATES = ["submitted", "in_progress", "completed", "cancelling", "cancelled", "expired"]


def ranges_hold(ranges: list[list[int]], chunks: int) -> bool:
    """Check done_ranges: each [start, end) after the one before, start < end <= chunks."""
    previous_end = 0
    for start, end in ranges:
        if isinstance(start, float) or isinstance(end, float):
            return False
        if start < previous_end or end <= start or end > chunks:
            return False
        previous_end = end
    return True


def status_rules_hold(doc: dict[str, Any]) -> bool:
    """Check the status rules beyond its schema file."""
    done = doc.get("done", [])
    ranges = doc.get("done_ranges", [])
    ranges_ok = ranges_hold(ranges, doc["chunks"])
    union = set(done) | {c for start, end in ranges for c in range(start, end)} if ranges_ok else ()
    return bool(
        integers_written_as_integers(doc, STATUS_INTEGERS)
        and not any(isinstance(chunk, float) for chunk in done)
        and doc.get("ok", 0) + doc.get("errors", 0) <= doc["total"]
        and doc.get("cancelled", 0) + doc.get("expired", 0) <= doc.get("errors", 0)
        and all(chunk < doc["chunks"] for chunk in done)
        and ranges_ok
        and doc.get("chunks_done", 0) == len(union)
    )


def control_rules_hold(doc: dict[str, Any]) -> bool:
    """Check the control rules beyond its schema file."""
    progress_ok = doc["kind"] != "progress" or (
        all(doc.get(name) is not None for name in ("chunk", "chunks", "total"))
        and doc["chunk"] < doc["chunks"]
    )
    return bool(
        integers_written_as_integers(doc, CONTROL_INTEGERS)
        and doc.get("cancelled", 0) + doc.get("expired", 0) <= doc.get("errors", 0)
        and progress_ok
    )


@st.composite
def statuses(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid status document."""
    chunks = draw(st.integers(1, 6))
    done = sorted(draw(st.sets(st.integers(0, chunks - 1))))
    cuts = sorted(draw(st.sets(st.integers(0, chunks), max_size=4)))
    ranges = [[a, b] for a, b in zip(cuts[::2], cuts[1::2], strict=False) if a < b]
    in_ranges = {c for a, b in ranges for c in range(a, b)}
    form = draw(st.sampled_from(["list", "ranges", "both"]))
    listed = done if form != "ranges" else []
    ranged = ranges if form != "list" else []
    union = set(listed) | (in_ranges if form != "list" else set())
    total = draw(st.integers(chunks, 30))
    ok = draw(st.integers(0, total))
    errors = draw(st.integers(0, total - ok))
    cancelled = draw(st.integers(0, errors))
    return {
        "schema": "batch-status/v1",
        "batch_id": draw(ids),
        "state": draw(st.sampled_from(STATES)),
        "total": total,
        "chunks": chunks,
        "ok": ok,
        "errors": errors,
        "cancelled": cancelled,
        "expired": draw(st.integers(0, errors - cancelled)),
        "chunks_done": len(union),
        **({"done": listed} if form != "ranges" else {}),
        **({"done_ranges": ranged} if form != "list" else {}),
        "results_partition": draw(st.none() | st.integers(0, 3)),
        "first_offset": draw(st.none() | st.integers(0, 99)),
        "submitted_at": draw(st.none() | st.floats(0, 2e9)),
    }


@st.composite
def controls(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid control document (a cancel or a progress record)."""
    doc: dict[str, Any] = {
        "schema": "batch-control/v1",
        "kind": draw(st.sampled_from(["cancel", "progress", "failed"])),
        "batch_id": draw(ids),
        "at": draw(st.floats(0, 2e9)),
    }
    if doc["kind"] == "progress":
        chunks = draw(st.integers(1, 5))
        errors = draw(st.integers(0, 5))
        doc |= {
            "chunk": draw(st.integers(0, chunks - 1)),
            "chunks": chunks,
            "total": draw(st.integers(chunks, 40)),
            "ok": draw(st.integers(0, 5)),
            "errors": errors,
            "cancelled": draw(st.integers(0, errors)),
            "last_offset": draw(st.integers(0, 99)),
        }
    return doc


@settings(max_examples=examples(400), deadline=None)
@given(spoiled(statuses()), st.integers(0, 2))
def test_status_decoder_accepts_exactly_what_the_schema_and_rules_accept(
    doc: dict[str, Any], style: int
) -> None:
    """decode_status_record returns a BatchStatus iff batch-status.v1.json and the rules do."""
    expected = STATUS_SCHEMA.is_valid(doc) and status_rules_hold(doc)
    assert accepts(decode_status_record, serialise(doc, style), BatchStatus) == expected


@settings(max_examples=examples(400), deadline=None)
@given(spoiled(controls()), st.integers(0, 2))
def test_control_decoder_accepts_exactly_what_the_schema_and_rules_accept(
    doc: dict[str, Any], style: int
) -> None:
    """decode_status_record returns a BatchControl iff batch-control.v1.json and the rules do."""
    expected = CONTROL_SCHEMA.is_valid(doc) and control_rules_hold(doc)
    assert accepts(decode_status_record, serialise(doc, style), BatchControl) == expected


@settings(max_examples=examples(200), deadline=None)
@given(statuses() | controls())
def test_status_records_encode_back_to_documents_their_schema_accepts(
    doc: dict[str, Any],
) -> None:
    """Decoding then encoding a status or control record gives a valid document."""
    record = decode_status_record(serialise(doc, 0))
    again = msgspec.json.decode(encode_status_record(record))
    schema = STATUS_SCHEMA if isinstance(record, BatchStatus) else CONTROL_SCHEMA
    assert schema.is_valid(again)
    assert decode_status_record(encode_status_record(record)) == record


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{}", "schema: missing"),
        (b'{"schema":"batch-status/v2"}', "unknown record type"),
        (
            b'{"schema":"batch-status/v1","batch_id":"b","state":"done","total":1,"chunks":1}',
            "state",
        ),
        (
            (
                b'{"schema":"batch-status/v1","batch_id":"b","state":"completed","total":2,'
                b'"chunks":2,"chunks_done":1,"done":[0,1]}'
            ),
            "chunks_done",
        ),
        (
            (
                b'{"schema":"batch-status/v1","batch_id":"b","state":"in_progress","total":9,'
                b'"chunks":9,"chunks_done":4,"done_ranges":[[3,5],[0,2]]}'
            ),
            "each \\[start, end\\) must follow the one before",
        ),
        (
            (
                b'{"schema":"batch-status/v1","batch_id":"b","state":"in_progress","total":9,'
                b'"chunks":9,"chunks_done":4,"done":[0,4],"done_ranges":[[3,5]]}'
            ),
            "chunks_done",
        ),
        (
            b'{"schema":"batch-control/v1","kind":"progress","batch_id":"b","at":1}',
            "chunk, chunks and total are required",
        ),
    ],
)
def test_bad_status_records_get_a_precise_error(data: bytes, reason: str) -> None:
    """Each kind of bad record names what is wrong."""
    with pytest.raises(InvalidMessage, match=reason):
        decode_status_record(data)
