"""Metrics counted on the event loop only: no lock per update, the samples built at a scrape.

The work units update these thousands of times a second; ``prometheus_client``'s own
types take a lock on every update (they may be shared between threads). These are only
ever touched on the replica's event loop, and read the same at a scrape: the same
names, labels and values (without the ``_created`` samples).
"""

from __future__ import annotations

import bisect
import collections
import functools
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from prometheus_client import CollectorRegistry


class LoopCounterChild:
    """One label value's count of a :class:`LoopCounter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        """Start at zero."""
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (not negative: a counter only grows)."""
        if amount < 0:
            raise ValueError("a counter only grows")
        self.value += amount


class LoopCounter:
    """A counter with one label, updated on the event loop only (see the module's doc)."""

    def __init__(
        self, name: str, documentation: str, label: str, *, registry: CollectorRegistry
    ) -> None:
        """Register counter ``name`` (``_total`` added if missing) with one ``label``."""
        self._name = name.removesuffix("_total")
        self._documentation = documentation
        self._label = label
        self._children: dict[str, LoopCounterChild] = {}
        registry.register(self)

    def labels(self, value: str) -> LoopCounterChild:
        """Return the count of label ``value`` (created at zero on first use)."""
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = LoopCounterChild()
        return child

    def describe(self) -> list[CounterMetricFamily]:
        """Return the metric's family, without samples (for the registry's name check)."""
        return [CounterMetricFamily(self._name, self._documentation, labels=[self._label])]

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Yield the counter's value per label value."""
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, child in list(self._children.items()):
            family.add_metric([value], child.value)
        yield family


class LoopHistogram:
    """A histogram observed on the event loop only: an observation is a list append.

    It reads like ``prometheus_client.Histogram`` at a scrape (the same samples, built
    then) but costs a fraction per observation: the work units observe three of them
    each, thousands of times a second. :attr:`observe` only keeps the value (a list's
    ``append``: no Python call); :meth:`fold` counts the kept values into the buckets in
    C (``map`` of ``bisect`` into a ``Counter``), at a scrape and whenever the pipeline's
    periodic check calls ``Metrics.fold`` (once a second: a second's values are kept).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        """Register histogram ``name`` (without ``_bucket``/``_sum``/``_count``) in ``registry``."""
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        self._kept: list[float] = []
        self.observe: Callable[[float], None] = self._kept.append
        """Count one observation of an amount (kept until the next :meth:`fold`)."""
        registry.register(self)

    @property
    def kept(self) -> int:
        """How many observations wait for the next :meth:`fold`."""
        return len(self._kept)

    def fold(self) -> None:
        """Count the values kept since the last fold into the buckets and the sum."""
        kept = self._kept
        if not kept:
            return
        counts = self._counts
        for bucket, count in collections.Counter(
            map(functools.partial(bisect.bisect_left, self._bounds), kept)
        ).items():
            counts[bucket] += count
        self._sum = sum(kept, self._sum)  # added in order, as one at a time
        kept.clear()

    def describe(self) -> list[HistogramMetricFamily]:
        """Return the metric's family, without samples (for the registry's name check)."""
        return [HistogramMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """Yield the histogram's cumulative buckets, sum and count."""
        self.fold()
        family = HistogramMetricFamily(self._name, self._documentation)
        buckets, total = [], 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        family.add_metric([], buckets, self._sum)
        yield family
