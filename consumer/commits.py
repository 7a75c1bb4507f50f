"""What a commit is and what the broker said about it (shared by the source and committer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, TopicPartition

if TYPE_CHECKING:
    from consumer.offsets import PartitionKey

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
