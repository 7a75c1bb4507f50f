"""Item-level resume metadata: what fits is read back exactly, what does not is left out."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from consumer.chunk import Chunk
from consumer.resume import (
    DEFAULT_LIMIT,
    ChunkProgress,
    Ranges,
    Resume,
    add_points,
    add_range,
    decode,
    encode,
    missing,
)
from schemas import decode_batch_request, encode_batch_request


def _covered(ranges: Ranges) -> set[int]:
    return {i for start, end in ranges for i in range(start, end)}


def _well_formed(ranges: Ranges) -> bool:
    return all(s < e for s, e in ranges) and all(a[1] < b[0] for a, b in itertools.pairwise(ranges))


@st.composite
def progress(draw: st.DrawFn) -> ChunkProgress:
    """Draw a partly done message: merged ranges of up to 60 items, split into ok and error."""
    ranges: Ranges = ()
    for start, length in draw(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 10)))):
        ranges = add_range(ranges, start, start + length)
    if not ranges:
        ranges = ((0, 1),)
    total = sum(e - s for s, e in ranges)
    ok = draw(st.integers(0, total))
    results = draw(st.none() | st.tuples(st.integers(0, 99), st.integers(0, 10**12)))
    cancelled = draw(st.integers(0, total - ok))
    expired = draw(st.integers(0, total - ok - cancelled))
    return ChunkProgress(ranges, ok, total - ok, results, cancelled, expired)


@st.composite
def state(draw: st.DrawFn) -> tuple[int, set[int], dict[int, ChunkProgress]]:
    """Draw a position, finished offsets after it, and partly done offsets after it."""
    position = draw(st.integers(0, 10**12))
    offsets = draw(st.lists(st.integers(0, 400), unique=True, max_size=80))
    finished, partial = set(), {}
    for delta in offsets:
        if draw(st.booleans()):
            finished.add(position + delta)
        else:
            partial[position + delta] = draw(progress())
    return position, finished, partial


# --- ranges ----------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 20))))
def test_add_range_keeps_ranges_merged_and_covers_the_union(spans: list[tuple[int, int]]) -> None:
    """Adding ranges in any order covers exactly their union, sorted, disjoint, not touching."""
    ranges: Ranges = ()
    union: set[int] = set()
    for start, length in spans:
        ranges = add_range(ranges, start, start + length)
        union.update(range(start, start + length))
        assert _well_formed(ranges)
    assert _covered(ranges) == union


@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(1, 20))),
    st.lists(st.integers(0, 130)),
)
def test_add_points_is_add_range_of_each_point(
    spans: list[tuple[int, int]], points: list[int]
) -> None:
    """Points added at once (any order, repeats) give what one ``add_range`` each gives."""
    ranges: Ranges = ()
    for start, length in spans:
        ranges = add_range(ranges, start, start + length)
    one_by_one = ranges
    for point in points:
        one_by_one = add_range(one_by_one, point, point + 1)
    assert add_points(ranges, points) == one_by_one
    assert _well_formed(add_points(ranges, points))


@given(
    st.lists(st.integers(0, 60), unique=True),
    st.lists(st.tuples(st.integers(0, 60), st.integers(1, 5))),
)
def test_a_chunk_reads_its_one_item_acknowledgements_in_its_ranges(
    ones: list[int], units: list[tuple[int, int]]
) -> None:
    """``Chunk.done`` counts the one-item acknowledgements kept apart, whenever it is read."""
    data = encode_batch_request(
        batch_id="b", items=[b"1"] * 70, start=0, total=70, chunk=0, chunks=1
    )
    chunk = Chunk(("requests", 0), 0, decode_batch_request(data), [], 0, 1)
    expected: Ranges = ()
    for n, start in enumerate(ones):
        chunk.acked_ones.append(start)
        expected = add_range(expected, start, start + 1)
        if n < len(units):  # a unit of several items acknowledged meanwhile
            first, length = units[n]
            chunk.acked(first, first + length, 0, (0, 0))
            expected = add_range(expected, first, first + length)
        if n % 3 == 0:
            assert chunk.done == expected
    assert chunk.done == expected
    assert not chunk.acked_ones


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(1, 20))), st.integers(0, 130))
def test_missing_is_the_complement(spans: list[tuple[int, int]], size: int) -> None:
    """``missing`` returns exactly the items of the message not in the done ranges."""
    done: Ranges = ()
    for start, length in spans:
        done = add_range(done, start, start + length)
    gaps = missing(done, size)
    assert _well_formed(gaps)
    assert _covered(gaps) == set(range(size)) - _covered(done)


# --- encode / decode -------------------------------------------------------------------------


@given(state())
def test_what_fits_reads_back_exactly(case: tuple[int, set[int], dict[int, ChunkProgress]]) -> None:
    """With room enough, decoding gives back every finished offset and every partial entry."""
    position, finished, partial = case
    text = encode(position, finished, partial, limit=1_000_000)
    back = decode(position, text)
    assert {o for o in range(position, position + 401) if back.finished(o)} == finished
    assert dict(back.partial) == partial
    assert (text == "") == (not finished and not partial)


@given(state(), st.integers(0, 300))
def test_what_does_not_fit_is_left_out_never_invented(
    case: tuple[int, set[int], dict[int, ChunkProgress]], limit: int
) -> None:
    """Under a tight limit the text stays within it, and everything read back is true."""
    position, finished, partial = case
    text = encode(position, finished, partial, limit=limit)
    assert len(text) <= limit
    assert text.isascii()
    back = decode(position, text)
    for offset in range(position - 5, position + 410):
        if back.finished(offset):
            assert offset in finished
    for offset, read in back.partial.items():
        assert partial[offset] == read


def test_a_full_default_window_of_finished_offsets_fits() -> None:
    """Five thousand finished offsets in runs behind one slow message take a few bytes."""
    finished = set(range(101, 5101)) - {2000, 3000}
    text = encode(100, finished, {}, DEFAULT_LIMIT)
    assert text == "r1/1*1899/1*999/1*2100"
    assert decode(100, text).finished(4000)
    assert not decode(100, text).finished(3000)


def test_where_the_first_result_landed_travels_with_a_partial_entry() -> None:
    """The results partition and offset of a partly done message read back as written."""
    partial = {9: ChunkProgress(((0, 4),), 3, 1, (2, 1_000_007))}
    text = encode(8, set(), partial)
    assert text == "r1/1=3.1.0+4@2.1000007"
    assert dict(decode(8, text).partial) == partial


def test_cancelled_and_expired_counts_travel_with_a_partial_entry() -> None:
    """Of the error items, how many were cancelled and expired read back as written.

    The part is written only when not zero: a text without it (an older replica's, or
    a message with neither) reads as none of either.
    """
    partial = {9: ChunkProgress(((0, 6),), 1, 5, (2, 70), 3, 1)}
    text = encode(8, set(), partial)
    assert text == "r1/1=1.5.0+6@2.70!3.1"
    assert dict(decode(8, text).partial) == partial
    assert encode(8, set(), {9: ChunkProgress(((0, 6),), 1, 5)}) == "r1/1=1.5.0+6"
    assert decode(8, "r1/1=1.5.0+6").partial[9].cancelled == 0
    assert decode(8, "r1/1=1.5.0+6!2.0").partial[9].cancelled == 2


def test_offsets_at_or_below_the_position_are_left_out() -> None:
    """The position vouches for what is below it; only offsets at or after it are described."""
    partial = {5: ChunkProgress(((0, 2),), 2, 0), 9: ChunkProgress(((1, 3),), 1, 1)}
    text = encode(8, {3, 8}, partial)
    assert text == "r1/0*1/0=1.1.1+2"
    back = decode(8, text)
    assert back.finished(8)
    assert not back.finished(3)
    assert dict(back.partial) == {9: partial[9]}


@given(st.text(max_size=60), st.integers(0, 1000))
def test_anything_unreadable_reads_as_nothing_done(text: str, position: int) -> None:
    """Foreign or damaged metadata never raises and never marks anything done."""
    back = decode(position, text)
    if not text.startswith("r1/"):
        assert back == Resume()


def test_a_damaged_entry_voids_the_whole_text() -> None:
    """One unreadable entry makes the whole text read as nothing (the messages are redone)."""
    assert decode(0, "r1/0*3/garbage") == Resume()
    assert decode(0, "r2/0*3") == Resume()
    assert decode(0, "") == Resume()
    assert not decode(0, None)


def test_progress_that_does_not_fit_the_message_is_not_trusted() -> None:
    """A partial entry is used only if its ranges lie inside the message and counts agree."""
    good = ChunkProgress(((0, 2), (4, 6)), 3, 1)
    assert good.fits(6)
    assert not good.fits(5)
    assert not ChunkProgress(((0, 2),), 3, 0).fits(10)
    assert not ChunkProgress((), 0, 0).fits(10)
    assert ChunkProgress(((0, 4),), 1, 3, None, 2, 1).fits(4)
    assert not ChunkProgress(((0, 4),), 1, 3, None, 2, 2).fits(4), "more stopped than errors"
