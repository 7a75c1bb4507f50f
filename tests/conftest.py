"""Session-wide fixtures: one Kafka cluster for the run, unique topics and groups per test.

The cluster comes from ``tools.kafka_env.kafka_cluster``: ``KAFKA_BOOTSTRAP_SERVERS`` if
set, else a Docker container if an engine answers, else a real local broker run with
``java`` (the usual case on machines without Docker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest
from confluent_kafka.admin import AdminClient

from tests.helpers import create_topic, unique
from tools.kafka_env import kafka_cluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


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
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Yield an HTTP client session for the test, on the test's event loop."""
    async with aiohttp.ClientSession() as session:
        yield session
