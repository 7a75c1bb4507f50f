"""``round_ms`` is ``round(x, 3)``, bit for bit, and encodes to the same JSON."""

from __future__ import annotations

import math

import msgspec
from hypothesis import example, given
from hypothesis import strategies as st

from schemas import Result, decode_batch_request, encode_batch_request
from schemas.fields import RESULT_V1
from schemas.millis import _NEAR_TIE, _TO_INTEGER, round_ms
from schemas.results import encode_ok_result


def same(x: float) -> None:
    """Assert ``round_ms(x)`` is ``round(x, 3)``: the same float, sign and JSON text."""
    ours, theirs = round_ms(x), round(x, 3)
    assert msgspec.json.encode(ours) == msgspec.json.encode(theirs)
    if math.isnan(theirs):
        assert math.isnan(ours)
    else:
        assert ours == theirs
        assert math.copysign(1.0, ours) == math.copysign(1.0, theirs)
        assert ours.hex() == theirs.hex()


@given(st.floats(min_value=0.0, max_value=2e6))
@example(0.0)
@example(-0.0)
@example(0.0005)
@example(0.0015)
@example(2.675)  # a tie in decimal, not in binary: 2.67499999...
@example(999_999.9995)
@example(1_000_000.0)
@example(5e-324)
def test_the_usual_range_rounds_as_round_does(x: float) -> None:
    """Latencies and queue times: any float from 0 to 2·10⁶ ms."""
    same(x)


@given(st.integers(0, 10**9), st.integers(-3, 3))
def test_ties_and_their_neighbours_round_as_round_does(thousandths: int, steps: int) -> None:
    """Values at and a few floats around each half of a thousandth, where rounding turns."""
    x = (thousandths + 0.5) / 1000.0
    for _ in range(abs(steps)):
        x = math.nextafter(x, math.inf if steps > 0 else -math.inf)
    same(x)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_rounds_as_round_does(x: float) -> None:
    """Outside the usual range (negative, huge, NaN, infinite) ``round`` itself decides."""
    same(x)


def test_the_constants_are_what_the_docs_say() -> None:
    """The shift is 1.5·2⁵², and a tie is anything within 10⁻⁶ of a half."""
    assert _TO_INTEGER == 1.5 * 2**52
    assert math.isclose(0.5 - _NEAR_TIE, 1e-6)
    # round_ms spells them as literals (a global lookup per call less): the same numbers.
    assert {_TO_INTEGER, _NEAR_TIE, -_NEAR_TIE} <= set(round_ms.__code__.co_consts)


REQUEST = decode_batch_request(
    encode_batch_request(batch_id="b-1", items=[b"1"], start=0, total=1, chunk=0, chunks=1)
)


@given(st.floats(min_value=0.0, max_value=2e6), st.floats(min_value=0.0, max_value=2e6))
def test_a_result_record_carries_its_times_as_round_gives_them(
    latency: float, queue: float
) -> None:
    """The record's ``latency_ms`` and ``queue_ms`` are ``round(x, 3)`` of what it was given."""
    record = msgspec.json.decode(encode_ok_result(REQUEST, 0, b"1", 1, latency, queue))
    assert record["latency_ms"] == round(latency, 3)
    assert record["queue_ms"] == round(queue, 3)
    assert encode_ok_result(REQUEST, 0, b"1", 1, latency, queue) == msgspec.json.encode(
        Result(
            schema=RESULT_V1,
            batch_id="b-1",
            index=0,
            chunk=0,
            status="ok",
            attempts=1,
            latency_ms=round(latency, 3),
            queue_ms=round(queue, 3),
            prediction=msgspec.Raw(b"1"),
            metadata=REQUEST.metadata,
            attempt=REQUEST.attempt,
        )
    )
