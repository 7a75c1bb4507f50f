"""The job book (consumer.jobstate): lifecycle, exact counts, the changelog fold. No I/O."""

from __future__ import annotations

import itertools
import random

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.jobstate import ChunkOutcome, JobBook
from schemas import (
    BATCH_CONTROL_V1,
    BATCH_STATUS_V1,
    BatchControl,
    BatchStatus,
    add_chunk,
    batch_partition,
    decode_status_record,
    done_chunk_list,
    encode_status_record,
)
from tests.helpers import examples

PARTITIONS = 1  # every batch on partition 0: owned once assigned


def owned() -> JobBook:
    """Return a book owning the only partition."""
    book = JobBook(PARTITIONS)
    book.assign([0])
    return book


def outcome(chunk: int, *, ok: int = 2, errors: int = 0, **extra: int) -> ChunkOutcome:
    """Return chunk ``chunk`` of batch ``b`` (3 chunks of 2 items) with its counts."""
    return ChunkOutcome("b", 1, chunk, 3, 6, ok, errors, **extra)


def test_a_batch_goes_in_progress_then_completed_and_counts_each_chunk_once() -> None:
    """The first chunk makes it ``in_progress``; a repeated chunk counts nothing."""
    book = owned()
    started = book.started("b", attempt=1, chunks=3, total=6, now=1.0, submitted_at=0.5)
    assert started is not None
    assert (started.state, started.submitted_at) == ("in_progress", 0.5)
    assert book.started("b", attempt=1, chunks=3, total=6, now=1.1) is None
    first = book.chunk_done(outcome(0, results_partition=0, first_offset=10, last_offset=12), 2.0)
    assert first is not None
    assert (first.state, first.ok, first.done_ranges) == ("in_progress", 2, [(0, 1)])
    assert book.chunk_done(outcome(0), 2.5) is None  # redone after a crash
    book.chunk_done(outcome(2, first_offset=30, last_offset=32), 3.0)
    final = book.chunk_done(outcome(1, ok=1, errors=1, first_offset=20, last_offset=22), 4.0)
    assert final is not None
    assert (final.state, final.ok, final.errors, final.chunks_done) == (
        "completed_with_errors",
        5,
        1,
        3,
    )
    assert (final.first_offset, final.last_offset, final.completed_at) == (10, 32, 4.0)
    assert final.final


def test_cancel_makes_it_cancelling_then_cancelled_when_every_chunk_is_done() -> None:
    """A cancel of a running batch: ``cancelling``; the last chunk: ``cancelled``."""
    book = owned()
    book.chunk_done(outcome(0), 1.0)
    cancelling = book.cancel("b", 2.0)
    assert cancelling is not None
    assert cancelling.state == "cancelling"
    assert book.cancelled("b")
    assert book.cancel("b", 2.1) is None  # said once
    book.chunk_done(outcome(1, ok=0, errors=2, cancelled=2), 3.0)
    final = book.chunk_done(outcome(2, ok=0, errors=2, cancelled=2), 4.0)
    assert final is not None
    assert (final.state, final.cancelled, final.ok) == ("cancelled", 4, 2)
    assert book.cancel("b", 5.0) is None  # final: nothing to cancel


def test_a_dead_lettered_request_fails_the_batch_for_good() -> None:
    """``failed`` is final: later chunks still count, the state stays ``failed``."""
    book = owned()
    book.chunk_done(outcome(0), 2.0)
    failed = book.fail("b", 3.0)
    assert failed is not None
    assert (failed.state, failed.final) == ("failed", True)
    assert book.fail("b", 3.5) is None
    later = book.chunk_done(outcome(1), 4.0)
    assert later is not None
    assert (later.state, later.ok) == ("failed", 4)
    control = BatchControl(schema=BATCH_CONTROL_V1, kind="failed", batch_id="b", at=5.0)
    assert book.control(control, 5.0) is None
    assert book.control(msgspec.structs.replace(control, batch_id="c"), 5.0) is None  # not held yet
    first = book.started("c", attempt=1, chunks=2, total=4, now=6.0)
    assert first is not None
    assert first.state == "failed"  # its dead letter came first


def test_expired_items_make_the_batch_expired() -> None:
    """Items past the deadline: the final state is ``expired``."""
    book = owned()
    for chunk in range(3):
        final = book.chunk_done(outcome(chunk, ok=0, errors=2, expired=2), 1.0)
    assert final is not None
    assert (final.state, final.expired) == ("expired", 6)


def test_restore_folds_the_latest_status_and_the_controls_after_it() -> None:
    """The latest status wins; a progress record after it counts; a cancel applies.

    The status is an older writer's (a ``done`` list): the book holds its chunks as ranges.
    """
    book = owned()
    older = BatchStatus(schema=BATCH_STATUS_V1, batch_id="b", state="submitted", total=6, chunks=3)
    newer = BatchStatus(
        schema=BATCH_STATUS_V1,
        batch_id="b",
        state="in_progress",
        total=6,
        chunks=3,
        ok=2,
        chunks_done=1,
        done=[0],
    )
    assert book.restore(older, 1.0) is None
    assert book.restore(newer, 1.0) is None
    progress = BatchControl(
        schema=BATCH_CONTROL_V1, kind="progress", batch_id="b", at=1.0, chunk=1, chunks=3,
        total=6, ok=2,
    )  # fmt: skip
    changed = book.restore(progress, 2.0)
    assert changed is not None
    assert (changed.ok, changed.done, changed.done_ranges) == (4, [], [(0, 2)])
    assert book.restore(progress, 2.0) is None  # the same progress twice counts once
    cancel = BatchControl(schema=BATCH_CONTROL_V1, kind="cancel", batch_id="b", at=3.0)
    cancelling = book.restore(cancel, 3.0)
    assert cancelling is not None
    assert cancelling.state == "cancelling"


def test_a_revoked_partition_forgets_its_batches_and_others_are_not_owned() -> None:
    """After revoke nothing is held or written for its batches."""
    book = JobBook(4)
    mine = next(b for b in ("a", "b", "c", "d", "e") if batch_partition(b, 4) == 1)
    other = next(b for b in ("a", "b", "c", "d", "e") if batch_partition(b, 4) != 1)
    book.assign([1])
    assert book.started(mine, attempt=1, chunks=1, total=1, now=1.0) is not None
    assert book.started(other, attempt=1, chunks=1, total=1, now=1.0) is None
    assert book.states() == {"in_progress": 1}
    book.revoke([1])
    assert book.get(mine) is None
    assert book.chunk_done(ChunkOutcome(mine, 1, 0, 1, 1, 1, 0), 2.0) is None


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=8),
    st.data(),
)
def test_counts_are_exact_whatever_the_order_and_the_repeats(
    sizes: list[int], data: st.DataObject
) -> None:
    """Chunks finished in any order, some many times: counted once each, final once.

    ``sizes`` are the chunks' item counts; each chunk has a fixed number of errors. The
    events are a random sequence over the chunks with repeats, as crashes and rebalances
    make them.
    """
    total = sum(sizes)
    errors = [data.draw(st.integers(0, size)) for size in sizes]
    order = data.draw(st.permutations(range(len(sizes))))
    repeats = data.draw(st.lists(st.sampled_from(range(len(sizes))), max_size=10))
    book = owned()
    finals = 0
    for step, chunk in enumerate([*repeats, *order, *repeats]):
        done = ChunkOutcome(
            "b", 1, chunk, len(sizes), total, sizes[chunk] - errors[chunk], errors[chunk]
        )
        status = book.chunk_done(done, float(step))
        finals += status is not None and status.final
    final = book.get("b")
    assert final is not None
    assert final.final
    assert finals == 1
    assert (final.ok, final.errors) == (total - sum(errors), sum(errors))
    assert final.done_ranges == [(0, len(sizes))]


def test_a_long_batch_keeps_its_status_record_short_whatever_the_order() -> None:
    """20,000 chunks finishing out of order: every status record stays a few hundred bytes.

    With the done chunks listed one by one, the last record would hold 20,000 numbers
    (over 100 KB) and the batch's records together over a gigabyte.
    """
    chunks, window = 20_000, 64
    book = owned()
    rng = random.Random(7)  # noqa: S311 - a reproducible order, not a secret
    order = list(range(chunks))
    for start in range(0, chunks, window):  # chunks of one window finish in any order
        part = order[start : start + window]
        rng.shuffle(part)
        order[start : start + window] = part
    largest = 0
    for step, chunk in enumerate(order):
        status = book.chunk_done(ChunkOutcome("b", 1, chunk, chunks, chunks, 1, 0), float(step))
        assert status is not None
        largest = max(largest, len(encode_status_record(status)))
        assert len(status.done_ranges) <= window
    final = book.get("b")
    assert final is not None
    assert (final.state, final.chunks_done, final.done_ranges) == (
        "completed", chunks, [(0, chunks)],
    )  # fmt: skip
    assert largest < 64 * 16 + 400  # at most a window of ranges of a few bytes each
    assert decode_status_record(encode_status_record(final)) == final


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.integers(0, 40), max_size=60), st.lists(st.integers(0, 40), max_size=8))
def test_done_ranges_hold_exactly_the_chunks_added_merged_and_sorted(
    added: list[int], listed: list[int]
) -> None:
    """add_chunk keeps sorted, separate ranges; an older writer's list merges in."""
    ranges: list[tuple[int, int]] = []
    for chunk in added:
        grown = add_chunk(ranges, chunk)
        assert (grown is None) == any(start <= chunk < end for start, end in ranges)
        ranges = grown or ranges
    assert all(end < start for (_, end), (start, _) in itertools.pairwise([(-2, -1), *ranges]))
    assert [c for start, end in ranges for c in range(start, end)] == sorted(set(added))
    status = BatchStatus(
        schema=BATCH_STATUS_V1, batch_id="b", state="in_progress", total=41, chunks=41,
        chunks_done=len(set(added) | set(listed)), done=listed, done_ranges=ranges,
    )  # fmt: skip
    assert done_chunk_list(status) == sorted(set(added) | set(listed))
    assert decode_status_record(encode_status_record(status)) == status
