"""Figures derived from a progress timeline: pure functions of samples, no clock, no I/O.

Definitions (``chaos/README.md`` has them in prose):

- A **stall** of a partition is a stretch of samples where it has lag (end offset above
  the committed offset) and its committed offset does not change. It starts at the first
  such sample and ends at the sample where the offset moves or the lag is gone
  (*resolved*), or at the last sample (*unresolved*). Samples without offsets (the
  broker did not answer) neither end nor start one.
- Time inside a fault **window** (the broker or the model down on purpose) is
  *explained*; the rest of a stall is *unexplained*. A partition is **stuck** when one
  of its stalls has at least the stall timeout of unexplained time.
- **Ownerless** time: a stretch where the partition has lag and no live replica's log
  says it owns it (from its first sample to the sample that ends it).
- **Progress** of a partition after a moment ``t0``: the first sample after ``t0``
  whose committed offset is above the baseline (the committed offset as of a given
  moment), or whose newest result was created after ``t0``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from chaos.timeline import Sample


@dataclass(frozen=True)
class Window:
    """A stretch of wall time during which a fault was injected on purpose."""

    start: float
    end: float
    label: str

    def overlap(self, start: float, end: float) -> float:
        """Return how much of ``[start, end]`` lies inside this window."""
        return max(0.0, min(end, self.end) - max(start, self.start))


@dataclass(frozen=True)
class Stall:
    """A partition with lag whose committed offset did not move from ``start`` to ``end``."""

    partition: int
    start: float
    end: float
    resolved: bool
    committed: int

    @property
    def seconds(self) -> float:
        """Return its length."""
        return self.end - self.start

    def unexplained(self, windows: Sequence[Window]) -> float:
        """Return its length outside the fault ``windows``."""
        return self.seconds - sum(w.overlap(self.start, self.end) for w in windows)

    def clipped(self, start: float, end: float, windows: Sequence[Window] = ()) -> float:
        """Return its unexplained length inside ``[start, end]``."""
        lo, hi = max(self.start, start), min(self.end, end)
        if hi <= lo:
            return 0.0
        return (hi - lo) - sum(w.overlap(lo, hi) for w in windows)


def stalls(samples: Sequence[Sample], partitions: Iterable[int]) -> list[Stall]:
    """Return every stall of ``partitions`` in ``samples`` (see the module docstring)."""
    found: list[Stall] = []
    for p in partitions:
        start: float | None = None
        base = 0
        last_t = 0.0
        for sample in samples:
            if sample.committed is None or sample.end is None:
                continue
            last_t = sample.t
            committed = sample.committed[p]
            lagging = sample.end[p] > committed
            if start is not None and (not lagging or committed != base):
                found.append(Stall(p, start, sample.t, resolved=True, committed=base))
                start = None
            if lagging and start is None:
                start, base = sample.t, committed
        if start is not None:
            found.append(Stall(p, start, last_t, resolved=False, committed=base))
    return found


def stuck_partitions(
    found: Sequence[Stall], windows: Sequence[Window], timeout_s: float
) -> list[Stall]:
    """Return, per stuck partition, its longest stall of at least ``timeout_s`` unexplained."""
    worst: dict[int, Stall] = {}
    for stall in found:
        if stall.unexplained(windows) >= timeout_s:
            known = worst.get(stall.partition)
            if known is None or stall.unexplained(windows) > known.unexplained(windows):
                worst[stall.partition] = stall
    return [worst[p] for p in sorted(worst)]


def longest_stall(
    found: Sequence[Stall], start: float, end: float, windows: Sequence[Window] = ()
) -> float:
    """Return the longest unexplained stall time of any partition inside ``[start, end]``."""
    return max((s.clipped(start, end, windows) for s in found), default=0.0)


def ownerless(
    samples: Sequence[Sample], partitions: Iterable[int], start: float, end: float
) -> float:
    """Return the longest time inside ``[start, end]`` a partition had lag and no owner.

    A stretch runs from its first sample to the sample that ends it (an owner, or no
    lag), or to the last sample. Without offsets in a sample (the broker did not answer)
    the lag is taken as unchanged.
    """
    longest = 0.0
    for p in partitions:
        since: float | None = None
        lagging = False
        for sample in samples:
            lag = sample.lag(p)
            if lag is not None:
                lagging = lag > 0
            if lagging and not sample.owners[p]:
                since = sample.t if since is None else since
            elif since is not None:
                longest = max(longest, _clip(since, sample.t, start, end))
                since = None
        if since is not None and samples:
            longest = max(longest, _clip(since, samples[-1].t, start, end))
    return longest


def _clip(lo: float, hi: float, start: float, end: float) -> float:
    return max(0.0, min(hi, end) - max(lo, start))


def committed_at(samples: Sequence[Sample], partition: int, when: float) -> int | None:
    """Return the committed offset of the last sample at or before ``when`` that has one.

    If no sample before ``when`` has offsets, the first one after it.
    """
    before = [s for s in samples if s.committed is not None and s.t <= when]
    if before:
        last = before[-1].committed
        return last[partition] if last is not None else None
    after = next((s.committed for s in samples if s.committed is not None), None)
    return after[partition] if after is not None else None


def lag_at(samples: Sequence[Sample], partition: int, when: float) -> int | None:
    """Return the lag of the last sample at or before ``when`` that has offsets."""
    for sample in reversed(samples):
        if sample.t <= when and sample.committed is not None:
            return sample.lag(partition)
    return None


def progress_after(
    samples: Sequence[Sample], partition: int, t0: float, baseline_at: float | None = None
) -> float | None:
    """Return the seconds from ``t0`` until ``partition`` progresses; None if it never does.

    The baseline is the committed offset as of ``baseline_at``; without one, of the first
    sample taken after ``t0`` (what a killed replica committed before it died is in).
    """
    if baseline_at is None:
        first = next((s for s in samples if s.t >= t0 and s.committed is not None), None)
        if first is None or first.committed is None:
            return None
        base = first.committed[partition]
    else:
        found = committed_at(samples, partition, baseline_at)
        if found is None:
            return None
        base = found
    for sample in samples:
        if sample.t <= t0:
            continue
        moved = sample.committed is not None and sample.committed[partition] > base
        if moved or sample.newest[partition] > t0:
            return sample.t - t0
    return None


def recovery(
    samples: Sequence[Sample],
    partitions: Iterable[int],
    t0: float,
    baseline_at: float | None = None,
) -> dict[int, float | None]:
    """Return, for each of ``partitions`` with lag at ``t0``, the time until it progressed."""
    out: dict[int, float | None] = {}
    for p in sorted(partitions):
        lag = lag_at(samples, p, baseline_at if baseline_at is not None else t0)
        if lag is None or lag <= 0:
            continue
        out[p] = progress_after(samples, p, t0, baseline_at)
    return out


def slowest(recovered: dict[int, float | None]) -> float | None:
    """Return the time until all partitions progressed (None if one never did)."""
    values = list(recovered.values())
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def median(values: Iterable[float | None]) -> float | None:
    """Return the median of the values that are not None (None if there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def rate(times: Iterable[float], start: float, end: float) -> float:
    """Return how many of ``times`` fall in ``[start, end]``, per second."""
    if end <= start:
        return 0.0
    return sum(start <= t <= end for t in times) / (end - start)


def first_status(
    samples: Sequence[Sample], incarnation: str, after: float, status: int = 503
) -> float | None:
    """Return the seconds from ``after`` until ``incarnation``'s /healthz answered ``status``."""
    for sample in samples:
        if sample.t >= after and sample.health.get(incarnation) == status:
            return sample.t - after
    return None


def committed_to_the_end_for(samples: Sequence[Sample], seconds: float) -> bool:
    """Whether every partition's committed offset has been at its end for ``seconds``."""
    if not samples or samples[-1].t - samples[0].t < seconds:
        return False
    newest = samples[-1].t
    return all(
        x.committed is not None and x.end is not None and x.committed == x.end
        for x in samples
        if x.t >= newest - seconds
    )
