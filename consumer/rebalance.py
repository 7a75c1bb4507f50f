"""What a replica does when partitions come and go: epochs, resume metadata, last commits.

The source calls these on the event loop from its rebalance callbacks (through the
pipeline). On assignment each partition opens a new epoch and, with item-level resume,
takes what the previous owner's commit metadata says is done (:mod:`consumer.resume`).
On revoke, started work gets a grace period and what is done is committed: by the
source, with the resume metadata, or in exactly-once mode inside a last transaction
(:mod:`consumer.transactions`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException

from consumer.resume import decode, describe

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from consumer.chunks import ChunkBook
    from consumer.commits import Commit
    from consumer.committer import Committer
    from consumer.drain import Drain
    from consumer.intake import Intake
    from consumer.jobs import Jobs
    from consumer.offsets import OffsetTracker, PartitionKey
    from consumer.progress import ProgressMonitor
    from consumer.releaser import Releaser
    from consumer.settings import Settings

log = logging.getLogger(__name__)


class Rebalance:
    """The pipeline's answers to assignments, revocations and losses."""

    def __init__(  # noqa: PLR0913 - the rooms a rebalance touches, each named
        self,
        settings: Settings,
        *,
        offsets: OffsetTracker,
        book: ChunkBook,
        intake: Intake,
        monitor: ProgressMonitor,
        committer: Committer,
        drain: Drain,
        releaser: Releaser | None,
        jobs: Jobs,
        stopped: Callable[[], bool],
        forced: Callable[[], bool],
    ) -> None:
        """Wire the rooms; ``stopped``: a delivery failed, ``forced``: stopping at once."""
        self._settings = settings
        self._offsets = offsets
        self._book = book
        self._intake = intake
        self._monitor = monitor
        self._committer = committer
        self._drain = drain
        self._releaser = releaser
        self._jobs = jobs
        self._stopped = stopped
        self._forced = forced
        self.resume = settings.resume_metadata_bytes > 0 and releaser is None

    async def on_assigned(
        self, partitions: list[PartitionKey], committed: dict[PartitionKey, Commit]
    ) -> None:
        """Start bookkeeping for newly assigned partitions, each in a new epoch.

        ``committed`` holds the positions committed with resume metadata: what it says is
        done after the position is not done again. The batches of the requests partitions
        are restored from the status topic first.
        """
        requests = self._settings.requests_topic
        await self._jobs.assign([p for t, p in partitions if t == requests])
        self._offsets.assign(partitions)
        self._book.assign(partitions)
        self._monitor.assign(partitions, time.monotonic())
        if self.resume:
            for tp, (position, text) in committed.items():
                resume = decode(position, text)
                if resume:
                    self._intake.resuming[tp] = resume
                    log.info("resuming after a previous owner", extra={"partition": tp[1]})

    def commit_metadata(self, tp: PartitionKey) -> Commit | None:
        """Return the position a commit of ``tp`` names now, and what is done after it.

        What is done: offsets whose records are all acknowledged behind a pending one, the
        acknowledged items of chunks in flight, and what a previous owner's metadata said
        of offsets not received yet.
        """
        offsets = self._offsets.partition(*tp)
        position = None if offsets is None else offsets.base()
        if offsets is None or position is None:
            return None
        book = self._book
        partial = {
            c.offset: p
            for c in book.in_flight(tp)
            if (p := c.progress) is not None and book.current(tp, c.epoch)
        }
        text = describe(
            position,
            done_behind=offsets.done_behind,
            partial=partial,
            previous=self._intake.resuming.get(tp),
            last_received=offsets.last,
            limit=self._settings.resume_metadata_bytes,
        )
        return position, text

    async def on_revoked(self, partitions: list[PartitionKey]) -> dict[PartitionKey, Commit]:
        """Let started work of ``partitions`` finish briefly; return what to commit.

        Chunks with nothing published yet are handed back at once; the others get
        ``revoke_grace_s`` capped at a quarter of ``max.poll.interval.ms`` (the group's
        rebalance timeout), and while draining at the drain's time left. In exactly-once
        mode what was not released is dropped (never produced) and the rest committed
        here, in the transaction: the source has nothing to commit.
        """
        forced = self._forced()
        grace = 0.0 if forced else self._settings.effective_revoke_grace_s
        if self._drain.started:
            grace = min(grace, self._drain.time_left())
        self._book.hand_back_untouched(partitions)
        self._intake.withdraw_abandoned()
        if grace > 0:
            await self._book.wait_idle(partitions, grace)
        commits: dict[PartitionKey, Commit] = {}
        if self._releaser is not None:
            self._releaser.drop(partitions)
            if not forced and not self._stopped():
                await self._committer.commit_now()
        elif self.resume:
            for tp in partitions:
                found = self.commit_metadata(tp)
                if found is not None and found[1]:
                    commits[tp] = found
        for tp, position in self._offsets.revoke(partitions).items():
            if self._releaser is None:
                commits.setdefault(tp, (position, ""))
        self.drop(partitions)
        await self._jobs.revoke([p for _, p in partitions])
        return {} if forced or self._stopped() else commits

    async def on_lost(self, partitions: list[PartitionKey]) -> None:
        """Forget lost partitions: their work is redone by whoever owns them now."""
        self._offsets.revoke(partitions)
        self.drop(partitions)
        await self._jobs.revoke([p for _, p in partitions])

    async def rewind(
        self,
        partitions: list[PartitionKey],
        seek: Callable[[list[PartitionKey]], Awaitable[None]],
    ) -> bool:
        """Drop the partitions' work and fetch them again from their commits (new epochs).

        Returns ``False`` when the committed offsets could not be read (the broker away):
        the partitions stay without work (what is fetched meanwhile is left) until the
        next attempt.
        """
        self.drop(partitions)  # chunks abandoned, unreleased records dropped
        self._offsets.revoke(partitions)
        try:
            await seek(partitions)
        except KafkaException as exc:
            log.warning("cannot rewind yet: will retry", extra={"error": str(exc)})
            return False
        self._offsets.assign(partitions)
        self._book.assign(partitions)  # a new epoch: work of the old one is stale
        self._monitor.assign(partitions, time.monotonic())
        log.info("rewound to the committed offsets", extra={"partitions": len(partitions)})
        return True

    def drop(self, partitions: list[PartitionKey]) -> None:
        """Forget the partitions' chunks, resume metadata and unreleased records."""
        for tp in partitions:
            self._intake.resuming.pop(tp, None)
        if self._releaser is not None:
            self._releaser.drop(partitions)
        self._monitor.forget(partitions)
        self._book.drop(partitions)
        self._intake.withdraw_abandoned()
