"""Decode + validate cost of a 100-item iris chunk against plain ``orjson.loads``.

Run: ``uv run python bench/bench_schemas.py``. Prints microseconds per call and the ratio
(goal: the validating decoder costs at most 2x plain parsing). Also times encoding one
result, which runs once per item in the consumer.
"""

from __future__ import annotations

import timeit

import orjson

from schemas import decode_batch_request, encode_batch_request, encode_ok_result

IRIS = {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.5, "petal_width": 0.3}


def per_call_us(fn: object, number: int) -> float:
    """Return the best of five runs of ``number`` calls, in microseconds per call."""
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main() -> None:
    """Print the figures."""
    data = encode_batch_request(
        batch_id="bench",
        items=[orjson.dumps(IRIS)] * 100,
        start=0,
        total=100,
        chunk=0,
        chunks=1,
    )
    request = decode_batch_request(data)
    plain = per_call_us(lambda: orjson.loads(data), 5000)
    strict = per_call_us(lambda: decode_batch_request(data), 5000)
    result = per_call_us(lambda: encode_ok_result(request, 7, b'"setosa"', 1, 21.5), 50000)
    print(f"message: {len(data)} bytes, 100 iris items")
    print(f"orjson.loads (no validation): {plain:8.2f} us")
    print(f"decode_batch_request:         {strict:8.2f} us")
    print(f"ratio:                        {strict / plain:8.2f} x (goal <= 2.0)")
    print(f"encode_ok_result, one item:   {result:8.2f} us")


if __name__ == "__main__":
    main()
