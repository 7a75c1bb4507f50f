"""Shared fixtures: one Kafka cluster for the run, unique topics, groups and services per test.

The cluster comes from ``tools.localkafka.cluster.kafka_cluster``: ``KAFKA_BOOTSTRAP_SERVERS`` if
set, else a Docker container if an engine answers, else a real local broker run with
``java`` (the usual case on machines without Docker).

A test that needs a broker carries the ``kafka`` marker, so ``make unit`` (``pytest -m
"not kafka"``) starts none; a test that asks for the session's broker without the marker
is refused at collection.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import aiohttp
import hypothesis
import pytest
from confluent_kafka.admin import AdminClient

from tests.consumer_harness import MakeService, Service, create_topics
from tests.helpers import create_topic, unique
from tools.localkafka.cluster import kafka_cluster
from tools.testservers.inference import ServerConfig, TestInferenceServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from consumer.protocols import ProtocolName

# ``make unit`` (BATCH_RUNNER_QUICK_TESTS=1) tries a fifth of hypothesis' 100 examples in
# the property tests that keep its default; the others set theirs with helpers.examples.
hypothesis.settings.register_profile("quick", max_examples=20)
if os.environ.get("BATCH_RUNNER_QUICK_TESTS") == "1":
    hypothesis.settings.load_profile("quick")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse tests that use the session's broker without the ``kafka`` marker.

    Every broker fixture (``kafka_admin``, ``make_topic``, ``make_service``) depends on
    ``kafka_bootstrap``, so one name finds them all.
    """
    unmarked = [
        item.nodeid
        for item in items
        if "kafka_bootstrap" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("kafka") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the Kafka broker but are not marked @pytest.mark.kafka: "
            + ", ".join(unmarked)
        )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Yield the bootstrap address of the Kafka cluster every test of the session shares."""
    with kafka_cluster() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """Return an AdminClient on the session's cluster."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def make_topic(kafka_admin: AdminClient) -> Callable[..., str]:
    """Return a factory that creates a uniquely named topic with N partitions."""

    def factory(prefix: str = "test", partitions: int = 1, **config: str) -> str:
        return create_topic(kafka_admin, unique(prefix), partitions, **config)

    return factory


@pytest.fixture
def make_group() -> Callable[[], str]:
    """Return a factory of unique consumer group ids."""
    return lambda: unique("group")


@pytest.fixture
def server() -> Iterator[TestInferenceServer]:
    """Yield an identity inference server running in a background thread.

    ``tests/test_testserver.py`` has its own ``server``, on the test's event loop.
    """
    with TestInferenceServer(ServerConfig()) as srv:
        yield srv


@pytest.fixture
def make_service(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    server: TestInferenceServer,
    tmp_path: Path,
) -> Iterator[MakeService]:
    """Return a factory of services on fresh topics calling ``server``.

    ``env`` sets the replicas' variables; every replica still running at teardown is killed.
    """
    services: list[Service] = []

    def factory(*, partitions: int = 1, protocol: ProtocolName = "v1", **env: str) -> Service:
        svc = Service(
            bootstrap=kafka_bootstrap,
            topics=create_topics(kafka_admin, partitions),
            endpoint=server.endpoint(protocol),
            workdir=tmp_path,
            env={"BATCH_RUNNER_PROTOCOL": protocol, **env},
        )
        services.append(svc)
        return svc

    yield factory
    for svc in services:
        svc.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Yield an HTTP client session for the test, on the test's event loop."""
    async with aiohttp.ClientSession() as session:
        yield session
