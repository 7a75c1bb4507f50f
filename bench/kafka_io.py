"""Kafka for the benchmarks: fresh topics, a backlog of batch requests, a results reader."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from producer.topics import admin_client, create_topics, service_topics
from schemas import (
    CHUNK_SUMMARY_V1,
    ChunkSummary,
    TopicNames,
    decode_results_record,
    encode_batch_request,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from confluent_kafka import Message

SUMMARY_TAG = CHUNK_SUMMARY_V1.encode()


@dataclass(frozen=True)
class Topics(TopicNames):
    """The four topics of one measurement, unique to it, and their partition count."""

    partitions: int = 1

    def request_partitions(self) -> set[str]:
        """Return the request partitions as the consumer logs them (``topic[p]``)."""
        return {f"{self.requests}[{p}]" for p in range(self.partitions)}


def make_topics(bootstrap: str, partitions: int) -> Topics:
    """Create fresh request, result, dead-letter and status topics; wait until they exist."""
    run = uuid.uuid4().hex[:10]
    topics = Topics(
        f"bench-{run}-req",
        f"bench-{run}-res",
        f"bench-{run}-dlq",
        f"bench-{run}-status",
        partitions,
    )
    create_topics(admin_client(bootstrap), service_topics(topics, partitions)).check()
    return topics


@dataclass(frozen=True)
class Backlog:
    """``items`` identity items ``{"i": n}``, cut into ``batches`` batches of chunks.

    Batch ``b`` (id ``prefix`` + ``b``) goes to partition ``(b + first_partition) %
    partitions`` (its chunks share it, as keyed chunks do), so every partition holds the
    same share of the items.
    """

    items: int
    batches: int = 1
    chunk_size: int = 1000
    items_per_request: int | None = None
    prefix: str = "b"  # batch ids are prefix + number
    first_partition: int = 0  # batch b goes to partition (b + first_partition) % partitions
    priority: int | None = None  # every batch's

    def batch_sizes(self) -> list[int]:
        """Return the item count of each batch, by batch number."""
        base, extra = divmod(self.items, self.batches)
        return [base + (1 if b < extra else 0) for b in range(self.batches)]

    @property
    def chunks(self) -> int:
        """Return how many request messages (and so chunk summaries) the backlog makes."""
        return sum(-(-size // self.chunk_size) for size in self.batch_sizes() if size)

    def partition_of(self, number: int, partitions: int) -> int:
        """Return the partition batch ``number`` goes to."""
        return (number + self.first_partition) % partitions

    def messages(self, partitions: int) -> Iterator[tuple[int, str, bytes]]:
        """Yield ``(partition, key, value)`` of every request message, in order."""
        first = 0
        for number, total in enumerate(self.batch_sizes()):
            if not total:
                continue
            batch_id = f"{self.prefix}{number}"
            parts = -(-total // self.chunk_size)
            for part in range(parts):
                start = part * self.chunk_size
                count = min(self.chunk_size, total - start)
                values = [b'{"i":%d}' % (first + start + k) for k in range(count)]
                value = encode_batch_request(
                    batch_id=batch_id,
                    items=values,
                    start=start,
                    total=total,
                    chunk=part,
                    chunks=parts,
                    items_per_request=self.items_per_request,
                    priority=self.priority,
                )
                yield self.partition_of(number, partitions), batch_id, value
            first += total


def backlog_producer(bootstrap: str, topics: Topics, timeout_s: float = 30.0) -> Producer:
    """Return the producer of a backlog, connected (a metadata request answered).

    A new idempotent producer holds its records until a broker connection is up and it has
    its producer id: the first flush of one made at the clock's start took 0.5 to 1 s here.
    Timed runs make it before their replicas start, so it is ready seconds before the clock
    starts (scenario 6's 80 request messages then flushed in 10-143 ms), and that start-up
    is not counted as the pipeline's time.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        },
    )
    producer.list_topics(topics.requests, timeout=timeout_s)
    return producer


def produce(
    bootstrap: str, topics: Topics, backlog: Backlog, producer: Producer | None = None
) -> None:
    """Produce ``backlog`` to the requests topic and wait until the broker has all of it.

    ``producer``: one from :func:`backlog_producer` (made anew when not given).
    """
    if producer is None:
        producer = backlog_producer(bootstrap, topics)
    for partition, key, value in backlog.messages(topics.partitions):
        while True:
            try:
                producer.produce(topics.requests, key=key, value=value, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("the backlog was not acknowledged within 120 s")


def _raise_on_error(batch: list[Message]) -> None:
    for msg in batch:
        if msg.error() is not None:
            raise RuntimeError(f"reading results failed: {msg.error()}")


class ResultReader:
    """Read the results topic from its start in a thread until every record has arrived.

    It expects one result per item and one summary per chunk; it stops at the moment the
    last of them is read (``finished_wall``/``finished``) and sums the summaries'
    error counts (an error result means the run measured something else).
    """

    def __init__(
        self, bootstrap: str, topics: Topics, backlog: Backlog, *, summaries: bool = True
    ) -> None:
        """Assign every results partition from the beginning (no group, no rebalance).

        Without ``summaries`` (the peer writes none) it waits for one record per item.
        """
        chunks = backlog.chunks if summaries else 0
        self.expected_records = backlog.items + chunks
        self.expected_summaries = chunks
        self.records = 0
        self.summaries = 0
        self.item_errors = 0
        self.finished: float | None = None  # monotonic
        self.finished_wall: float | None = None
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                # librdkafka's 500 ms long poll, as a results tail would use: the broker
                # answers a waiting fetch as soon as records arrive, so a shorter wait only
                # adds empty fetches, which cost the broker (on the replicas' cores).
                "fetch.wait.max.ms": 500,
                # Exactly-once runs count what a downstream reader sees: committed results.
                "isolation.level": "read_committed",
            },
        )
        self._consumer.assign(
            [TopicPartition(topics.results, p, OFFSET_BEGINNING) for p in range(topics.partitions)]
        )
        self._thread = threading.Thread(target=self._run, name="bench-result-reader")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(num_messages=10_000, timeout=0.1)
                if not batch:
                    continue
                _raise_on_error(batch)
                self.records += len(batch)
                for msg in batch:
                    value = msg.value() or b""
                    if SUMMARY_TAG in value:
                        summary = decode_results_record(value)
                        if isinstance(summary, ChunkSummary):
                            self.summaries += 1
                            self.item_errors += summary.error
                if (
                    self.records >= self.expected_records
                    and self.summaries >= self.expected_summaries
                ):
                    self.finished = time.monotonic()
                    self.finished_wall = time.time()
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._failure = exc
        finally:
            self._consumer.close()

    def wait(self, timeout_s: float) -> None:
        """Wait until every record was read; raise if it failed or ``timeout_s`` passed."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(10)
            raise TimeoutError(
                f"read {self.records} of {self.expected_records} result records "
                f"in {timeout_s:.0f} s",
            )
        if self._failure is not None:
            raise RuntimeError("the result reader failed") from self._failure

    def close(self) -> None:
        """Stop reading (when a measurement is abandoned)."""
        self._stop.set()
        self._thread.join(10)
