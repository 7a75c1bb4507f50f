"""The drain ends by its deadline even when the consumer thread stops answering.

A real ``Source`` (librdkafka consumer and its thread), publisher, committer and chunk
book, pointed at a port nobody listens on: no broker is needed to drain nothing. The
consumer thread is held by a call that does not return, as a librdkafka call that hangs
would hold it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

import pytest

from consumer.chunks import ChunkBook
from consumer.committer import Committer
from consumer.drain import Drain
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker
from consumer.publisher import Publisher
from consumer.source import Source
from tools.localkafka.broker import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from consumer.commits import Commit
    from consumer.offsets import PartitionKey

LIVENESS_BOUND_S = 30.0  # far beyond the drain timeout: only a hang reaches it


class NoWork:
    """A rebalance listener for a replica that never gets partitions."""

    async def on_assigned(
        self, partitions: list[PartitionKey], committed: dict[PartitionKey, Commit]
    ) -> None:
        """Nothing is ever assigned here."""
        del partitions, committed

    async def on_revoked(self, partitions: list[PartitionKey]) -> dict[PartitionKey, Commit]:
        """Nothing to commit."""
        del partitions
        return {}

    async def on_lost(self, partitions: list[PartitionKey]) -> None:
        """Nothing to forget."""
        del partitions


@pytest.fixture
def held() -> Iterator[threading.Event]:
    """Give the event the stuck call waits on; set at the end, so the thread is let go."""
    release = threading.Event()
    yield release
    release.set()


async def drain_with(*, hold: threading.Event | None, timeout_s: float) -> Drain:
    """Run one drain of nothing; with ``hold``, the consumer thread is stuck first.

    The consumer is closed afterwards (once let go, when it was held).
    """
    bootstrap = f"127.0.0.1:{free_port()}"
    source = Source({"bootstrap.servers": bootstrap, "group.id": "drain-test"}, "t", NoWork())
    await source.subscribe()
    publisher = Publisher({"bootstrap.servers": bootstrap})
    committer = Committer(
        source,
        OffsetTracker(),
        Metrics(),
        interval_s=0.2,
        timeout_s=1.0,
        on_committed=lambda _: None,
    )
    drain = Drain(
        source=source,
        book=ChunkBook(100),
        publisher=publisher,
        committer=committer,
        timeout_s=timeout_s,
        failed=lambda: False,
    )
    if hold is not None:
        source._thread.submit(hold.wait)  # the call that never returns
    rounds = asyncio.create_task(committer.run())
    try:
        await asyncio.wait_for(drain.run(rounds, forced=lambda: False), LIVENESS_BOUND_S)
        assert rounds.done()
    finally:
        if hold is not None:
            hold.set()
        assert await source.close(10.0)
    return drain


async def test_a_drain_whose_polls_are_not_answered_still_ends(
    held: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    """The drain stops polling once a poll goes unanswered, and ends instead of hanging.

    Before the fix it awaited each poll without a bound, so a consumer thread that never
    answered kept the replica alive past its drain timeout (and past any SIGTERM grace).
    """
    caplog.set_level(logging.WARNING, logger="consumer.drain")
    drain = await drain_with(hold=held, timeout_s=1.0)
    assert drain.time_left() == 0.0, "it waited for the poll past the deadline"
    warnings = [r.getMessage() for r in caplog.records if r.name == "consumer.drain"]
    assert warnings == [
        "the consumer did not answer a poll during the drain: not polling any more"
    ], warnings


async def test_a_drain_with_an_answering_consumer_ends_early(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With nothing buffered and polls answered the drain ends well before its deadline."""
    caplog.set_level(logging.WARNING, logger="consumer.drain")
    drain = await drain_with(hold=None, timeout_s=20.0)
    assert drain.time_left() > 0.0
    assert not [r for r in caplog.records if r.name == "consumer.drain"]
