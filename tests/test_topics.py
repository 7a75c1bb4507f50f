"""Creating topics in one place (producer.topics): what a service needs, what failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from producer.topics import (
    STATUS_TOPIC_CONFIG,
    CreatedTopics,
    TopicSpec,
    create_topics,
    service_topics,
)
from schemas import DLQ_TOPIC, REQUESTS_TOPIC, RESULTS_TOPIC, STATUS_TOPIC, TopicNames
from schemas.errors import KafkaUnavailableError
from tests.helpers import unique

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient


def test_a_service_has_partitioned_requests_results_and_status_and_one_dlq_partition() -> None:
    """The contract's default names; requests, results and status share the partition count.

    The status topic is compacted (the latest record per key is what counts).
    """
    assert service_topics(TopicNames(), 6) == [
        TopicSpec(REQUESTS_TOPIC, 6),
        TopicSpec(RESULTS_TOPIC, 6),
        TopicSpec(DLQ_TOPIC, 1),
        TopicSpec(STATUS_TOPIC, 6, STATUS_TOPIC_CONFIG),
    ]


def test_check_names_every_failed_topic() -> None:
    """``check`` passes with nothing failed and raises the Kafka error naming each failure."""
    CreatedTopics(created=["a"], existed=["b"]).check()
    with pytest.raises(KafkaUnavailableError, match=r"c: refused; d: timed out"):
        CreatedTopics(failed={"c": "refused", "d": "timed out"}).check()


@pytest.mark.kafka
def test_create_topics_reports_created_existing_and_refused(kafka_admin: AdminClient) -> None:
    """A second call finds the topic existing; a topic the broker refuses is listed, not raised."""
    good, bad = unique("topics-good"), unique("topics-bad")
    first = create_topics(kafka_admin, [TopicSpec(good, 2)])
    assert (first.created, first.existed, first.failed) == ([good], [], {})
    refused = TopicSpec(bad, 1, {"cleanup.policy": "no-such-policy"})
    again = create_topics(kafka_admin, [TopicSpec(good, 2), refused])
    assert again.existed == [good]
    assert list(again.failed) == [bad]
    partitions = kafka_admin.list_topics(good, timeout=10).topics[good].partitions
    assert len(partitions) == 2
