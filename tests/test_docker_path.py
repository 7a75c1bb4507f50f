"""The Docker path's Kafka image: its entry point reads the environment as ``apache/kafka`` does.

CI cannot pull ``apache/kafka``; it builds a stand-in from the local broker's jars
(``tools/ci_checks/docker/``) whose entry point turns ``KAFKA_*`` variables into broker properties.
These tests run that entry point on this machine with ``java`` and the same jars, with
the environment ``tools/localkafka/cluster.py`` gives the testcontainers broker, so what the
image does is pinned without a Docker engine. ``make docker-check`` runs the image
itself, in compose and under testcontainers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from tests.helpers import create_topic, unique, wait_for
from tools.ci_checks.docker.kafka_entrypoint import (
    DEFAULT_CLUSTER_ID,
    DEFAULTS,
    broker_properties,
    format_arguments,
    property_name,
)
from tools.localkafka.broker import LocalKafkaError, ensure_jars, free_port, wait_until_ready
from tools.localkafka.cluster import container_environment
from tools.localkafka.processes import terminate

if TYPE_CHECKING:
    from collections.abc import Iterator

ENTRYPOINT = (
    Path(__file__).resolve().parent.parent
    / "tools"
    / "ci_checks"
    / "docker"
    / "kafka_entrypoint.py"
)


@pytest.mark.parametrize(
    ("variable", "prop"),
    [
        ("KAFKA_NODE_ID", "node.id"),
        ("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "listener.security.protocol.map"),
        ("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "share.coordinator.state.topic.min.isr"),
        ("KAFKA_ABC__DEF", "abc_def"),
        ("KAFKA_ABC___DEF", "abc-def"),
        ("KAFKA_A___B__C_D", "a-b_c.d"),
    ],
)
def test_variable_names_map_to_properties_as_in_the_official_image(
    variable: str, prop: str
) -> None:
    """``.`` is ``_``, ``_`` is ``__`` and ``-`` is ``___`` after the ``KAFKA_`` prefix."""
    assert property_name(variable) == prop


def test_only_broker_variables_become_properties() -> None:
    """JVM and logging variables and other names stay out of ``server.properties``."""
    props = broker_properties(
        {
            "KAFKA_NODE_ID": "7",
            "KAFKA_HEAP_OPTS": "-Xmx1g",
            "KAFKA_OPTS": "-Dx=y",
            "KAFKA_LOG4J_ROOT_LOGLEVEL": "WARN",
            "KAFKA_TOOLS_OPTS": "-Xmx64m",
            "CLUSTER_ID": "abc",
            "PATH": "/usr/bin",
        },
    )
    assert props == {"node.id": "7"}


def test_listeners_default_to_the_advertised_ones_on_every_interface() -> None:
    """Without ``KAFKA_LISTENERS`` the broker binds the advertised ports on 0.0.0.0."""
    props = broker_properties(
        {"KAFKA_ADVERTISED_LISTENERS": "INTERNAL://kafka:19092, EXTERNAL://localhost:9092"},
    )
    assert props["listeners"] == "INTERNAL://0.0.0.0:19092,EXTERNAL://0.0.0.0:9092"


def test_an_empty_environment_gets_a_single_node_default() -> None:
    """With no ``KAFKA_*`` property at all, a combined broker and controller on 9092."""
    assert broker_properties({"PATH": "/usr/bin"}) == DEFAULTS
    assert DEFAULTS["process.roles"] == "broker,controller"


def test_storage_is_formatted_once_and_standalone_only_without_static_voters(
    tmp_path: Path,
) -> None:
    """Formatting keeps existing storage; ``--standalone`` only for a bootstrap-servers quorum."""
    config = tmp_path / "server.properties"
    voters = format_arguments(
        {"process.roles": "broker,controller", "controller.quorum.voters": "1@localhost:9093"},
        "id",
        config,
    )
    assert "--ignore-formatted" in voters
    assert "--standalone" not in voters
    dynamic = format_arguments(
        {"process.roles": "broker,controller", "controller.quorum.bootstrap.servers": "x:9093"},
        "id",
        config,
    )
    assert "--standalone" in dynamic
    assert "--standalone" not in format_arguments({"process.roles": "broker"}, "id", config)


@contextlib.contextmanager
def entrypoint_broker(home: Path, env: dict[str, str], log: Path) -> Iterator[int]:
    """Run the image's entry point with ``env`` until the block ends; yield its pid."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT), "--home", str(home)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        bootstrap = env["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
        try:
            wait_until_ready(bootstrap, alive=lambda: process.poll() is None)
        except (TimeoutError, LocalKafkaError) as exc:
            raise AssertionError(log.read_text(errors="replace")[-3000:]) from exc
        yield process.pid
    finally:
        terminate(process, grace_s=30)


def _read_one(bootstrap: str, topic: str) -> bytes | None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("group"),
            "auto.offset.reset": "earliest",
        },
    )
    try:
        consumer.subscribe([topic])
        msg = wait_for(lambda: consumer.poll(0.5), timeout_s=60, what=f"a record on {topic}")
        assert msg.error() is None, msg.error()
        return msg.value()
    finally:
        consumer.close()


@pytest.mark.kafka
def test_the_entry_point_runs_the_testcontainers_environment_and_keeps_its_storage(
    tmp_path: Path,
) -> None:
    """The broker starts from kafka_env's container variables, serves, and restarts on its data.

    The first start formats the storage (the image's default cluster id), the second finds
    it formatted and keeps it: a topic and its record survive the restart, as they do
    across ``docker-compose stop`` and ``start``.
    """
    home = tmp_path / "opt-kafka"
    home.mkdir()
    (home / "libs").symlink_to(ensure_jars(), target_is_directory=True)
    port, controller = free_port(), free_port()
    data = tmp_path / "data"
    env = {
        "PATH": os.environ["PATH"],
        **container_environment(port, controller_port=controller),
        "KAFKA_LOG_DIRS": str(data),
        "KAFKA_HEAP_OPTS": "-Xmx256m",
    }
    bootstrap = f"127.0.0.1:{port}"
    topic = unique("entrypoint")
    with entrypoint_broker(home, env, tmp_path / "first.log"):
        create_topic(AdminClient({"bootstrap.servers": bootstrap}), topic, 2)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce(topic, key=b"k", value=b"kept")
        assert producer.flush(30) == 0
    properties = (home / "config" / "server.properties").read_text().splitlines()
    assert "auto.create.topics.enable=false" in properties
    assert f"listeners=PLAINTEXT://:{port},CONTROLLER://:{controller}" in properties
    assert f"cluster.id={DEFAULT_CLUSTER_ID}" in (data / "meta.properties").read_text()
    with entrypoint_broker(home, env, tmp_path / "second.log"):
        assert _read_one(bootstrap, topic) == b"kept"
    assert "already formatted" in (tmp_path / "second.log").read_text()
