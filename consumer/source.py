"""The Kafka consumer: fetch, pause/resume, commit and rebalance callbacks, off the loop.

librdkafka's blocking calls run on one dedicated thread (a single-worker executor), so
the event loop never blocks and every consumer call is serialised, as the client needs.
Rebalance callbacks fire on that thread inside ``consume``; they hand the event to the
loop with ``run_coroutine_threadsafe`` and wait for its answer, which lets the pipeline
decide what is done before a revoked partition is given up, and commit it right there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from confluent_kafka import Message

log = logging.getLogger(__name__)

TP = tuple[str, int]
T = TypeVar("T")


class RebalanceListener(Protocol):
    """What the pipeline does when partitions come and go (all run on the loop)."""

    async def on_assigned(self, partitions: list[TP]) -> None:
        """Partitions were assigned (incrementally)."""

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, int]:
        """Partitions are about to be revoked: return the positions to commit for them."""

    async def on_lost(self, partitions: list[TP]) -> None:
        """Partitions were lost (no commit possible): forget their state."""


class Source:
    """Owns the ``confluent_kafka.Consumer`` and the thread all its calls run on."""

    def __init__(self, config: dict[str, object], topic: str, listener: RebalanceListener) -> None:
        """Create the consumer (not yet subscribed)."""
        self._consumer = Consumer(config)
        self._topic = topic
        self._listener = listener
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="kafka-consumer",
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commit_on_revoke = True
        self.joined = False
        self.paused: set[TP] = set()
        self.assignment: set[TP] = set()

    async def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def subscribe(self) -> None:
        """Join the group (the assignment arrives through the callbacks during fetches)."""
        self._loop = asyncio.get_running_loop()
        await self._call(
            self._consumer.subscribe,
            [self._topic],
            on_assign=self._assign_cb,
            on_revoke=self._revoke_cb,
            on_lost=self._lost_cb,
        )

    async def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Wait up to ``timeout_s`` for a message, then take what else is ready (up to max)."""
        return await self._call(self._fetch_blocking, max_messages, timeout_s)

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

    async def commit(self, positions: dict[TP, int]) -> None:
        """Commit ``positions`` synchronously (raises ``KafkaException`` on failure)."""
        if positions:
            await self._call(self._commit_blocking, positions)

    def _commit_blocking(self, positions: dict[TP, int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        self._consumer.commit(offsets=offsets, asynchronous=False)

    async def pause(self, partitions: list[TP]) -> None:
        """Stop fetching from ``partitions`` (the group membership stays alive)."""
        todo = [tp for tp in partitions if tp not in self.paused and tp in self.assignment]
        if todo:
            await self._call(self._consumer.pause, [TopicPartition(t, p) for t, p in todo])
            self.paused.update(todo)

    async def resume(self, partitions: list[TP]) -> None:
        """Fetch from ``partitions`` again, at once."""
        todo = [tp for tp in partitions if tp in self.paused and tp in self.assignment]
        if todo:
            await self._call(self._resume_blocking, [TopicPartition(t, p) for t, p in todo])
        self.paused.difference_update(partitions)

    def _resume_blocking(self, partitions: list[TopicPartition]) -> None:
        self._consumer.resume(partitions)
        # librdkafka restarts fetching for resumed partitions only when the broker thread
        # next wakes, up to a second later (measured: ~950 ms after every resume, whatever
        # fetch.wait.max.ms and the backoff settings). A metadata request wakes it now.
        with contextlib.suppress(KafkaException):
            self._consumer.list_topics(self._topic, timeout=5)

    async def close(self) -> None:
        """Leave the group (revoking, and so committing, what is done) and free the thread."""
        try:
            await self._call(self._consumer.close)
        finally:
            self._executor.shutdown(wait=True)

    # --- rebalance callbacks: run on the consumer thread, inside poll()/consume()/close() ---

    def _on_loop(self, make: Callable[[], Awaitable[T]]) -> T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("subscribe() was not called")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    def _assign_cb(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        self.joined = True
        self.assignment.update(tps)
        log.info("partitions assigned", extra={"partitions": _fmt(tps)})
        self._on_loop(lambda: self._listener.on_assigned(tps))

    def _revoke_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        positions = self._on_loop(lambda: self._listener.on_revoked(tps))
        if positions and self.commit_on_revoke:
            try:
                self._commit_blocking(positions)
                log.info(
                    "committed before revoke",
                    extra={"positions": {f"{t}[{p}]": o for (t, p), o in positions.items()}},
                )
            except KafkaException as exc:
                log.warning("commit on revoke failed", extra={"error": str(exc)})
        self.assignment.difference_update(tps)
        self.paused.difference_update(tps)
        log.info("partitions revoked", extra={"partitions": _fmt(tps)})
        del consumer

    def _lost_cb(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        log.warning("partitions lost", extra={"partitions": _fmt(tps)})
        self._on_loop(lambda: self._listener.on_lost(tps))
        self.assignment.difference_update(tps)
        self.paused.difference_update(tps)


def _fmt(tps: list[TP]) -> list[str]:
    return [f"{t}[{p}]" for t, p in sorted(tps)]


def message_error(msg: Message) -> KafkaError | None:
    """Return the message's error unless it is an end-of-partition notice."""
    err = msg.error()
    if err is None or err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
        return None
    return err
