"""The transactional producer's blocking calls, one at a time, and its fencing transaction.

Used by :class:`~consumer.transactions.TransactionalCommitter` (exactly-once mode).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka import Producer

    from consumer.publisher import Publisher
    from consumer.settings import Settings

FENCE_HEADER = ("batch-runner-fence", b"1")  # on the records of a fencing transaction
CALL_GRACE_S = 2.0  # beyond a blocking call's own timeout, before it counts as timed out


def transactional_config(settings: Settings) -> dict[str, Any]:
    """Return the producer options of a transactional replica (a fresh id per process).

    With static membership the id is the member's own, so a restarted replica fences its
    predecessor's open transaction at once; otherwise the broker aborts it after
    ``transaction_timeout_s``.
    """
    suffix = settings.group_instance_id or uuid.uuid4().hex[:16]
    return {
        "transactional.id": f"batch-runner-{settings.group_id}-{suffix}",
        "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
    }


class TransactionalProducer:
    """The publisher's producer, driven through its transactions from the event loop."""

    def __init__(self, publisher: Publisher, fence_topics: tuple[str, ...]) -> None:
        """Drive ``publisher``'s producer (whichever it is now); fence ``fence_topics``."""
        self._publisher = publisher
        self._topics = fence_topics
        self._call: asyncio.Future[object] | None = None  # the blocking call under way
        self._counts: dict[str, int] = {}  # partitions of each fenced topic, as last read

    @property
    def producer(self) -> Producer:
        """The producer now (a renewal replaces it)."""
        return self._publisher.producer

    def forget(self) -> None:
        """Stop waiting for a call still running on a replaced producer."""
        self._call = None

    async def idle(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for a blocking call under way (its waiter may be gone)."""
        previous = self._call
        if previous is not None and not previous.done():
            await asyncio.wait({previous}, timeout=timeout_s)

    async def call(self, fn: Callable[[float], object], timeout_s: float) -> None:
        """Run one blocking transaction call in a thread, never two at once.

        librdkafka refuses a call while another runs ("simultaneous ... not allowed"): a
        call still running (its waiter was cancelled, or gave up) is awaited first, at
        most ``timeout_s``; a call is waited for ``timeout_s`` (and a grace) at most, then
        fails retriably (it may run on: the next call waits for it, a renewal drops it).
        """
        await self.idle(timeout_s)
        previous = self._call
        if previous is not None and not previous.done():
            raise _retriable("an earlier transaction call has not returned yet")
        call: asyncio.Future[object] = asyncio.ensure_future(asyncio.to_thread(fn, timeout_s))
        call.add_done_callback(_retrieve)
        self._call = call
        try:  # librdkafka bounds its calls by timeout_s, except in some states: so do we
            await asyncio.wait_for(asyncio.shield(call), timeout_s + CALL_GRACE_S)
        except TimeoutError:
            message = f"a transaction call did not return within {timeout_s:g}s"
            raise _retriable(message) from None

    async def start(self, timeout_s: float) -> None:
        """Register the transactional id (fencing an older producer of it) and begin."""
        await self.call(self.producer.init_transactions, timeout_s)
        self.producer.begin_transaction()
        await self.fence(timeout_s)

    async def fence(self, timeout_s: float) -> None:
        """Abort a transaction holding one empty record on every results and DLQ partition.

        Its abort markers close whatever a transaction of this producer id left open on
        those partitions: a broker restarting as the only replica aborts timed-out
        transactions before it leads their partitions again, and skips their markers
        ("likely deleted"); the next commit marker would then make the aborted records
        visible. Runs after every start, abort and renewal (read_committed readers never
        see these records; others see empty records with a ``batch-runner-fence`` header).
        """
        producer = self.producer
        for topic in self._topics:
            try:
                found = await asyncio.to_thread(self._publisher.partition_count, topic, timeout_s)
            except KafkaException as exc:  # the broker away: the count known before will do
                if topic not in self._counts:
                    raise _retriable(f"no partition count of {topic}: {exc}") from exc
            else:
                self._counts[topic] = found or 0
            for partition in range(self._counts[topic]):
                producer.produce(topic, value=b"", partition=partition, headers=[FENCE_HEADER])
        await self._publisher.flush(timeout_s)
        await self.call(producer.abort_transaction, timeout_s)
        producer.begin_transaction()


def _retrieve(call: asyncio.Future[object]) -> None:
    """Take a blocking call's outcome (its waiter may be gone: a cancelled round)."""
    if not call.cancelled():
        call.exception()


def _retriable(message: str) -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, message, retriable=True))  # noqa: SLF001


def kafka_error(error: BaseException) -> KafkaError:
    """Return the Kafka error a failure carries (a fatal one if it carries none)."""
    if isinstance(error, KafkaException) and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return KafkaError(KafkaError._FATAL, str(error), fatal=True)  # noqa: SLF001
