"""Creating topics: the one place the CLI, the demo, ``submit``, the tests and benchmarks use.

:func:`service_topics` says what a service instance needs (requests and results with the
same partition count, a one-partition dead-letter topic); :func:`create_topics` creates
them (a topic that exists already is fine) and waits until every partition has a leader,
so a producer or consumer started right after finds them ready.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.errors import KafkaUnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from schemas import TopicNames

BROKER_DEFAULT = -1  # replication factor: the broker's default.replication.factor


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create: its name, partition count and topic configuration."""

    name: str
    partitions: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreatedTopics:
    """What :func:`create_topics` did: topics created, found existing, or failed (and why)."""

    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`~schemas.errors.KafkaUnavailableError` if any topic failed."""
        if self.failed:
            reasons = "; ".join(f"{name}: {why}" for name, why in self.failed.items())
            raise KafkaUnavailableError(f"could not create topics: {reasons}")


# The status topic keeps the latest record per key (a batch's status, its cancel): compacted.
STATUS_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


def service_topics(names: TopicNames, partitions: int) -> list[TopicSpec]:
    """Return a service instance's topics.

    Requests, results and the compacted status topic of ``partitions`` each (the status
    topic is co-partitioned with the requests), and a one-partition DLQ.
    """
    return [
        TopicSpec(names.requests, partitions),
        TopicSpec(names.results, partitions),
        TopicSpec(names.dlq, 1),
        TopicSpec(names.status, partitions, STATUS_TOPIC_CONFIG),
    ]


def admin_client(config: Mapping[str, str | int | float | bool] | str) -> AdminClient:
    """Return an AdminClient for a bootstrap address or a librdkafka configuration."""
    if isinstance(config, str):
        return AdminClient({"bootstrap.servers": config})
    return AdminClient(dict(config))


def create_topics(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    *,
    timeout_s: float = 30.0,
    replication_factor: int = BROKER_DEFAULT,
) -> CreatedTopics:
    """Create ``specs`` (existing ones are left as they are); wait until they have leaders.

    Never raises for one topic's failure: the result lists it under ``failed`` (call
    :meth:`CreatedTopics.check` to turn that into an error).
    """
    outcome = CreatedTopics()
    if not specs:
        return outcome
    wanted = [
        NewTopic(s.name, s.partitions, replication_factor, config=dict(s.config)) for s in specs
    ]
    futures = admin.create_topics(wanted, request_timeout=timeout_s)
    for spec in specs:
        try:
            futures[spec.name].result(timeout=timeout_s)
            outcome.created.append(spec.name)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome.existed.append(spec.name)
            else:
                outcome.failed[spec.name] = str(exc)
    _wait_for_leaders(admin, [s for s in specs if s.name not in outcome.failed], outcome, timeout_s)
    return outcome


def _wait_for_leaders(
    admin: AdminClient, specs: Sequence[TopicSpec], outcome: CreatedTopics, timeout_s: float
) -> None:
    """Wait until each topic of ``specs`` has its partitions, each with a leader."""
    deadline = time.monotonic() + timeout_s
    waiting = {s.name: s.partitions for s in specs}
    existing = set(outcome.existed)
    while waiting:
        metadata = admin.list_topics(timeout=max(1.0, min(5.0, deadline - time.monotonic())))
        for name, partitions in list(waiting.items()):
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None or not topic.partitions:
                continue
            enough = name in existing or len(topic.partitions) == partitions
            if enough and all(p.leader >= 0 for p in topic.partitions.values()):
                del waiting[name]
        if not waiting:
            return
        if time.monotonic() > deadline:
            for name in waiting:
                outcome.failed[name] = f"no leader for every partition within {timeout_s:g}s"
            return
        time.sleep(0.05)
