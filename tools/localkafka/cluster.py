"""Find a Kafka cluster to use: an existing one, a container, or a local ``java`` broker.

The order, used by the tests, the demo and the benchmarks alike:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if it is set: the user's cluster, used as it is;
2. a Docker engine that answers: the official ``apache/kafka`` image via testcontainers
   (``BATCH_RUNNER_KAFKA_IMAGE`` names another image with the same environment
   conventions, as CI does with the one it builds in ``tools/ci_checks/docker/``);
3. otherwise a :class:`~tools.localkafka.broker.LocalKafka` broker started with ``java``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

from tools.localkafka.broker import KAFKA_VERSION, LocalKafka, free_port, wait_until_ready

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
KAFKA_IMAGE_VARIABLE = "BATCH_RUNNER_KAFKA_IMAGE"


def kafka_image() -> str:
    """Return the broker image the container path runs: ``apache/kafka`` unless overridden."""
    return os.environ.get(KAFKA_IMAGE_VARIABLE) or KAFKA_IMAGE


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


def container_environment(port: int, controller_port: int = 9093) -> dict[str, str]:
    """Return the environment that configures a single-node KRaft broker container.

    ``apache/kafka`` reads it (and so does the CI's image, ``tools/ci_checks/docker/``): the client
    listener on ``port``, advertised as ``127.0.0.1:port``, the controller on
    ``controller_port`` inside the container, topics created only on request.
    """
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:{controller_port}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{controller_port}",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


@contextlib.contextmanager
def kafka_container(image: str | None = None) -> Iterator[str]:
    """Run ``apache/kafka`` (KRaft, single node) in Docker and yield its bootstrap address.

    ``image`` defaults to :func:`kafka_image`. The host port is chosen up front and mapped
    to the same port inside the container, so the advertised listener is right before
    the broker starts.
    """
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    port = free_port()
    container = DockerContainer(image or kafka_image()).with_bind_ports(port, port)
    for name, value in container_environment(port).items():
        container = container.with_env(name, value)
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
        log.info("starting %s in Docker", kafka_image())
        with kafka_container() as bootstrap:
            yield bootstrap
        return
    log.info("no Docker engine: starting a local Kafka %s broker with java", KAFKA_VERSION)
    with LocalKafka() as kafka:
        yield kafka.bootstrap_servers
