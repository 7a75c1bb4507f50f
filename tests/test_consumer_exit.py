"""A replica's exit code says whether it could not start or failed while running.

``serve`` runs a real pipeline object (its Kafka clients pointed at a closed port, no I/O
before they are used); its run fails with a client error before or after the replica
joined its group.
"""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.__main__ import EXIT_CONFIG, EXIT_FATAL, serve
from consumer.pipeline import Pipeline
from consumer.settings import Settings
from tools.localkafka.broker import free_port


@pytest.mark.parametrize(
    ("joined", "code", "message"),
    [
        (False, EXIT_CONFIG, "cannot start"),
        (True, EXIT_FATAL, "stopped after a Kafka client error"),
    ],
)
async def test_a_client_error_is_a_start_up_error_only_before_the_replica_joined(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    joined: bool,  # noqa: FBT001 - a parameter of the case
    code: int,
    message: str,
) -> None:
    """Before joining: exit 2, "cannot start". After: exit 1, a failure with its traceback."""

    async def fails(self: Pipeline) -> None:
        self.source.joined = joined
        error = KafkaError(KafkaError._UNKNOWN_PARTITION, "Unknown partition")
        raise KafkaException(error)

    monkeypatch.setattr(Pipeline, "run", fails)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "BATCH_RUNNER_ENDPOINT": "http://127.0.0.1:1/v1",
    }
    caplog.set_level(logging.INFO, logger="consumer")
    assert await serve(Settings.from_env(env)) == code
    said = [r for r in caplog.records if r.name == "consumer"]
    assert [r.getMessage() for r in said] == [message]
    assert (said[0].exc_info is not None) is joined
