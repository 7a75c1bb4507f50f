"""The committer: commits each partition's contiguous done prefix, on an interval.

Each round, in order:

1. ask the offset tracker what is done and contiguous since the last commit (never past
   an unfinished message), for the partitions still assigned, and with item-level resume
   what is done after it (a partition whose position did not move is committed again at
   the same position when that changed);
2. commit it, waiting a bounded time for the broker's answer (the consumer thread keeps
   polling meanwhile); on failure the positions stay uncommitted for the next round;
3. record what the broker took, so that it is not committed again.

The pipeline also calls :meth:`Committer.commit_now` once more at the end of a drain; on
revoke, :class:`~consumer.source.Source` commits what the pipeline hands it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from consumer.commits import CommitResult

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from consumer.commits import Commit
    from consumer.metrics import Metrics
    from consumer.offsets import OffsetTracker, PartitionKey

log = logging.getLogger(__name__)


class CommitTarget(Protocol):
    """What the committer commits through (the source, or a fake one in tests)."""

    @property
    def assignment(self) -> set[PartitionKey]:
        """The partitions assigned now."""
        ...

    async def commit(
        self,
        positions: Mapping[PartitionKey, int],
        timeout_s: float,
        metadata: Mapping[PartitionKey, str] | None = None,
    ) -> CommitResult:
        """Commit ``positions`` with ``metadata``; return what the broker took, and the error."""
        ...


class Committer:
    """Commits the done prefix of every assigned partition."""

    def __init__(  # noqa: PLR0913 - the collaborators and the two timings, each named
        self,
        target: CommitTarget,
        offsets: OffsetTracker,
        metrics: Metrics,
        *,
        interval_s: float,
        timeout_s: float,
        on_committed: Callable[[dict[PartitionKey, int]], None],
        metadata_of: Callable[[PartitionKey], Commit | None] | None = None,
    ) -> None:
        """Commit every ``interval_s``; wait ``timeout_s`` at most for each answer.

        ``on_committed`` receives the positions the broker took (progress, liveness);
        ``metadata_of`` gives a partition's position and resume metadata (none: no resume).
        """
        self._target = target
        self._offsets = offsets
        self._metrics = metrics
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_committed = on_committed
        self._metadata_of = metadata_of
        self._sent: dict[PartitionKey, Commit] = {}  # last commit the broker took

    async def run(self) -> None:
        """Commit on the interval until cancelled.

        A round that raises is logged and counted, and the next round tries again: a
        committer task that died would leave the replica working with nothing committed.
        """
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.commit_now()
            except Exception:
                self._metrics.commit_round_errors.inc()
                log.exception("commit round failed; the next round retries")

    async def commit_now(self, timeout_s: float | None = None) -> CommitResult:
        """Run one commit round (the steps in the module docstring); return its result."""
        # 1. what is done and contiguous since the last commit, for assigned partitions
        published = self._metrics.published
        assigned = self._target.assignment
        positions = {tp: o for tp, o in self._offsets.commit_positions().items() if tp in assigned}
        metadata = self._metadata(assigned, positions)
        if not positions:
            return CommitResult()
        # 2. commit, waiting a bounded time for the answer
        result = await self._target.commit(positions, timeout_s or self._timeout_s, metadata)
        if result.error is not None:
            level = logging.INFO if result.retriable else logging.WARNING
            log.log(level, "commit failed; will retry", extra={"error": result.error.str()})
        if not result.committed:
            return result
        # 3. remember what the broker took, so it is not committed again
        self._offsets.mark_committed(result.committed)
        self._metrics.published_committed = max(self._metrics.published_committed, published)
        for tp, position in result.committed.items():
            self._sent[tp] = (position, metadata.get(tp, ""))
        self._metrics.commits.inc()
        for (topic, partition), position in result.committed.items():
            self._metrics.committed_offset.labels(topic, str(partition)).set(position)
        self._on_committed(result.committed)
        return result

    def _metadata(
        self, assigned: set[PartitionKey], positions: dict[PartitionKey, int]
    ) -> dict[PartitionKey, str]:
        """Return each partition's resume metadata; add partitions where only that changed."""
        metadata: dict[PartitionKey, str] = {}
        if self._metadata_of is None:
            return metadata
        for tp in list(self._sent):
            if tp not in assigned:
                del self._sent[tp]
        for tp in assigned:
            found = self._metadata_of(tp)
            if found is None:
                continue
            position, text = found
            if tp in positions:
                metadata[tp] = text
            elif found != self._sent.get(tp, (position, "")):
                positions[tp] = position
                metadata[tp] = text
        return metadata
