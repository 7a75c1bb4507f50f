"""Offset bookkeeping: only the contiguous done prefix of a partition is ever committable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from consumer.offsets import OffsetTracker, PartitionKey, PartitionOffsets
from tests.helpers import examples

A0: PartitionKey = ("a", 0)
A1: PartitionKey = ("a", 1)
B0: PartitionKey = ("b", 0)


def _received(*offsets: int) -> PartitionOffsets:
    partition = PartitionOffsets()
    for offset in offsets:
        partition.add(offset)
    return partition


def _expected_position(received: list[int], done: set[int]) -> int | None:
    """Naive model: last offset of the longest all-done prefix of ``received``, plus one."""
    position = None
    for offset in received:
        if offset not in done:
            break
        position = offset + 1
    return position


# --- PartitionOffsets: examples -------------------------------------------------------------


def test_fresh_partition_has_nothing_to_commit() -> None:
    """A partition with nothing received reports nothing committable, in flight or pending."""
    partition = PartitionOffsets()
    assert partition.committable() is None
    assert partition.in_flight == 0
    assert partition.oldest_pending is None
    assert partition.committed is None


def test_received_but_not_done_is_not_committable() -> None:
    """Receiving messages alone commits nothing: they are in flight until done."""
    partition = _received(0, 1, 2)
    assert partition.committable() is None
    assert partition.in_flight == 3
    assert partition.oldest_pending == 0


def test_in_order_done_commits_next_offset_to_read() -> None:
    """Done in order, the position is the last done offset + 1 (Kafka's next-to-read)."""
    partition = _received(0, 1, 2)
    partition.done(0)
    assert partition.committable() == 1
    partition.done(1)
    assert partition.committable() == 2
    partition.done(2)
    assert partition.committable() == 3
    assert partition.in_flight == 0
    assert partition.oldest_pending is None


def test_later_message_done_first_does_not_pass_unfinished_one() -> None:
    """A later offset finishing first never moves the position past an earlier pending one."""
    partition = _received(10, 11, 12)
    partition.done(12)
    partition.done(11)
    assert partition.committable() is None
    assert partition.oldest_pending == 10
    assert partition.in_flight == 1
    partition.done(10)
    assert partition.committable() == 13


def test_prefix_stops_at_first_pending_offset() -> None:
    """With a pending offset in the middle, the position stops just after the prefix."""
    partition = _received(0, 1, 2, 3)
    partition.done(0)
    partition.done(1)
    partition.done(3)
    assert partition.committable() == 2
    assert partition.oldest_pending == 2


def test_gaps_in_offsets_are_not_assumed_to_be_messages() -> None:
    """Offsets with holes (transaction markers, compaction): only received ones count."""
    partition = _received(5, 7, 10)
    partition.done(5)
    assert partition.committable() == 6
    partition.done(10)
    assert partition.committable() == 6
    partition.done(7)
    assert partition.committable() == 11


def test_position_after_a_hole_is_just_past_the_done_offset() -> None:
    """The position is done offset + 1 even when the next message is further on."""
    partition = _received(100, 250)
    partition.done(100)
    assert partition.committable() == 101
    assert partition.oldest_pending == 250


def test_first_offset_need_not_be_zero() -> None:
    """A partition may start anywhere (resumed from a commit); large offsets are fine."""
    start = 2**62
    partition = _received(start, start + 3)
    partition.done(start)
    partition.done(start + 3)
    assert partition.committable() == start + 4


@pytest.mark.parametrize("offset", [5, 4, 0])
def test_add_rejects_offsets_not_increasing(offset: int) -> None:
    """Offsets equal to or below the last one added are a caller bug: ValueError."""
    partition = _received(3, 5)
    with pytest.raises(ValueError, match="increasing order"):
        partition.add(offset)
    assert partition.in_flight == 2


def test_add_rejects_negative_offset() -> None:
    """Kafka offsets are never negative (sentinels like OFFSET_INVALID must not leak in)."""
    partition = PartitionOffsets()
    with pytest.raises(ValueError, match=">= 0"):
        partition.add(-1001)


@pytest.mark.parametrize(
    ("offset", "why"),
    [(6, "hole inside the pending window"), (11, "beyond the last received"), (2, "before first")],
)
def test_done_of_never_received_offset_raises(offset: int, why: str) -> None:
    """Marking an offset done that was never received is a ValueError and changes nothing."""
    partition = _received(5, 7, 10)
    with pytest.raises(ValueError, match="never received"):
        partition.done(offset)
    assert partition.in_flight == 3, why
    assert partition.committable() is None


def test_done_on_fresh_partition_raises() -> None:
    """With nothing received, any done is unknown."""
    with pytest.raises(ValueError, match="never received"):
        PartitionOffsets().done(0)


def test_done_twice_is_idempotent_while_in_window() -> None:
    """Repeating done for an offset still held back by a pending one changes nothing."""
    partition = _received(1, 2, 3)
    partition.done(2)
    partition.done(2)
    assert partition.in_flight == 2
    assert partition.committable() is None
    partition.done(1)
    assert partition.committable() == 3


def test_done_twice_is_idempotent_after_prefix_moved_on() -> None:
    """Repeating done for an offset already inside the done prefix changes nothing."""
    partition = _received(1, 2, 3)
    partition.done(1)
    partition.done(2)
    partition.done(1)
    partition.done(2)
    assert partition.in_flight == 1
    assert partition.committable() == 3


def test_done_for_hole_below_prefix_is_accepted_as_done() -> None:
    """Below the done prefix, holes cannot be told from forgotten offsets: accepted, no-op.

    Forgetting offsets below the prefix is what keeps memory bounded.
    """
    partition = _received(5, 7, 9)
    partition.done(5)
    partition.done(7)
    partition.done(6)
    assert partition.committable() == 8
    assert partition.in_flight == 1


def test_mark_committed_hides_position_until_it_advances() -> None:
    """After marking a position committed, nothing is committable until the prefix moves."""
    partition = _received(0, 1, 2)
    partition.done(0)
    partition.mark_committed(1)
    assert partition.committed == 1
    assert partition.committable() is None
    partition.done(2)
    assert partition.committable() is None
    partition.done(1)
    assert partition.committable() == 3


def test_mark_committed_of_older_position_keeps_newer_committable() -> None:
    """Marking a position behind the prefix (an older commit) leaves the rest committable."""
    partition = _received(0, 1, 2)
    partition.done(0)
    first = partition.committable()
    assert first == 1
    partition.done(1)
    partition.done(2)
    partition.mark_committed(first)
    assert partition.committable() == 3


def test_mark_committed_is_monotonic() -> None:
    """A stale confirmation for an older position never moves the committed mark back."""
    partition = _received(0, 1)
    partition.done(0)
    partition.done(1)
    partition.mark_committed(2)
    partition.mark_committed(1)
    partition.mark_committed(2)
    assert partition.committed == 2
    assert partition.committable() is None


def test_mark_committed_past_done_prefix_raises() -> None:
    """Committing past an unfinished offset would lose it: ValueError, mark unchanged."""
    partition = _received(0, 1)
    partition.done(0)
    with pytest.raises(ValueError, match="past the done prefix"):
        partition.mark_committed(2)
    assert partition.committed is None
    assert partition.committable() == 1


def test_mark_committed_up_to_oldest_pending_is_accepted() -> None:
    """A position not past the oldest pending offset skips nothing: it is recorded."""
    partition = _received(0)
    partition.mark_committed(0)
    assert partition.committed == 0
    with pytest.raises(ValueError, match="past the done prefix"):
        partition.mark_committed(1)
    partition.done(0)
    assert partition.committable() == 1


def test_mark_committed_across_a_hole_is_accepted() -> None:
    """Committing up to the oldest pending offset across a hole skips no message."""
    partition = _received(5, 7)
    partition.done(5)
    partition.mark_committed(7)
    assert partition.committable() is None
    partition.done(7)
    assert partition.committable() == 8


def test_mark_committed_past_everything_received_raises() -> None:
    """With all received done, a position past last + 1 would skip unreceived messages."""
    partition = _received(0, 1)
    partition.done(0)
    partition.done(1)
    with pytest.raises(ValueError, match="past the done prefix"):
        partition.mark_committed(3)
    partition.mark_committed(2)
    assert partition.committed == 2


def test_mark_committed_with_nothing_received_is_recorded() -> None:
    """A fresh partition records a confirmed position as is.

    That is a commit that raced a reassignment; later positions are committable only once
    past it.
    """
    partition = PartitionOffsets()
    partition.mark_committed(10)
    assert partition.committed == 10
    partition.add(10)
    partition.add(11)
    partition.done(10)
    assert partition.committable() == 11


def test_add_below_committed_position_raises() -> None:
    """A message below a recorded commit is already vouched for: ValueError, not tracked."""
    partition = PartitionOffsets()
    partition.mark_committed(10)
    with pytest.raises(ValueError, match="below the committed position"):
        partition.add(9)
    assert partition.in_flight == 0
    partition.add(10)
    assert partition.in_flight == 1


def test_mark_committed_rejects_negative_position() -> None:
    """A negative position (a librdkafka sentinel) is never a real commit."""
    partition = _received(0)
    partition.done(0)
    with pytest.raises(ValueError, match=">= 0"):
        partition.mark_committed(-1)


def test_done_offsets_are_forgotten_once_in_prefix() -> None:
    """Memory is bounded by the pending window: a fully done partition holds no offsets."""
    partition = PartitionOffsets()
    for offset in range(0, 20_000, 2):
        partition.add(offset)
    for offset in reversed(range(0, 20_000, 2)):
        partition.done(offset)
    assert partition.committable() == 19_999
    assert not partition._window
    assert not partition._pending
    assert not partition._done


def test_repr_shows_positions() -> None:
    """The repr names what holds a commit back, for debugging a stuck partition."""
    partition = _received(3, 4)
    partition.done(4)
    text = repr(partition)
    assert "oldest_pending=3" in text
    assert "in_flight=1" in text


# --- PartitionOffsets: properties ------------------------------------------------------------


@st.composite
def _offsets_and_done_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    start = draw(st.integers(min_value=0, max_value=2**40))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=150))
    offsets = []
    offset = start
    for gap in gaps:
        offsets.append(offset)
        offset += gap
    return offsets, draw(st.permutations(offsets))


@given(_offsets_and_done_order())
def test_any_done_order_never_passes_unfinished_and_reaches_end(
    case: tuple[list[int], list[int]],
) -> None:
    """For any gaps and done order, the position is exactly the contiguous done prefix.

    It never passes a pending offset, is monotonic, equals the naive model at every step,
    and is last + 1 once everything is done.
    """
    offsets, order = case
    partition = _received(*offsets)
    done: set[int] = set()
    previous = None
    for offset in order:
        partition.done(offset)
        done.add(offset)
        position = partition.committable()
        assert position == _expected_position(offsets, done)
        if position is not None:
            assert all(position <= o for o in offsets if o not in done)
            assert previous is None or position >= previous
            previous = position
        assert partition.in_flight == len(offsets) - len(done)
    assert partition.committable() == offsets[-1] + 1
    assert partition.oldest_pending is None


@given(_offsets_and_done_order(), st.data())
def test_committing_along_the_way_is_strictly_increasing_and_safe(
    case: tuple[list[int], list[int]], data: st.DataObject
) -> None:
    """Commits made along the way are strictly increasing and safe.

    Committing whenever something is committable never passes a pending offset, and the
    last commit is last + 1.
    """
    offsets, order = case
    partition = _received(*offsets)
    done: set[int] = set()
    commits: list[int] = []
    for offset in order:
        partition.done(offset)
        done.add(offset)
        position = partition.committable()
        if position is not None and data.draw(st.booleans()):
            assert all(position <= o for o in offsets if o not in done)
            partition.mark_committed(position)
            commits.append(position)
            assert partition.committable() is None
    final = partition.committable()
    if final is not None:
        partition.mark_committed(final)
        commits.append(final)
    assert commits == sorted(set(commits))
    assert commits[-1] == offsets[-1] + 1


@given(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=50), st.data())
def test_repeated_done_calls_are_idempotent(gaps: list[int], data: st.DataObject) -> None:
    """Any sequence of done calls with repeats ends in the same state as without repeats."""
    offsets = []
    offset = 0
    for gap in gaps:
        offsets.append(offset)
        offset += gap
    calls = data.draw(st.lists(st.sampled_from(offsets), max_size=3 * len(offsets)))
    repeated, once = _received(*offsets), _received(*offsets)
    for call in calls:
        repeated.done(call)
    for call in dict.fromkeys(calls):
        once.done(call)
    assert repeated.committable() == once.committable()
    assert repeated.in_flight == once.in_flight
    assert repeated.oldest_pending == once.oldest_pending


class PartitionOffsetsMachine(RuleBasedStateMachine):
    """Interleaved add / done / commit against a naive model of the contiguous prefix."""

    def __init__(self) -> None:
        """Start with an empty partition and model."""
        super().__init__()
        self.partition = PartitionOffsets()
        self.received: list[int] = []
        self.done_set: set[int] = set()
        self.next_offset = 0
        self.committed: int | None = None
        self.high_water: int | None = None

    @initialize(start=st.integers(min_value=0, max_value=2**50))
    def start_at(self, start: int) -> None:
        """Begin at an arbitrary offset, as a resumed consumer does."""
        self.next_offset = start

    @rule(gap=st.integers(min_value=1, max_value=4))
    def add(self, gap: int) -> None:
        """Receive the next message, possibly after a hole in the offsets."""
        self.partition.add(self.next_offset)
        self.received.append(self.next_offset)
        self.next_offset += gap

    @precondition(lambda self: bool(self.received))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        """Finish any received message, including one already done (idempotence)."""
        offset = data.draw(st.sampled_from(self.received))
        self.partition.done(offset)
        self.done_set.add(offset)

    @rule()
    def commit(self) -> None:
        """Commit whatever is committable, as the committer does on its interval."""
        position = self.partition.committable()
        if position is not None:
            self.partition.mark_committed(position)
            self.committed = position

    def _limit(self) -> int:
        """Highest safe position: the oldest pending, else last + 1, else the fetch start."""
        pending = [o for o in self.received if o not in self.done_set]
        if pending:
            return pending[0]
        return self.received[-1] + 1 if self.received else self.next_offset

    @rule(data=st.data())
    def mark_any_safe_position(self, data: st.DataObject) -> None:
        """Mark any position not past the oldest pending (or last + 1): accepted."""
        position = data.draw(st.integers(min_value=0, max_value=self._limit()))
        self.partition.mark_committed(position)
        if self.committed is None or position > self.committed:
            self.committed = position

    @precondition(lambda self: bool(self.received))
    @rule(data=st.data())
    def mark_unsafe_position(self, data: st.DataObject) -> None:
        """Mark a position past the oldest pending (or last + 1): ValueError, unchanged."""
        low = max(self._limit(), self.committed or 0) + 1
        position = data.draw(st.integers(min_value=low, max_value=low + 2**40))
        with pytest.raises(ValueError, match="past the done prefix"):
            self.partition.mark_committed(position)

    @precondition(lambda self: bool(self.received))
    @rule(data=st.data())
    def done_unknown(self, data: st.DataObject) -> None:
        """Finish an offset beyond the last received: ValueError."""
        offset = data.draw(st.integers(min_value=self.received[-1] + 1, max_value=2**62))
        with pytest.raises(ValueError, match="never received"):
            self.partition.done(offset)

    @invariant()
    def matches_model(self) -> None:
        """Committable, in-flight and oldest pending agree with the naive model."""
        expected = _expected_position(self.received, self.done_set)
        if expected is not None and (self.committed is None or expected > self.committed):
            assert self.partition.committable() == expected
        else:
            assert self.partition.committable() is None
        pending = [o for o in self.received if o not in self.done_set]
        assert self.partition.in_flight == len(pending)
        assert self.partition.oldest_pending == (pending[0] if pending else None)
        assert self.partition.committed == self.committed

    @invariant()
    def never_passes_unfinished(self) -> None:
        """Neither the committed nor the committable position passes a pending offset."""
        pending = [o for o in self.received if o not in self.done_set]
        for position in (self.committed, self.partition.committable()):
            if position is not None and pending:
                assert position <= pending[0]

    @invariant()
    def monotonic(self) -> None:
        """Check that the committable position never moves backwards."""
        position = self.partition.committable()
        if position is not None:
            assert self.high_water is None or position >= self.high_water
            self.high_water = position

    @invariant()
    def window_starts_with_pending(self) -> None:
        """Done offsets at the front are popped at once (what keeps it O(1) amortised)."""
        window = self.partition._window
        assert not window or window[0] in self.partition._pending
        assert len(window) == len(self.partition._pending) + len(self.partition._done)

    def teardown(self) -> None:
        """Once everything is done, the position reaches last + 1."""
        for offset in self.received:
            self.partition.done(offset)
        if self.received:
            end = self.received[-1] + 1
            committed = self.committed
            expected = None if committed is not None and committed >= end else end
            assert self.partition.committable() == expected


TestPartitionOffsetsMachine = PartitionOffsetsMachine.TestCase
TestPartitionOffsetsMachine.settings = settings(max_examples=examples(200), stateful_step_count=60)


# --- OffsetTracker: examples ----------------------------------------------------------------


def test_tracker_add_to_unassigned_partition_is_refused() -> None:
    """A message of a partition not assigned is not tracked: add returns False."""
    tracker = OffsetTracker()
    assert tracker.add("a", 0, 0) is False
    assert tracker.in_flight() == 0
    assert tracker.commit_positions() == {}


def test_tracker_positions_per_partition() -> None:
    """Each partition keeps its own prefix; commit_positions lists the advanced ones."""
    tracker = OffsetTracker()
    tracker.assign([A0, A1, B0])
    for offset in (0, 1, 2):
        assert tracker.add("a", 0, offset)
    assert tracker.add("a", 1, 40)
    assert tracker.add("b", 0, 7)
    assert tracker.done("a", 0, 1)
    assert tracker.done("a", 0, 0)
    assert tracker.done("b", 0, 7)
    assert tracker.commit_positions() == {A0: 2, B0: 8}
    assert tracker.in_flight() == 2


def test_tracker_mark_committed_clears_until_advance() -> None:
    """After mark_committed, a partition is listed again only once its position advances."""
    tracker = OffsetTracker()
    tracker.assign([A0, B0])
    tracker.add("a", 0, 0)
    tracker.add("a", 0, 1)
    tracker.add("b", 0, 0)
    tracker.done("a", 0, 0)
    tracker.done("b", 0, 0)
    positions = tracker.commit_positions()
    tracker.mark_committed(positions)
    assert tracker.commit_positions() == {}
    tracker.done("a", 0, 1)
    assert tracker.commit_positions() == {A0: 2}


def test_tracker_revoke_returns_final_positions_and_forgets() -> None:
    """Revoke returns what to commit before giving the partitions up, then forgets them."""
    tracker = OffsetTracker()
    tracker.assign([A0, A1, B0])
    tracker.add("a", 0, 0)
    tracker.add("a", 0, 1)
    tracker.add("a", 1, 5)
    tracker.add("b", 0, 3)
    tracker.done("a", 0, 0)
    tracker.done("b", 0, 3)
    final = tracker.revoke([A0, A1])
    assert final == {A0: 1}
    assert tracker.assigned == frozenset({B0})
    assert tracker.partition("a", 0) is None
    assert tracker.in_flight() == 0
    assert tracker.commit_positions() == {B0: 4}


def test_tracker_revoke_skips_already_committed_and_unknown() -> None:
    """A partition with nothing new since its last commit, or not assigned, is left out."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 0)
    tracker.done("a", 0, 0)
    tracker.mark_committed({A0: 1})
    assert tracker.revoke([A0, B0]) == {}
    assert tracker.assigned == frozenset()


def test_tracker_done_after_revoke_is_ignored() -> None:
    """Work finishing after its partition was revoked is ignored: False, no error."""
    tracker = OffsetTracker()
    tracker.assign([A0, B0])
    tracker.add("a", 0, 0)
    tracker.add("b", 0, 0)
    tracker.revoke([A0])
    assert tracker.done("a", 0, 0) is False
    assert tracker.done("a", 0, 999) is False
    assert tracker.in_flight() == 1
    assert tracker.done("b", 0, 0) is True
    assert tracker.in_flight() == 0


def test_tracker_mark_committed_ignores_revoked_partitions() -> None:
    """A commit confirmed after its partition was revoked is ignored."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 0)
    tracker.done("a", 0, 0)
    positions = tracker.commit_positions()
    tracker.revoke([A0])
    tracker.mark_committed(positions)
    assert tracker.assigned == frozenset()


def test_tracker_mark_committed_past_prefix_raises() -> None:
    """The tracker refuses a mark that would skip an unfinished message."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 0)
    with pytest.raises(ValueError, match="past the done prefix"):
        tracker.mark_committed({A0: 1})


def test_tracker_commit_racing_revoke_and_reassign_does_not_raise() -> None:
    """A commit confirmed after its partition was revoked and assigned again is harmless.

    The new assignment has received nothing yet (or resumes from that very position),
    so marking the old position must not raise and crash the commit loop.
    """
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 0)
    tracker.add("a", 0, 1)
    tracker.done("a", 0, 0)
    tracker.done("a", 0, 1)
    positions = tracker.commit_positions()
    assert positions == {A0: 2}
    tracker.revoke([A0])
    tracker.assign([A0])
    tracker.mark_committed(positions)
    tracker.add("a", 0, 2)
    assert tracker.commit_positions() == {}
    tracker.done("a", 0, 2)
    assert tracker.commit_positions() == {A0: 3}


def test_tracker_reassign_after_revoke_starts_fresh() -> None:
    """A partition assigned again after revoke starts over (the consumer may seek back)."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 10)
    tracker.done("a", 0, 10)
    tracker.revoke([A0])
    tracker.assign([A0])
    assert tracker.add("a", 0, 5)
    assert tracker.commit_positions() == {}
    assert tracker.in_flight() == 1


def test_tracker_assign_is_idempotent() -> None:
    """Assigning an already assigned partition keeps its state."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 0)
    tracker.add("a", 0, 1)
    tracker.done("a", 0, 0)
    tracker.assign([A0, A1])
    assert tracker.commit_positions() == {A0: 1}
    assert tracker.in_flight() == 1
    assert tracker.assigned == frozenset({A0, A1})


def test_tracker_in_flight_not_double_counted_on_repeated_done() -> None:
    """Repeated done calls count once in in_flight."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 0)
    tracker.add("a", 0, 1)
    assert tracker.done("a", 0, 1)
    assert tracker.done("a", 0, 1)
    assert tracker.in_flight() == 1


def test_tracker_unknown_offset_on_assigned_partition_raises() -> None:
    """On an assigned partition, done for a never-received offset is a bug: ValueError."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 0)
    with pytest.raises(ValueError, match="never received"):
        tracker.done("a", 0, 1)
    assert tracker.in_flight() == 1


def test_tracker_add_out_of_order_raises() -> None:
    """The tracker passes on PartitionOffsets' ordering check, in_flight unchanged."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 3)
    with pytest.raises(ValueError, match="increasing order"):
        tracker.add("a", 0, 3)
    assert tracker.in_flight() == 1


def test_tracker_partition_accessor() -> None:
    """partition() exposes one partition's bookkeeping for metrics (oldest pending, etc.)."""
    tracker = OffsetTracker()
    tracker.assign([A0])
    tracker.add("a", 0, 4)
    offsets = tracker.partition("a", 0)
    assert offsets is not None
    assert offsets.oldest_pending == 4
    assert tracker.partition("b", 0) is None


# --- OffsetTracker: state machine -----------------------------------------------------------

PARTITIONS = [A0, A1, B0]


class _ModelPartition:
    def __init__(self, start: int) -> None:
        self.received: list[int] = []
        self.done: set[int] = set()
        self.next_offset = start
        self.committed: int | None = None

    def committable(self) -> int | None:
        position = _expected_position(self.received, self.done)
        if position is None or (self.committed is not None and position <= self.committed):
            return None
        return position


class OffsetTrackerMachine(RuleBasedStateMachine):
    """Assign / revoke / add / done / commit in any order, against a per-partition model."""

    def __init__(self) -> None:
        """Start with nothing assigned."""
        super().__init__()
        self.tracker = OffsetTracker()
        self.model: dict[PartitionKey, _ModelPartition] = {}
        self.orphans: list[tuple[PartitionKey, int]] = []  # offsets of revoked partitions
        self.broker: dict[PartitionKey, int] = {}  # what the broker holds as committed
        self.sent: dict[PartitionKey, int] | None = None  # a commit awaiting confirmation

    def _broker_commit(self, positions: dict[PartitionKey, int]) -> None:
        for tp, position in positions.items():
            self.broker[tp] = max(position, self.broker.get(tp, 0))

    @rule(
        tps=st.lists(st.sampled_from(PARTITIONS), unique=True),
        skip=st.integers(min_value=0, max_value=1000),
    )
    def assign(self, tps: list[PartitionKey], skip: int) -> None:
        """Assign partitions; new ones resume at or after the broker's committed position."""
        self.tracker.assign(tps)
        for tp in tps:
            self.model.setdefault(tp, _ModelPartition(self.broker.get(tp, 0) + skip))

    @rule(tps=st.lists(st.sampled_from(PARTITIONS), unique=True))
    def revoke(self, tps: list[PartitionKey]) -> None:
        """Revoke returns exactly the advanced positions of the revoked partitions."""
        expected = {}
        for tp in tps:
            part = self.model.pop(tp, None)
            if part is None:
                continue
            position = part.committable()
            if position is not None:
                expected[tp] = position
            self.orphans.extend((tp, o) for o in part.received)
        assert self.tracker.revoke(tps) == expected
        self._broker_commit(expected)  # committed before the partitions are given up

    @rule(tp=st.sampled_from(PARTITIONS), gap=st.integers(min_value=1, max_value=3))
    def add(self, tp: PartitionKey, gap: int) -> None:
        """Add to an assigned partition is tracked; to an unassigned one, refused."""
        part = self.model.get(tp)
        if part is None:
            assert self.tracker.add(*tp, 0) is False
            return
        assert self.tracker.add(*tp, part.next_offset) is True
        part.received.append(part.next_offset)
        part.next_offset += gap

    @precondition(lambda self: any(p.received for p in self.model.values()))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        """Finish any received message of an assigned partition (repeats allowed)."""
        tp = data.draw(st.sampled_from(sorted(tp for tp, p in self.model.items() if p.received)))
        offset = data.draw(st.sampled_from(self.model[tp].received))
        assert self.tracker.done(*tp, offset) is True
        self.model[tp].done.add(offset)

    @precondition(lambda self: bool(self.orphans))
    @rule(data=st.data())
    def late_done(self, data: st.DataObject) -> None:
        """Finish a message of a revoked partition late: ignored, False, no error.

        Skipped when the partition was assigned again: its old offsets may collide with the
        new incarnation's, and the done would then be a real one.
        """
        tp, offset = data.draw(st.sampled_from(self.orphans))
        if tp in self.model:
            return  # reassigned: an old offset could collide with a new one; not a late done
        assert self.tracker.done(*tp, offset) is False

    @rule()
    def commit(self) -> None:
        """commit_positions lists exactly the advanced partitions; marking clears them."""
        expected = {tp: p.committable() for tp, p in self.model.items()}
        positions = self.tracker.commit_positions()
        assert positions == {tp: pos for tp, pos in expected.items() if pos is not None}
        self._broker_commit(positions)
        self.tracker.mark_committed(positions)
        for tp, position in positions.items():
            self.model[tp].committed = position
        assert self.tracker.commit_positions() == {}

    @precondition(lambda self: self.sent is None)
    @rule()
    def commit_send(self) -> None:
        """Send a commit whose confirmation comes later, across any rebalances."""
        positions = self.tracker.commit_positions()
        expected = {tp: p.committable() for tp, p in self.model.items()}
        assert positions == {tp: pos for tp, pos in expected.items() if pos is not None}
        self._broker_commit(positions)
        self.sent = positions

    @precondition(lambda self: self.sent is not None)
    @rule()
    def commit_confirm(self) -> None:
        """Confirm the sent commit late: never raises, even when partitions moved meanwhile."""
        assert self.sent is not None
        self.tracker.mark_committed(self.sent)
        for tp, position in self.sent.items():
            part = self.model.get(tp)
            if part is not None and (part.committed is None or position > part.committed):
                part.committed = position
        self.sent = None

    @invariant()
    def agrees_with_model(self) -> None:
        """Check assigned set and in-flight total; no position passes a pending offset."""
        assert self.tracker.assigned == frozenset(self.model)
        total = sum(len(p.received) - len(p.done) for p in self.model.values())
        assert self.tracker.in_flight() == total
        for tp, part in self.model.items():
            pending = [o for o in part.received if o not in part.done]
            position = self.tracker.commit_positions().get(tp, part.committed)
            if position is not None and pending:
                assert position <= pending[0]


TestOffsetTrackerMachine = OffsetTrackerMachine.TestCase
TestOffsetTrackerMachine.settings = settings(max_examples=examples(200), stateful_step_count=60)
