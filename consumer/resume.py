"""Item-level resume: which items of the messages after a committed offset are done.

Pure logic: no Kafka, no I/O, no clock. A commit of position ``N`` for a partition also
carries, in the offset commit's metadata string, what is known to be done *after* ``N``:

* offsets whose every record (results and summary, or dead letter) is acknowledged,
  held back only by an earlier unfinished message: a replica taking the partition over
  marks them done without producing anything;
* for a message partly done, the item ranges whose results are acknowledged and how many
  of those were ``ok`` and ``error``: the new owner calls the model only for the other
  items, and the chunk summary it writes counts the previous owner's items too.

The broker refuses metadata over ``offset.metadata.max.bytes`` (4096 by default), so
:func:`encode` keeps what fits in ``limit`` bytes and leaves the rest out. Anything left
out, unreadable or inconsistent with the message it describes degrades to redoing that
message whole (duplicates, never a lost item).

Format (ASCII)::

    r1/<entry>/<entry>...

Offsets are written as the gap since the end of the previous entry (the first one since
the committed position), so that neighbours cost one digit. An entry is either
``<gap>*<count>``: ``count`` consecutive finished offsets (offsets never received, holes
left by transactions or compaction, may be among them: nothing is ever read there), or
``<gap>=<ok>.<error>.<start>+<length>,<start>+<length>...[@<partition>.<offset>][!<cancelled>.<expired>]``:
one partly done message, its acknowledged item ranges (``start`` as the gap since the
previous range's end), when known where its first result landed on the results topic (the
batch's status names the offset range its results span: the new owner's range must
start there, not at its own first record) and, when any, how many of its ``error`` items
were ``cancelled`` and ``expired`` (the chunk summary counts those apart). The last part
is only written when it is not zero, so a replica of an older version, which reads it as
unreadable (and redoes the partition's messages), only meets it after a cancel or a
deadline.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

PREFIX = "r1"
DEFAULT_LIMIT = 4000  # under the broker's default offset.metadata.max.bytes (4096)

Ranges = tuple[tuple[int, int], ...]
"""Sorted, disjoint, non-adjacent half-open ``(start, end)`` ranges of item indices."""

_FINISHED = re.compile(r"(\d+)\*(\d+)")
_PARTIAL = re.compile(
    r"(\d+)=(\d+)\.(\d+)\.((?:\d+\+\d+)(?:,\d+\+\d+)*)(?:@(\d+)\.(\d+))?(?:!(\d+)\.(\d+))?"
)


@dataclass(frozen=True, slots=True)
class ChunkProgress:
    """The acknowledged items of one message: their ranges, how many were ok/error.

    ``results``: the results partition and offset of its first acknowledged record, if known;
    ``cancelled`` and ``expired``: how many of the ``error`` items were those.
    """

    done: Ranges
    ok: int
    error: int
    results: tuple[int, int] | None = None
    cancelled: int = 0
    expired: int = 0

    @property
    def count(self) -> int:
        """How many items the ranges cover."""
        return sum(end - start for start, end in self.done)

    def fits(self, size: int) -> bool:
        """Whether this can describe a message of ``size`` items (else it is ignored)."""
        return (
            bool(self.done)
            and self.done[-1][1] <= size
            and self.ok >= 0
            and self.error >= 0
            and self.ok + self.error == self.count
            and self.cancelled >= 0
            and self.expired >= 0
            and self.cancelled + self.expired <= self.error
        )


@dataclass(frozen=True, slots=True)
class Resume:
    """What a commit's metadata says about the offsets after its position."""

    finished_runs: tuple[tuple[int, int], ...] = ()  # (first offset, count), sorted
    partial: Mapping[int, ChunkProgress] = field(default_factory=dict)

    def __bool__(self) -> bool:
        """Whether anything is known to be done after the position."""
        return bool(self.finished_runs or self.partial)

    def finished(self, offset: int) -> bool:
        """Whether every record of the message at ``offset`` is known to be acknowledged."""
        return any(first <= offset < first + count for first, count in self.finished_runs)


def add_range(ranges: Ranges, start: int, end: int) -> Ranges:
    """Return ``ranges`` with ``[start, end)`` added, merged with what overlaps or touches.

    ``ranges`` are well formed (see :data:`Ranges`), so those that meet the new range
    are neighbours, found by bisection: an acknowledgement costs no Python loop over a
    chunk's ranges (64 units in flight, answered in any order, leave many gaps).
    """
    if start >= end:
        return ranges
    if not ranges:
        return ((start, end),)
    last_start, last_end = ranges[-1]
    if start > last_end:  # after every range (acknowledgements come roughly in order)
        return (*ranges, (start, end))
    if start == last_end:  # touches the last one only
        return (*ranges[:-1], (last_start, end))
    first = bisect.bisect_left(ranges, (start,))  # the first range starting at or after start
    if first and ranges[first - 1][1] >= start:
        first -= 1  # the range before it reaches start
    last = bisect.bisect_right(ranges, (end, math.inf))  # the first range starting after end
    if first < last:
        start, end = min(start, ranges[first][0]), max(end, ranges[last - 1][1])
    return (*ranges[:first], (start, end), *ranges[last:])


def add_points(ranges: Ranges, points: Sequence[int]) -> Ranges:
    """Return ``ranges`` with ``[p, p + 1)`` added for each of ``points`` (any order).

    :func:`add_range` of each point, in one sort and one pass: one-item units'
    acknowledgements are kept as points and added when the ranges are read.
    """
    if not points:
        return ranges
    merged: list[tuple[int, int]] = []
    for start, end in sorted([*ranges, *((p, p + 1) for p in points)]):
        if merged and start <= merged[-1][1]:  # overlaps or touches the last one
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def missing(done: Sequence[tuple[int, int]], size: int) -> Ranges:
    """Return the ranges of ``[0, size)`` not covered by ``done`` (sorted, disjoint)."""
    gaps: list[tuple[int, int]] = []
    at = 0
    for start, end in done:
        if start > at:
            gaps.append((at, min(start, size)))
        at = max(at, end)
    if at < size:
        gaps.append((at, size))
    return tuple((lo, hi) for lo, hi in gaps if lo < hi)


def _runs(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Group sorted offsets into ``(first, count)`` runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for offset in sorted(set(offsets)):
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((offset, 1))
    return runs


def encode(
    position: int,
    finished: Iterable[int],
    partial: Mapping[int, ChunkProgress],
    limit: int = DEFAULT_LIMIT,
) -> str:
    """Describe what is done after ``position`` in at most ``limit`` ASCII characters.

    Offsets below ``position`` are left out (the position vouches for them), as are
    partial entries with no range. Entries are taken oldest first; one that does not fit
    is left out and the next ones are still tried (a finished run costs a few bytes).
    Returns ``""`` when there is nothing to say.
    """
    entries: list[tuple[int, int, str]] = []  # (offset, end offset, entry without its gap)
    for first, count in _runs(o for o in finished if o >= position):
        entries.append((first, first + count, f"*{count}"))
    for offset, progress in partial.items():
        if offset < position or not progress.done:
            continue
        ranges, at = [], 0
        for start, end in progress.done:
            ranges.append(f"{start - at}+{end - start}")
            at = end
        body = f"={progress.ok}.{progress.error}.{','.join(ranges)}"
        if progress.results is not None:
            body += f"@{progress.results[0]}.{progress.results[1]}"
        if progress.cancelled or progress.expired:
            body += f"!{progress.cancelled}.{progress.expired}"
        entries.append((offset, offset + 1, body))
    entries.sort()
    out, size, at = [PREFIX], len(PREFIX), position
    for offset, end, body in entries:
        if offset < at:
            continue  # a partial entry for an offset also listed as finished: finished wins
        text = f"{offset - at}{body}"
        if size + 1 + len(text) > limit:
            continue
        out.append(text)
        size += 1 + len(text)
        at = end
    return "/".join(out) if len(out) > 1 else ""


def decode(position: int, metadata: str | None) -> Resume:
    """Read what :func:`encode` wrote for ``position``; anything unreadable reads as nothing.

    Nothing known means the messages after the position are redone whole, the behaviour
    without item-level resume: a damaged or foreign metadata string never loses an item.
    """
    if not metadata:
        return Resume()
    parts = metadata.split("/")
    if parts[0] != PREFIX:
        return Resume()
    runs: list[tuple[int, int]] = []
    partial: dict[int, ChunkProgress] = {}
    at = position
    for part in parts[1:]:
        if match := _FINISHED.fullmatch(part):
            first, count = at + int(match[1]), int(match[2])
            runs.append((first, count))
            at = first + count
        elif match := _PARTIAL.fullmatch(part):
            offset = at + int(match[1])
            done, item = [], 0
            for text in match[4].split(","):
                gap, length = (int(n) for n in text.split("+"))
                start = item + gap
                done.append((start, start + length))
                item = start + length
            ranges = tuple((s, e) for s, e in done if s < e)
            if ranges and all(a[1] < b[0] for a, b in itertools.pairwise(ranges)):
                results = None if match[5] is None else (int(match[5]), int(match[6]))
                stopped = (0, 0) if match[7] is None else (int(match[7]), int(match[8]))
                partial[offset] = ChunkProgress(
                    ranges, int(match[2]), int(match[3]), results, *stopped
                )
            at = offset + 1
        else:
            return Resume()
    return Resume(tuple(runs), partial)


def describe(  # noqa: PLR0913 - the partition's state, each part named
    position: int,
    *,
    done_behind: Iterable[int],
    partial: Mapping[int, ChunkProgress],
    previous: Resume | None,
    last_received: int | None,
    limit: int,
) -> str:
    """Encode what is done after ``position`` for a commit made now.

    ``done_behind``: offsets whose records are all acknowledged, behind a pending one;
    ``partial``: the acknowledged items of messages in flight; ``previous``: what a
    previous owner's metadata said, of which the offsets after ``last_received`` (not
    received here yet) still hold.
    """
    finished = set(done_behind)
    merged = dict(partial)
    if previous is not None:
        after = -1 if last_received is None else last_received
        for first, count in previous.finished_runs:
            finished.update(range(max(first, after + 1), first + count))
        merged.update((o, p) for o, p in previous.partial.items() if o > after)
    return encode(position, finished, merged, limit)
