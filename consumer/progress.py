"""Per-partition progress: which assigned partitions have work but have stopped moving.

Pure logic: no Kafka, no I/O, and the clock is passed in (:class:`StallWatch` only adds
a log line when a stall starts or ends). The pipeline reports
movement (a message fetched, a work unit answered, a commit that advanced) with
:meth:`ProgressMonitor.moved`, and asks :meth:`ProgressMonitor.check` every second or so
which partitions are stalled and why. A partition with work (messages not yet fetched,
or chunks in flight) that has not moved for ``stall_timeout_s`` is stalled. Some stalls
have a reason the replica cannot fix by restarting (the buffer is full of other
partitions' work that is moving, the model server is failing): those are reported but
are not a health failure. A stall without such a reason is. An open circuit (the model
server is down or refusing everything, so fetching is paused) is such a reason too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from consumer.offsets import PartitionKey

log = logging.getLogger(__name__)


class Why(StrEnum):
    """Why a partition is not moving."""

    BACKPRESSURE = "paused for backpressure (the buffer is full of work that is moving)"
    CIRCUIT_OPEN = "the circuit to the model server is open (it is down or refusing work)"
    MODEL_FAILING = "the model server is failing (no successful answer in the stall window)"
    UNEXPLAINED = "no progress and nothing explains it"


@dataclass(frozen=True, slots=True)
class Stall:
    """One stalled partition: for how long, and why."""

    seconds: float
    why: Why

    @property
    def unhealthy(self) -> bool:
        """Whether this stall fails the health check (a restart may fix it)."""
        return self.why is Why.UNEXPLAINED


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """What the pipeline knows about the replica when it asks for stalls.

    ``retrying``: the partitions with work units waiting out a retry's backoff.
    """

    buffer_full: bool
    model_failing: bool
    circuit_open: bool = False
    retrying: frozenset[PartitionKey] = frozenset()


class ProgressMonitor:
    """When each assigned partition last moved, and which ones are stalled."""

    def __init__(self, stall_timeout_s: float) -> None:
        """Track no partition yet; ``stall_timeout_s`` is how long a stall must last."""
        if stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be > 0")
        self.stall_timeout_s = stall_timeout_s
        self._last_moved: dict[PartitionKey, float] = {}
        # When each idle partition last had a reason not to move (the model, the buffer).
        self._explained: dict[PartitionKey, float] = {}
        self._replica_moved: float | None = None

    def assign(self, tps: Iterable[PartitionKey], now: float) -> None:
        """Start watching ``tps``: each counts as having just moved."""
        for tp in tps:
            self._last_moved[tp] = now

    def forget(self, tps: Iterable[PartitionKey]) -> None:
        """Stop watching ``tps`` (revoked or lost)."""
        for tp in tps:
            self._last_moved.pop(tp, None)
            self._explained.pop(tp, None)

    def moved(self, tp: PartitionKey, now: float) -> None:
        """Record that ``tp`` made progress at ``now`` (ignored if it is not watched)."""
        if tp in self._last_moved:
            self._last_moved[tp] = now
            self._replica_moved = now

    @property
    def watched(self) -> frozenset[PartitionKey]:
        """The partitions being watched."""
        return frozenset(self._last_moved)

    def idle_for(self, tp: PartitionKey, now: float) -> float | None:
        """Seconds since ``tp`` last moved, or ``None`` if it is not watched."""
        last = self._last_moved.get(tp)
        return None if last is None else now - last

    def check(
        self,
        now: float,
        has_work: Callable[[PartitionKey], bool],
        replica: ReplicaState,
    ) -> dict[PartitionKey, Stall]:
        """Return the stalled partitions with how long and why.

        A partition without work counts as moving. A full buffer explains a stall only
        while the replica as a whole moves (its buffer is full of work that is being
        done); an open circuit or a failing model explains any stall, and so do units of
        the partition that wait out a retry's backoff (the model failed them; they are not
        stuck). A stall is unexplained once the partition has gone ``stall_timeout_s``
        without moving and without a reason: the clock restarts when a reason ends.
        """
        stalls: dict[PartitionKey, Stall] = {}
        replica_moving = (
            self._replica_moved is not None and now - self._replica_moved < self.stall_timeout_s
        )
        for tp, last in self._last_moved.items():
            if not has_work(tp):
                self._last_moved[tp] = now  # nothing to do counts as keeping up
                self._explained.pop(tp, None)
                continue
            idle = now - last
            why = self._reason(tp, replica, replica_moving=replica_moving)
            if why is not None:
                self._explained[tp] = now
            elif now - max(last, self._explained.get(tp, last)) >= self.stall_timeout_s:
                # The time a reason held does not count: after a model outage a partition
                # has the whole timeout to move again.
                why = Why.UNEXPLAINED
            if why is not None and idle >= self.stall_timeout_s:
                stalls[tp] = Stall(idle, why)
        return stalls

    @staticmethod
    def _reason(tp: PartitionKey, replica: ReplicaState, *, replica_moving: bool) -> Why | None:
        """Return why ``tp`` may be idle now, or None when nothing explains it."""
        if replica.circuit_open:
            return Why.CIRCUIT_OPEN
        if replica.model_failing or tp in replica.retrying:
            return Why.MODEL_FAILING
        if replica.buffer_full and replica_moving:
            return Why.BACKPRESSURE
        return None


class StallWatch:
    """Checks a :class:`ProgressMonitor` and logs each stall when it starts and ends."""

    def __init__(self, monitor: ProgressMonitor) -> None:
        """Watch ``monitor``; nothing is stalled yet."""
        self.monitor = monitor
        self.stalls: dict[PartitionKey, Stall] = {}

    def check(
        self,
        now: float,
        has_work: Callable[[PartitionKey], bool],
        replica: ReplicaState,
        details: Callable[[PartitionKey], dict[str, object]],
    ) -> dict[PartitionKey, Stall]:
        """Update :attr:`stalls`; log new stalls (with ``details(tp)``) and ended ones."""
        stalls = self.monitor.check(now, has_work, replica)
        for tp, stall in stalls.items():
            known = self.stalls.get(tp)
            if known is None or known.why is not stall.why:
                log.warning(
                    "partition stalled",
                    extra={
                        "partition": f"{tp[0]}[{tp[1]}]",
                        "seconds": round(stall.seconds, 1),
                        "why": str(stall.why),
                        **details(tp),
                    },
                )
        for tp in self.stalls.keys() - stalls.keys():
            log.info("partition moving again", extra={"partition": f"{tp[0]}[{tp[1]}]"})
        self.stalls = stalls
        return stalls
