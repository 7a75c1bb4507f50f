"""Starting a replica as a process (consumer.launch): the environment it gets."""

from __future__ import annotations

from consumer.env_names import known_variables
from consumer.launch import env_name, replica_env
from schemas import TopicNames


def test_settings_become_the_variables_the_replica_reads() -> None:
    """Topics, bootstrap and each setting land in variables ``Settings.from_env`` knows."""
    env = replica_env(
        "127.0.0.1:9092", TopicNames("r", "s", "d", "t"), group_id="g", max_in_flight=8
    )
    assert env == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "BATCH_RUNNER_REQUESTS_TOPIC": "r",
        "BATCH_RUNNER_RESULTS_TOPIC": "s",
        "BATCH_RUNNER_DLQ_TOPIC": "d",
        "BATCH_RUNNER_STATUS_TOPIC": "t",
        "BATCH_RUNNER_GROUP_ID": "g",
        "BATCH_RUNNER_MAX_IN_FLIGHT": "8",
    }
    assert {name for name in env if name.startswith("BATCH_RUNNER_")} <= known_variables()


def test_kafka_client_options_keep_their_own_prefix() -> None:
    """``kafka_linger_ms`` passes through as ``KAFKA_LINGER_MS``, not ``BATCH_RUNNER_...``."""
    assert env_name("kafka_linger_ms") == "KAFKA_LINGER_MS"
    assert env_name("drain_timeout_s") == "BATCH_RUNNER_DRAIN_TIMEOUT_S"
