"""Find a Kafka cluster to use: an existing one, a container, or a local ``java`` broker.

The order, used by the tests, the demo and the benchmarks alike:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if it is set: the user's cluster, used as it is;
2. a Docker engine that answers: the official ``apache/kafka`` image via testcontainers;
3. otherwise a :class:`~tools.kafka_local.LocalKafka` broker started with ``java``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

from tools.kafka_local import KAFKA_VERSION, LocalKafka, free_port, wait_until_ready

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"


def docker_available() -> bool:
    """Return whether a Docker engine answers a ping within a couple of seconds."""
    try:
        import docker  # noqa: PLC0415 - optional, only with the test extras

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False


@contextlib.contextmanager
def kafka_container() -> Iterator[str]:
    """Run ``apache/kafka`` (KRaft, single node) in Docker and yield its bootstrap address.

    The host port is chosen up front and mapped to the same port inside the container,
    so the advertised listener is right before the broker starts.
    """
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    port = free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", f"PLAINTEXT://:{port},CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    with container:
        bootstrap = f"127.0.0.1:{port}"
        wait_until_ready(bootstrap, timeout_s=120)
        yield bootstrap


@contextlib.contextmanager
def kafka_cluster() -> Iterator[str]:
    """Yield a bootstrap address, starting (and afterwards stopping) a broker if needed."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        log.info("using the Kafka cluster at %s (KAFKA_BOOTSTRAP_SERVERS)", configured)
        yield configured
        return
    if docker_available():
        log.info("starting %s in Docker", KAFKA_IMAGE)
        with kafka_container() as bootstrap:
            yield bootstrap
        return
    log.info("no Docker engine: starting a local Kafka %s broker with java", KAFKA_VERSION)
    with LocalKafka() as kafka:
        yield kafka.bootstrap_servers
