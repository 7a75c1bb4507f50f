"""What a scenario must produce, and a ledger of what the results topic actually holds.

The :class:`Ledger` reads the results topic from its start in a thread (no group, no
commits) for the whole scenario, counting every result per ``(batch_id, index)`` and
every chunk summary per ``(batch_id, chunk)``. It also notes, per *request* partition,
how many results arrived and the newest result's timestamp (the producer's create time:
a result stamped after a moment was made after it), which the progress figures use.
:meth:`Ledger.finish` reads on to the topic's end offsets as they are after every
replica has stopped: the final read the missing and duplicate counts come from.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # the package does not re-export it

from schemas import ChunkSummary, InvalidMessage, decode_results_record

if TYPE_CHECKING:
    from concurrent.futures import Future

    from bench.kafka_io import Backlog

# Harness clients stay quiet while a broker is down on purpose (errors come as events).
QUIET = {"log_level": 0}


@dataclass
class Expected:
    """The batches a scenario submitted: their sizes, chunk counts and request partitions."""

    totals: dict[str, int] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    error_items: set[tuple[str, int]] = field(default_factory=set)  # meant to end as errors
    dead_letters: int = 0  # invalid messages, meant for the dead-letter topic

    def add_batch(self, batch_id: str, total: int, chunks: int, partition: int) -> None:
        """Expect ``total`` results and ``chunks`` summaries for ``batch_id``."""
        if batch_id in self.totals:
            raise ValueError(f"batch {batch_id} submitted twice")
        self.totals[batch_id] = total
        self.chunks[batch_id] = chunks
        self.partitions[batch_id] = partition

    def add_backlog(self, backlog: Backlog, partitions: int) -> None:
        """Expect every batch of ``backlog`` (produced to ``partitions`` partitions)."""
        for number, total in enumerate(backlog.batch_sizes()):
            if total:
                self.add_batch(
                    f"{backlog.prefix}{number}",
                    total,
                    -(-total // backlog.chunk_size),
                    backlog.partition_of(number, partitions),
                )

    @property
    def items(self) -> int:
        """Return how many results are expected (one per item)."""
        return sum(self.totals.values())

    @property
    def summaries(self) -> int:
        """Return how many chunk summaries are expected."""
        return sum(self.chunks.values())


class Ledger:
    """Tally the results topic while the scenario runs, then read it to its end."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, expected: Expected) -> None:
        """Start reading every partition of ``topic`` from its beginning."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.expected = expected
        self.rereads = 0  # final reads started afresh (the live reader did not get there)
        self._lock = threading.Lock()
        self._target: list[int] | None = None
        self._start_reading()

    def _start_reading(self) -> None:
        """Zero the tally and read the topic from its beginning in a new thread."""
        self.results: dict[tuple[str, int], int] = {}
        self.error_results: dict[tuple[str, int], int] = {}
        self.summaries: dict[tuple[str, int], int] = {}
        self.undecodable = 0
        self.unexpected = 0  # records of batches or indexes nobody submitted
        self.by_partition = [0] * self.partitions  # results per request partition
        self.newest = [0.0] * self.partitions  # newest result create time per request partition
        self.missing_items = self.expected.items
        self.missing_summaries = self.expected.summaries
        self._seen = [-1] * self.partitions  # highest results offset read, per partition
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"chaos-ledger-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
                # What a downstream reader of committed results sees (exactly-once mode);
                # the end notice says the last committed offset was read (a transaction's
                # commit marker takes the topic's last offset, no record does).
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                **QUIET,
            },
        )
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)]
        )
        self._thread = threading.Thread(target=self._run, name="chaos-ledger", daemon=True)
        self._thread.start()

    def expect(self, backlog: Backlog) -> None:
        """Expect ``backlog`` too (call before producing it, so no result comes first)."""
        with self._lock:
            items, summaries = self.expected.items, self.expected.summaries
            self.expected.add_backlog(backlog, self.partitions)
            self.missing_items += self.expected.items - items
            self.missing_summaries += self.expected.summaries - summaries

    def complete(self) -> bool:
        """Whether every expected item has a result and every chunk its summary."""
        return self.missing_items == 0 and self.missing_summaries == 0

    def progress(self) -> tuple[list[int], list[float]]:
        """Return results so far and the newest result's time, per request partition."""
        with self._lock:
            return list(self.by_partition), list(self.newest)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(num_messages=5000, timeout=0.2)
                with self._lock:
                    for msg in batch:
                        error, partition, offset = msg.error(), msg.partition(), msg.offset()
                        if error is not None and error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                            if partition is not None and offset is not None:
                                self._seen[partition] = max(self._seen[partition], offset - 1)
                        elif error is None:
                            self._count(msg.value() or b"", msg.timestamp()[1] / 1000)
                            partition, offset = msg.partition(), msg.offset()
                            if partition is not None and offset is not None:
                                self._seen[partition] = max(self._seen[partition], offset)
                target = self._target
                if target is not None and all(
                    seen + 1 >= end for seen, end in zip(self._seen, target, strict=True)
                ):
                    self._caught_up.set()
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to finish()
            self._failure = exc
        finally:
            self._consumer.close()

    def _count(self, value: bytes, created: float) -> None:
        try:
            record = decode_results_record(value)
        except InvalidMessage:
            self.undecodable += 1
            return
        expected = self.expected
        batch = record.batch_id
        if batch not in expected.totals:
            self.unexpected += 1
            return
        if isinstance(record, ChunkSummary):
            key = (batch, record.chunk)
            seen = self.summaries.get(key, 0)
            self.summaries[key] = seen + 1
            if not seen and record.chunk < expected.chunks[batch]:
                self.missing_summaries -= 1
            return
        key = (batch, record.index)
        if not 0 <= record.index < expected.totals[batch]:
            self.unexpected += 1
            return
        seen = self.results.get(key, 0)
        self.results[key] = seen + 1
        if not seen:
            self.missing_items -= 1
        if record.status == "error":
            self.error_results[key] = self.error_results.get(key, 0) + 1
        partition = expected.partitions[batch]
        self.by_partition[partition] += 1
        self.newest[partition] = max(self.newest[partition], created)

    def finish(self, timeout_s: float = 60.0) -> bool:
        """Read on to the topic's end offsets as of now; stop; return whether it got there.

        A reader that lived through a broker restart can stop receiving anything
        (librdkafka keeps fetching with what it knew before); when the live reader has
        not got there within half the time, the tally is dropped and the topic read
        again from its beginning by a new reader (counted in ``rereads``).
        """
        deadline = time.monotonic() + timeout_s
        while self._target is None and time.monotonic() < deadline:
            # A fresh admin client each time: one that saw the broker restart may keep a
            # stale leader epoch and fail every request (FENCED_LEADER_EPOCH).
            admin = AdminClient({"bootstrap.servers": self.bootstrap, **QUIET})
            try:
                ends = end_offsets(admin, self.topic, self.partitions, 5.0)
                self._target = [ends[p] for p in range(self.partitions)]
            except Exception:  # noqa: BLE001 - a broker still coming back: ask again
                time.sleep(0.5)
        if self._target is None:
            self._halt()
            return False
        halfway = max(0.0, (deadline - time.monotonic()) / 2)
        if not self._caught_up.wait(halfway):
            self._halt()
            self.rereads += 1
            with self._lock:
                self._start_reading()
        caught_up = self._caught_up.wait(max(0.0, deadline - time.monotonic()))
        self._halt()
        return caught_up

    def _halt(self) -> None:
        """Stop the reading thread; raise what made it fail, if anything did."""
        self._stop.set()
        self._thread.join(30)
        if self._failure is not None:
            raise RuntimeError("the results ledger failed") from self._failure

    def close(self) -> None:
        """Stop reading (a scenario abandoned by an error)."""
        self._stop.set()
        self._thread.join(30)

    def figures(self) -> dict[str, Any]:
        """Return the counts of the final read: missing, duplicate and error results."""
        expected = self.expected
        duplicates = sum(n - 1 for n in self.results.values())
        summary_duplicates = sum(n - 1 for n in self.summaries.values())
        errors = set(self.error_results)
        return {
            "items": expected.items,
            "missing_items": self.missing_items,
            "duplicate_results": duplicates,
            "items_with_duplicates": sum(n > 1 for n in self.results.values()),
            "error_results": sum(self.error_results.values()),
            "items_with_error_results": len(errors),
            "unexpected_error_items": len(errors - expected.error_items),
            "expected_error_items_without_error": len(expected.error_items - errors),
            "chunk_summaries": expected.summaries,
            "missing_summaries": self.missing_summaries,
            "duplicate_summaries": summary_duplicates,
            "undecodable_records": self.undecodable,
            "unexpected_records": self.unexpected,
            "final_read_rereads": self.rereads,
        }


def end_offsets(
    admin: AdminClient, topic: str, partitions: int, timeout_s: float
) -> dict[int, int]:
    """Return the end offset of each partition of ``topic`` (raises if the broker is away)."""
    return wait_end_offsets(ask_end_offsets(admin, topic, partitions, timeout_s), timeout_s)


def ask_end_offsets(
    admin: AdminClient, topic: str, partitions: int, timeout_s: float
) -> dict[TopicPartition, Future[Any]]:
    """Ask for the end offsets of ``topic``; return the futures (see ``wait_end_offsets``)."""
    return admin.list_offsets(
        {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},  # type: ignore[no-untyped-call]
        request_timeout=timeout_s,
    )


def wait_end_offsets(
    futures: dict[TopicPartition, Future[Any]], timeout_s: float
) -> dict[int, int]:
    """Return the end offsets the futures of ``ask_end_offsets`` answer.

    Raises ``ValueError`` for an answer without an offset: a busy broker sometimes answers
    a partition with ``OFFSET_INVALID`` (-1001) and no error. Taken as an end offset, it
    made a partition look without lag (its recovery went unmeasured) and would let the
    final read stop at once.
    """
    ends = {tp.partition: int(f.result(timeout=2 * timeout_s).offset) for tp, f in futures.items()}
    unknown = sorted(p for p, offset in ends.items() if offset < 0)
    if unknown:
        raise ValueError(f"no end offset for partitions {unknown}: {ends}")
    return ends


def missing_keys(ledger: Ledger, limit: int = 20) -> list[str]:
    """Return up to ``limit`` missing items as ``batch[index]`` (for the report)."""
    out: list[str] = []
    for batch, total in ledger.expected.totals.items():
        for index in range(total):
            if (batch, index) not in ledger.results:
                out.append(f"{batch}[{index}]")
                if len(out) >= limit:
                    return out
    return out
