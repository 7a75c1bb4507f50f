"""What a commit is and what the broker said about it (shared by the source and committer)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

if TYPE_CHECKING:
    from consumer.offsets import PartitionKey

log = logging.getLogger(__name__)

# How long an assignment may wait to read its partitions' commit metadata (item-level
# resume); without an answer the messages after the committed offset are redone whole.
COMMITTED_TIMEOUT_S = 5.0

Commit = tuple[int, str]
"""A position to commit and its metadata (item-level resume, ``""`` for none)."""


# Commit errors that mean "not now" (a rebalance, a coordinator move, a broker away):
# the positions stay uncommitted and the next round commits them again.
RETRIABLE_COMMIT_ERRORS = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError._TRANSPORT,  # noqa: SLF001 - librdkafka's own codes
        KafkaError._WAIT_COORD,  # noqa: SLF001
        KafkaError._TIMED_OUT,  # noqa: SLF001
        KafkaError._STATE,  # noqa: SLF001
        KafkaError._DESTROY,  # noqa: SLF001
        KafkaError._ASSIGNMENT_LOST,  # noqa: SLF001
        KafkaError._NO_OFFSET,  # noqa: SLF001
    },
)


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What the broker said about one commit: the positions it took, and the first error."""

    committed: dict[PartitionKey, int] = field(default_factory=dict)
    error: KafkaError | None = None

    @property
    def retriable(self) -> bool:
        """Whether the failure is one that the next commit round may get past."""
        return self.error is None or self.error.code() in RETRIABLE_COMMIT_ERRORS


def topic_partition(topic: str, partition: int, offset: int, metadata: str) -> TopicPartition:
    """Return a position to commit, with its metadata when there is any."""
    if metadata:
        return TopicPartition(topic, partition, offset, metadata=metadata)
    return TopicPartition(topic, partition, offset)


def committed_metadata(
    consumer: Consumer, partitions: list[TopicPartition], timeout_s: float = COMMITTED_TIMEOUT_S
) -> dict[PartitionKey, Commit]:
    """Read the committed positions that carry metadata (none if the broker is slow).

    Called on the consumer's own thread (inside the assignment callback).
    """
    if not partitions:
        return {}
    try:
        found = consumer.committed(partitions, timeout=timeout_s)
    except KafkaException as exc:
        log.warning("no commit metadata: redoing whole messages", extra={"error": str(exc)})
        return {}
    return {
        (tp.topic, tp.partition): (tp.offset, tp.metadata)
        for tp in found
        if tp.error is None and tp.offset >= 0 and tp.metadata
    }


def timed_out(timeout_s: float) -> CommitResult:
    """Return the retriable failure of a commit whose answer did not come in time."""
    message = f"no answer to the commit within {timeout_s:g}s"
    return CommitResult(error=KafkaError(KafkaError._TIMED_OUT, message))  # noqa: SLF001


CommitKey = frozenset[tuple[str, int, int]]
"""What a commit commits: (topic, partition, position) of each of its partitions."""


class PendingCommits:
    """Commits sent and not answered yet: the futures their callers wait on."""

    def __init__(self) -> None:
        """Start with none."""
        self._futures: dict[CommitKey, asyncio.Future[CommitResult]] = {}

    def waiting(self, key: CommitKey) -> asyncio.Future[CommitResult] | None:
        """Return the future of the same commit already sent, if one is."""
        return self._futures.get(key)

    def add(self, key: CommitKey) -> asyncio.Future[CommitResult]:
        """Register a commit about to be sent (before it is: its answer may come first)."""
        future = self._futures[key] = asyncio.get_running_loop().create_future()
        return future

    def settle(self, key: CommitKey, result: CommitResult) -> None:
        """Answer a commit's callers without the broker (it was not sent)."""
        future = self._futures.pop(key, None)
        if future is not None and not future.done():
            future.set_result(result)

    def answered(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Take the broker's answer to a commit (on the loop) to its callers."""
        key = frozenset((tp.topic, tp.partition, tp.offset) for tp in partitions)
        committed = {(tp.topic, tp.partition): tp.offset for tp in partitions if tp.error is None}
        first = err or next((tp.error for tp in partitions if tp.error is not None), None)
        if key not in self._futures:  # its caller gave up waiting: the next round commits again
            log.debug("late commit answer", extra={"error": first and first.str()})
        self.settle(key, CommitResult(committed if err is None else {}, first))
