"""Which committer a replica runs: offsets with resume metadata, or inside transactions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consumer.committer import Committer
from consumer.transactions import TransactionalCommitter

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.chunks import ChunkBook
    from consumer.commits import Commit
    from consumer.connectivity import ClusterWatch
    from consumer.metrics import Metrics
    from consumer.offsets import OffsetTracker, PartitionKey
    from consumer.publisher import Publisher
    from consumer.releaser import Releaser
    from consumer.settings import Settings
    from consumer.source import Source

Transactional = tuple[
    "Publisher", "Releaser", "Callable[[BaseException], None]", "ClusterWatch", "ChunkBook"
]
"""Exactly-once mode: the transactional publisher, its releaser, what stops the replica,
the cluster's outages (an abort after one renews the producer), the buffer (idle or not)."""


def build_committer(  # noqa: PLR0913 - the collaborators, each named
    settings: Settings,
    source: Source,
    offsets: OffsetTracker,
    metrics: Metrics,
    *,
    on_committed: Callable[[dict[PartitionKey, int]], None],
    metadata_of: Callable[[PartitionKey], Commit | None],
    transactional: Transactional | None,
) -> Committer:
    """Return the replica's committer: rounds every commit (or transaction) interval."""
    timing: dict[str, Any] = {
        "interval_s": settings.transaction_interval_s
        if transactional is not None
        else settings.commit_interval_s,
        "timeout_s": settings.commit_timeout_s,
        "on_committed": on_committed,
    }
    if transactional is None:
        return Committer(source, offsets, metrics, **timing, metadata_of=metadata_of)
    publisher, releaser, failed, cluster, book = transactional
    return TransactionalCommitter(
        publisher,
        releaser,
        source.group_metadata,
        failed,
        stuck_s=settings.transaction_timeout_s,
        outages=lambda: cluster.outages,
        idle=(settings.commit_interval_s, lambda: book.buffered_items == 0),
        fence_topics=(settings.results_topic, settings.dlq_topic),
        target=source,
        offsets=offsets,
        metrics=metrics,
        **timing,
    )
