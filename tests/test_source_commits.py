"""A periodic commit that waited behind a revoke is not sent: it would move the offset back."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pytest

from consumer.source import Source

if TYPE_CHECKING:
    from collections.abc import Iterator

    from consumer.commits import Commit
    from consumer.offsets import PartitionKey

TP: PartitionKey = ("batch-requests", 0)


class Listener:
    """A rebalance listener with nothing to do (no rebalance happens here)."""

    async def on_assigned(
        self, partitions: list[PartitionKey], committed: dict[PartitionKey, Commit]
    ) -> None:
        """Restore nothing."""

    async def on_revoked(self, partitions: list[PartitionKey]) -> dict[PartitionKey, Commit]:  # noqa: ARG002
        """Commit nothing."""
        return {}

    async def on_lost(self, partitions: list[PartitionKey]) -> None:
        """Forget nothing."""


@pytest.fixture
def source() -> Iterator[Source]:
    """Return a source whose consumer never connects (nothing here needs a broker)."""
    config = {"bootstrap.servers": "127.0.0.1:9", "group.id": "commits-test"}
    made = Source(config, "batch-requests", Listener())
    yield made
    made._thread.submit(made._consumer.close).result(10)


async def test_a_commit_queued_behind_a_revoke_of_its_partition_is_dropped(source: Source) -> None:
    """The commit was asked for before the revoke ran on the consumer thread: not sent.

    Sent, it would have reached the broker after the commit made on revoke, moving the
    partition's committed offset back (the next owner repeating what was done).
    """
    source.assignment.add(TP)
    release = threading.Event()
    sent: list[object] = []
    consumer = source._consumer

    class Recording:
        def commit(self, **kwargs: object) -> None:
            sent.append(kwargs)

        def __getattr__(self, name: str) -> object:
            return getattr(consumer, name)

    source._consumer = Recording()  # type: ignore[assignment]

    def poll_that_revokes() -> None:  # a poll whose revoke callback commits a later position
        release.wait(10)
        source._forget([TP])  # what the revoke callback ends with

    source._thread.submit(poll_that_revokes)
    asked = asyncio.ensure_future(source.commit({TP: 5}, timeout_s=5.0, metadata={TP: ""}))
    await asyncio.sleep(0.05)  # the commit is asked for, and waits behind the poll
    release.set()
    result = await asked
    source._consumer = consumer
    assert sent == []
    assert result.committed == {}
    assert result.error is None
