"""The periodic committer outlives a round that raises: the next round commits."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from consumer.commits import CommitResult
from consumer.committer import Committer
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker, PartitionKey

if TYPE_CHECKING:
    from collections.abc import Mapping

TP: PartitionKey = ("batch-requests", 0)


class FlakyTarget:
    """A commit target whose first ``failures`` commits raise, and which takes the rest."""

    def __init__(self, failures: int) -> None:
        """Raise on the first ``failures`` commits."""
        self.failures = failures
        self.calls = 0
        self.taken: list[dict[PartitionKey, int]] = []
        self.committed = asyncio.Event()

    @property
    def assignment(self) -> set[PartitionKey]:
        """The one partition."""
        return {TP}

    async def commit(
        self,
        positions: Mapping[PartitionKey, int],
        timeout_s: float,  # noqa: ARG002 - the target's signature
        metadata: Mapping[PartitionKey, str] | None = None,  # noqa: ARG002 - the same
    ) -> CommitResult:
        """Raise, or take every position."""
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"commit {self.calls} broke")
        self.taken.append(dict(positions))
        self.committed.set()
        return CommitResult(committed=dict(positions))


async def test_a_round_that_raises_is_counted_and_the_next_round_commits() -> None:
    """Two rounds raise; the committer keeps going and the third round commits."""
    offsets = OffsetTracker()
    offsets.assign([TP])
    for offset in (0, 1, 2):
        offsets.add(*TP, offset)
        offsets.done(*TP, offset)
    metrics = Metrics()
    target = FlakyTarget(failures=2)
    seen: list[dict[PartitionKey, int]] = []
    committer = Committer(
        target, offsets, metrics, interval_s=0.01, timeout_s=1.0, on_committed=seen.append
    )
    task = asyncio.create_task(committer.run())
    try:
        await asyncio.wait_for(target.committed.wait(), timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert target.calls == 3
    assert target.taken == [{TP: 3}]
    assert seen == [{TP: 3}]
    errors = metrics.registry.get_sample_value("batch_runner_commit_round_errors_total")
    assert errors == 2
