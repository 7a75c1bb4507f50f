"""The Kafka consumer: fetch, pause/resume, commit and rebalance callbacks, off the loop.

librdkafka's calls run on one dedicated daemon thread, so the event loop never blocks and
every consumer call is serialised, as the client needs. No call on that thread waits
without a bound: fetches poll for at most ``poll_timeout_s``, commits are asynchronous
(their answers come back through ``on_commit`` while the thread keeps polling, and the
caller waits for them with a timeout), and a rebalance callback waits for the loop's
decision for at most ``callback_timeout_s``, well inside ``max.poll.interval.ms``.

Rebalance callbacks fire on that thread inside ``poll``; they hand the event to the loop
with ``run_coroutine_threadsafe`` and wait for its answer, which lets the pipeline decide
what is done before a revoked partition is given up, and commit it right there.

Assignment starts from a known state: librdkafka keeps a partition's pause flag across
revoke and assign, so every newly assigned partition is resumed before it is fetched
(a partition paused for backpressure, revoked and given back would otherwise never be
fetched again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from consumer.commits import (
    COMMITTED_TIMEOUT_S,
    Commit,
    CommitResult,
    PendingCommits,
    committed_metadata,
    timed_out,
    topic_partition,
)
from consumer.kafka_thread import ConsumerThread

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from confluent_kafka import Message

    from consumer.offsets import PartitionKey

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a resume may wait for the metadata request that wakes the fetcher.
WAKE_TIMEOUT_S = 0.25


class RebalanceListener(Protocol):
    """What the pipeline does when partitions come and go (all run on the loop)."""

    async def on_assigned(
        self, partitions: list[PartitionKey], committed: dict[PartitionKey, tuple[int, str]]
    ) -> None:
        """Partitions were assigned (incrementally); ``committed``: their position, metadata."""

    async def on_revoked(self, partitions: list[PartitionKey]) -> dict[PartitionKey, Commit]:
        """Partitions are about to be revoked: return the positions to commit for them."""

    async def on_lost(self, partitions: list[PartitionKey]) -> None:
        """Partitions were lost (no commit possible): forget their state."""


class Source:
    """Owns the ``confluent_kafka.Consumer`` and the thread all its calls run on."""

    def __init__(
        self,
        config: Mapping[str, object],
        topic: str,
        listener: RebalanceListener,
        *,
        callback_timeout_s: float = 60.0,
        reachable: Callable[[], bool] = lambda: True,
    ) -> None:
        """Create the consumer (not yet subscribed).

        ``callback_timeout_s`` bounds how long a rebalance callback waits for the loop;
        ``reachable`` says whether the cluster answers (no commit on revoke when not).
        """
        self._reachable = reachable
        self._consumer = Consumer({**config, "on_commit": self._commit_cb})
        self._topic = topic
        self._listener = listener
        self._callback_timeout_s = callback_timeout_s
        self._thread = ConsumerThread("kafka-consumer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = PendingCommits()
        self.commit_on_revoke = True
        self.transactional = False  # exactly-once: a revoke reads the group metadata first
        self._revoking: object | None = None
        self.joined = False
        self.paused: set[PartitionKey] = set()
        self.holding: frozenset[PartitionKey] = frozenset()  # not fetched, not paused (room)
        self.assignment: set[PartitionKey] = set()
        self._revokes: dict[PartitionKey, int] = {}  # revokes and losses so far, per partition

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._thread.submit(fn))

    async def subscribe(self) -> None:
        """Join the group (the assignment arrives through the callbacks during fetches)."""
        self._loop = asyncio.get_running_loop()
        await self._call(
            lambda: self._consumer.subscribe(
                [self._topic],
                on_assign=self._assign_cb,
                on_revoke=self._revoke_cb,
                on_lost=self._lost_cb,
            ),
        )

    async def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Wait up to ``timeout_s`` for a message, then take what else is ready (up to max).

        Also serves rebalance callbacks and commit answers: a replica must keep calling
        this (with paused partitions, when it wants no messages) to stay in its group.
        """
        return await self._call(lambda: self._fetch_blocking(max_messages, timeout_s))

    def _fetch_blocking(self, max_messages: int, timeout_s: float) -> list[Message]:
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        rest = (
            self._consumer.consume(num_messages=max_messages - 1, timeout=0)
            if max_messages > 1
            else []
        )
        return [first, *rest]

    async def poll_paused(self, timeout_s: float) -> None:
        """Pause every assigned partition and poll once (rebalances, commit answers).

        For a replica that wants no more messages but must stay in its group. A message
        fetched before the pause took effect is dropped untracked: its offset is never
        committed, so the group delivers it again.
        """
        await self.pause(sorted(self.assignment))
        await self.fetch(1, timeout_s)

    async def commit(
        self,
        positions: Mapping[PartitionKey, int],
        timeout_s: float,
        metadata: Mapping[PartitionKey, str] | None = None,
    ) -> CommitResult:
        """Commit ``positions`` (with ``metadata``); wait up to ``timeout_s`` for the answer.

        The commit is asynchronous on the consumer thread, which keeps polling (and so
        serving rebalances) meanwhile. A timeout is a retriable failure.
        """
        if not positions:
            return CommitResult()
        key = frozenset((t, p, o) for (t, p), o in positions.items())
        future = self._pending.waiting(key)
        if future is None:
            future = self._pending.add(key)
            texts = metadata or {}
            offsets = [topic_partition(t, p, o, texts.get((t, p), "")) for t, p, o in key]
            revokes = {tp: self._revokes.get(tp, 0) for tp in positions}
            try:
                sent = await self._call(lambda: self._commit_unless_revoked(offsets, revokes))
            except KafkaException as exc:
                self._pending.settle(key, CommitResult(error=exc.args[0]))
                return CommitResult(error=exc.args[0])
            if not sent:
                self._pending.settle(key, CommitResult())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return timed_out(timeout_s)

    def _commit_unless_revoked(
        self, offsets: list[TopicPartition], revokes: Mapping[PartitionKey, int]
    ) -> bool:
        """Send the commit unless a partition of it was revoked since it was asked for.

        It waited behind a poll that may have committed a later position on revoke.
        """
        if any(self._revokes.get(tp, 0) != n for tp, n in revokes.items()):
            return False
        self._consumer.commit(offsets=offsets, asynchronous=True)
        return True

    def _commit_cb(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Take a commit's answer (on the consumer thread) to the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._pending.answered, err, partitions)

    async def group_metadata(self) -> object:
        """Return the group's metadata for a transactional offset commit.

        Read on the consumer thread (the client takes no calls from two threads at once);
        inside a revoke callback, the one read there, before the loop was asked.
        """
        if self._revoking is not None:
            return self._revoking
        return await self._call(self._consumer.consumer_group_metadata)

    async def rewind(self, partitions: list[PartitionKey]) -> None:
        """Fetch ``partitions`` again from their committed offsets (the earliest if none)."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        await self._call(lambda: self._seek_committed(tps))

    def _seek_committed(self, partitions: list[TopicPartition]) -> None:
        for tp in self._consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    async def pause(self, partitions: list[PartitionKey]) -> None:
        """Stop fetching from ``partitions`` (the group membership stays alive)."""
        todo = [tp for tp in partitions if tp not in self.paused and tp in self.assignment]
        if todo:
            await self._call(lambda: self._consumer.pause([TopicPartition(t, p) for t, p in todo]))
            self.paused.update(todo)

    async def resume(self, partitions: list[PartitionKey]) -> None:
        """Fetch from ``partitions`` again, at once."""
        todo = [tp for tp in partitions if tp in self.paused and tp in self.assignment]
        if todo:
            await self._call(lambda: self._resume_blocking([TopicPartition(t, p) for t, p in todo]))
        self.paused.difference_update(partitions)

    def _resume_blocking(self, partitions: list[TopicPartition]) -> None:
        self._consumer.resume(partitions)
        # librdkafka restarts fetching for resumed partitions only when the broker thread
        # next wakes, up to a second later (bench/results/README.md: ~950 ms, whatever
        # fetch.wait.max.ms and the backoff settings). A metadata request wakes it now;
        # its answer is not needed, so the wait for it is short.
        try:
            self._consumer.list_topics(self._topic, timeout=WAKE_TIMEOUT_S)
        except KafkaException:
            log.debug("no metadata answer after a resume (the fetch starts on its own)")

    async def close(self, timeout_s: float) -> bool:
        """Leave the group (revoking, and so committing, what is done); free the thread.

        Returns whether the consumer closed within ``timeout_s``; if not, the thread is
        left behind (a daemon) and the group notices the member's absence by itself.
        """
        try:
            await asyncio.wait_for(self._call(self._consumer.close), timeout_s)
        except TimeoutError:
            log.warning(
                "leaving the group took too long; exiting without waiting for it",
                extra={"timeout_s": timeout_s},
            )
            return False
        finally:
            self._thread.shutdown(wait=False)
        return True

    # --- rebalance callbacks: run on the consumer thread, inside poll()/consume()/close() ---

    def _on_loop(self, make: Callable[[], Awaitable[T]], timeout_s: float) -> T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("subscribe() was not called")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout_s)

    def _assign_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        if partitions:
            # A partition paused before it was revoked keeps librdkafka's pause flag: clear
            # it, so that what is assigned is fetched unless the pipeline pauses it again.
            consumer.resume(partitions)
        self.joined = True
        self.assignment.update(tps)
        self.paused.difference_update(tps)
        log.info("partitions assigned", extra={"partitions": _fmt(tps)})
        committed = committed_metadata(consumer, partitions)
        self._on_loop(lambda: self._listener.on_assigned(tps, committed), self._callback_timeout_s)

    def _revoke_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        started = time.monotonic()
        if self.transactional:
            self._revoking = consumer.consumer_group_metadata()
        try:
            positions = self._on_loop(
                lambda: self._listener.on_revoked(tps),
                self._callback_timeout_s,
            )
        except TimeoutError:
            log.warning("the pipeline did not answer a revoke in time: nothing committed for it")
            positions = {}
        finally:
            self._revoking = None
        if positions and self.commit_on_revoke:
            self._commit_on_revoke(consumer, positions)
        self._forget(tps)
        log.info(
            "partitions revoked",
            extra={"partitions": _fmt(tps), "took_s": round(time.monotonic() - started, 3)},
        )

    def _commit_on_revoke(self, consumer: Consumer, positions: dict[PartitionKey, Commit]) -> None:
        """Commit what is done of revoked partitions, synchronously, inside the callback.

        Inside the callback the member's generation is still the current one: a commit
        sent after it returns races the rejoin (or, on close, the LeaveGroup) and is
        refused, and the new owner repeats what was done. With the cluster away a
        synchronous commit could block the thread for long: then nothing is committed
        (the new owner redoes the work; nothing is lost).
        """
        extra = {"positions": _fmt_positions({tp: o for tp, (o, _) in positions.items()})}
        if not self._reachable():
            log.warning("the cluster is unreachable: not committing before revoke", extra=extra)
            return
        offsets = [topic_partition(t, p, o, text) for (t, p), (o, text) in positions.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit before revoke failed", extra={**extra, "error": str(exc)})
        else:
            log.info("committed before revoke", extra=extra)

    def _lost_cb(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        log.warning("partitions lost", extra={"partitions": _fmt(tps)})
        try:
            self._on_loop(lambda: self._listener.on_lost(tps), self._callback_timeout_s)
        finally:
            self._forget(tps)

    def _forget(self, tps: list[PartitionKey]) -> None:
        for tp in tps:
            self._revokes[tp] = self._revokes.get(tp, 0) + 1
        self.assignment.difference_update(tps)
        self.paused.difference_update(tps)


def _fmt(tps: list[PartitionKey]) -> list[str]:
    return [f"{t}[{p}]" for t, p in sorted(tps)]


def _fmt_positions(positions: Mapping[PartitionKey, int]) -> dict[str, int]:
    return {f"{t}[{p}]": o for (t, p), o in sorted(positions.items())}
