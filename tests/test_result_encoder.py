"""The per-unit result encoder writes exactly what ``encode_ok_result`` writes."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import (
    OkResultEncoder,
    decode_batch_request,
    decode_results_record,
    encode_batch_request,
    encode_ok_result,
)
from schemas.messages import Result

BATCH_IDS = st.from_regex(r"\A[A-Za-z0-9._:-]{1,40}\Z")
TEXT = st.text(max_size=20)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)


@given(
    batch_id=BATCH_IDS,
    chunk=st.integers(0, 1000),
    metadata=st.none() | st.dictionaries(TEXT, TEXT, max_size=4),
    attempts=st.integers(0, 100),
    latency_ms=st.floats(0, 1e7, allow_nan=False),
    queue_ms=st.floats(0, 1e7, allow_nan=False),
    indexes=st.lists(st.integers(0, 10**9), min_size=1, max_size=5),
    prediction=JSON_VALUES,
)
def test_every_record_equals_the_one_encode_ok_result_writes(  # noqa: PLR0917 - one argument per field
    batch_id: str,
    chunk: int,
    metadata: dict[str, str] | None,
    attempts: int,
    latency_ms: float,
    queue_ms: float,
    indexes: list[int],
    prediction: object,
) -> None:
    """Whatever the batch id, metadata (keys named like fields included) and prediction.

    ``all`` gives a unit's records in one call: the same bytes, one per prediction.
    """
    request = decode_batch_request(
        encode_batch_request(
            batch_id=batch_id,
            items=[b"1"],
            start=chunk,
            total=chunk + 1,
            chunk=chunk,
            chunks=chunk + 1,
            metadata=metadata,
        ),
    )
    text = orjson.dumps(prediction)
    encoder = OkResultEncoder(request, attempts, latency_ms, queue_ms)
    for index in indexes:
        expected = encode_ok_result(request, index, text, attempts, latency_ms, queue_ms)
        assert encoder(index, text) == expected
        record = decode_results_record(expected)
        assert isinstance(record, Result)
        assert record.index == index
        assert record.queue_ms == round(queue_ms, 3)
    texts = [orjson.dumps([prediction, n]) for n in range(len(indexes))]
    expected_all = [
        encode_ok_result(request, index, t, attempts, latency_ms, queue_ms)
        for index, t in zip(indexes, texts, strict=True)
    ]
    assert encoder.all(indexes, texts) == expected_all


def test_metadata_that_looks_like_the_fields_does_not_confuse_it() -> None:
    """Keys and values spelling ``,"index":0,`` or ``,"prediction":0`` stay metadata."""
    tricky = {',"index":0,': ',"prediction":0', '"prediction":0': '"index":0'}
    request = decode_batch_request(
        encode_batch_request(
            batch_id="b", items=[b"1"], start=0, total=1, chunk=0, chunks=1, metadata=tricky
        ),
    )
    encoder = OkResultEncoder(request, 1, 2.5)
    record = decode_results_record(encoder(3, b'{"index":0,"prediction":0}'))
    assert isinstance(record, Result)
    assert (record.index, record.prediction, record.metadata) == (
        3,
        {"index": 0, "prediction": 0},
        tricky,
    )


# Text made mostly of what a ``%`` format template reads specially.
FORMAT_TEXT = st.text(
    alphabet=st.sampled_from('%db"\\{},:x') | st.characters(exclude_categories=["Cs"]),
    max_size=12,
)


@given(
    metadata=st.dictionaries(FORMAT_TEXT, FORMAT_TEXT, min_size=1, max_size=4),
    latency_ms=st.floats(0, 1e7, allow_nan=False),
    indexes=st.lists(st.integers(0, 10**9), min_size=1, max_size=5),
    predictions=st.lists(FORMAT_TEXT, min_size=5, max_size=5),
)
def test_percent_signs_in_metadata_and_predictions_are_copied_as_they_are(
    metadata: dict[str, str], latency_ms: float, indexes: list[int], predictions: list[str]
) -> None:
    """The shared parts are a format template's literal text: a ``%`` in them stays ``%``."""
    request = decode_batch_request(
        encode_batch_request(
            batch_id="b.d", items=[b"1"], start=0, total=1, chunk=0, chunks=1, metadata=metadata
        ),
    )
    encoder = OkResultEncoder(request, 2, latency_ms, 0.5)
    texts = [orjson.dumps(p) for p in predictions[: len(indexes)]]
    expected = [
        encode_ok_result(request, index, text, 2, latency_ms, 0.5)
        for index, text in zip(indexes, texts, strict=True)
    ]
    assert [encoder(i, t) for i, t in zip(indexes, texts, strict=True)] == expected
    assert encoder.all(indexes, texts) == expected
    record = decode_results_record(expected[0])
    assert isinstance(record, Result)
    assert (record.batch_id, record.metadata, record.prediction) == (
        "b.d",
        metadata,
        predictions[0],
    )


def test_all_refuses_more_or_fewer_predictions_than_indexes() -> None:
    """One record per prediction: a count that does not match is an error, not a short list."""
    request = decode_batch_request(
        encode_batch_request(batch_id="b", items=[b"1"], start=0, total=1, chunk=0, chunks=1),
    )
    encoder = OkResultEncoder(request, 1, 2.5)
    with pytest.raises(ValueError, match="zip"):
        encoder.all([1, 2], [b"1"])
    with pytest.raises(ValueError, match="zip"):
        encoder.all([1], [b"1", b"2"])
