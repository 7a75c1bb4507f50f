"""Decode + validate cost of a 100-item iris chunk against plain ``orjson.loads``.

Run: ``uv run python bench/bench_schemas.py``. Prints microseconds per call and the ratio
(goal: the validating decoder costs at most 2x plain parsing). Besides the compact iris
chunk (the common case), it times the slower paths a client can send: a pretty-printed
message (whitespace sends the duplicate-key check to a full parse) and items whose strings
hold brackets and quotes (the depth check then takes the strings apart). Also times
encoding one result (once per item in the consumer) and decoding results-topic records.
"""

from __future__ import annotations

import json
import timeit
from typing import TYPE_CHECKING

import orjson

from schemas import (
    decode_batch_request,
    decode_results_record,
    encode_batch_request,
    encode_ok_result,
    encode_summary,
)

if TYPE_CHECKING:
    from collections.abc import Callable

IRIS = {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.5, "petal_width": 0.3}
TEXT = {"text": 'He said "see [1]" and left {early}.', "lang": "en"}


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Return the best of five runs of ``number`` calls, in microseconds per call."""
    timer = timeit.Timer(fn)
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def chunk_of(item: object) -> bytes:
    """Return a one-chunk request of 100 copies of ``item``."""
    return encode_batch_request(
        batch_id="bench",
        items=[orjson.dumps(item)] * 100,
        start=0,
        total=100,
        chunk=0,
        chunks=1,
    )


def compare(label: str, data: bytes) -> float:
    """Print decode_batch_request against orjson.loads for ``data``; return the ratio."""
    plain = per_call_us(lambda: orjson.loads(data), 5000)
    strict = per_call_us(lambda: decode_batch_request(data), 5000)
    print(f"{label} ({len(data)} bytes)")
    print(f"  orjson.loads (no validation): {plain:8.2f} us")
    print(f"  decode_batch_request:         {strict:8.2f} us")
    print(f"  ratio:                        {strict / plain:8.2f} x")
    return strict / plain


def main() -> None:
    """Print the figures."""
    iris = chunk_of(IRIS)
    ratio = compare("100 iris items, compact", iris)
    compare("100 iris items, pretty-printed", json.dumps(orjson.loads(iris), indent=2).encode())
    compare("100 text items with brackets and quotes in strings", chunk_of(TEXT))
    print(f"goal: compact iris ratio <= 2.0 -> {'met' if ratio <= 2.0 else 'MISSED'}")

    request = decode_batch_request(iris)
    encode_us = per_call_us(lambda: encode_ok_result(request, 7, b'"setosa"', 1, 21.5), 50000)
    result = encode_ok_result(request, 7, b'"setosa"', 1, 21.5)
    summary = encode_summary(request, 99, 1)
    decode_us = per_call_us(lambda: decode_results_record(result), 50000)
    summary_us = per_call_us(lambda: decode_results_record(summary), 50000)
    print(f"encode_ok_result, one item:     {encode_us:8.2f} us")
    print(f"decode_results_record, result:  {decode_us:8.2f} us")
    print(f"decode_results_record, summary: {summary_us:8.2f} us")


if __name__ == "__main__":
    main()
