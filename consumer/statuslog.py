"""The status topic's reader: restore owned partitions from their beginning, then tail them.

One consumer outside any group (``assign``, never ``subscribe``; nothing committed), its
calls serialised on a thread of its own (:class:`~consumer.kafka_thread.ConsumerThread`)
so the event loop never blocks. :mod:`consumer.jobs` applies what it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from consumer.kafka_thread import ConsumerThread

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka import Message

log = logging.getLogger(__name__)

TAIL_POLL_S = 0.2  # how long one read of the owned status partitions waits
RESTORE_TIMEOUT_S = 20.0  # bound on reading one assignment's status partitions
RETRY_S = 0.5  # pause before asking again a cluster that could not answer


class StatusLog:
    """A consumer of the status topic outside any group, on a thread of its own."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        """Create the consumer (nothing assigned)."""
        conf = {
            **config,
            "group.id": f"{config.get('group.id', 'batch-runner')}.status-reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
        }
        conf.pop("group.instance.id", None)
        self.topic = topic
        self._consumer = Consumer(conf)
        self._thread = ConsumerThread("kafka-status")

    async def _call(self, fn: Callable[[], Any]) -> Any:  # noqa: ANN401 - the call's result
        return await asyncio.wrap_future(self._thread.submit(fn))

    async def restore(self, partitions: list[int]) -> tuple[list[Message], list[Message]]:
        """Assign ``partitions`` from the beginning and read them to their current end.

        Returns the records of ``partitions`` (the changelog) and those of partitions
        assigned before, read meanwhile (to apply as usual).
        """
        result: tuple[list[Message], list[Message]] = await self._call(
            lambda: self._restore_blocking(partitions)
        )
        return result

    def _restore_blocking(self, partitions: list[int]) -> tuple[list[Message], list[Message]]:
        consumer, topic = self._consumer, self.topic
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        ends, unanswered = self._ends(partitions, deadline)
        consumer.incremental_assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        pending = set(ends)
        restored: list[Message] = []
        others: list[Message] = []
        while pending and time.monotonic() < deadline:
            try:
                for msg in consumer.consume(500, 0.1):
                    if msg.error() is not None:
                        continue
                    partition = msg.partition()
                    (restored if partition in partitions else others).append(msg)
                positions = consumer.position([TopicPartition(topic, p) for p in pending])
            except KafkaException as exc:  # the cluster busy or moving: ask again
                log.info("status partitions not readable yet", extra={"error": str(exc)})
                time.sleep(RETRY_S)
                continue
            pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
        unread = sorted(pending | set(unanswered))
        if unread:
            log.warning(
                "status partitions not read to their end in time: their batches' counts "
                "restart from what was read",
                extra={"partitions": unread},
            )
        return restored, others

    def _ends(self, partitions: list[int], deadline: float) -> tuple[dict[int, int], list[int]]:
        """Return the end offset of each partition with records, and those unanswered.

        A broker that is busy or has just moved a partition answers "unknown partition"
        for a while: it is asked again until ``deadline``. A partition still unanswered
        then is not waited for, as one not read to its end in time.
        """
        ends: dict[int, int] = {}
        todo = list(partitions)
        while todo:
            p = todo[0]
            left = deadline - time.monotonic()
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=max(0.1, min(10.0, left))
                )
            except KafkaException as exc:
                if left <= RETRY_S:
                    return ends, todo
                log.info("no end offset yet: asking again", extra={"error": str(exc)})
                time.sleep(RETRY_S)
                with contextlib.suppress(KafkaException):  # what the cluster knows now
                    self._consumer.list_topics(self.topic, timeout=max(0.1, min(5.0, left)))
                continue
            todo.pop(0)
            if high > low:
                ends[p] = high
        return ends, []

    async def unassign(self, partitions: list[int]) -> None:
        """Stop reading ``partitions``."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        with contextlib.suppress(KafkaException):
            await self._call(lambda: self._consumer.incremental_unassign(tps))

    async def poll(self) -> list[Message]:
        """Return what arrived on the assigned partitions (waits up to ``TAIL_POLL_S``)."""
        msgs: list[Message] = await self._call(lambda: self._consumer.consume(500, TAIL_POLL_S))
        return [m for m in msgs if m.error() is None]

    async def close(self) -> None:
        """Close the consumer and free the thread."""
        with contextlib.suppress(KafkaException, RuntimeError):
            await asyncio.wait_for(self._call(self._consumer.close), 5.0)
        self._thread.shutdown(wait=False)
