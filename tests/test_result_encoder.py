"""The per-unit result encoder writes exactly what ``encode_ok_result`` writes."""

from __future__ import annotations

import orjson
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
