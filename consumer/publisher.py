"""The results and dead-letter producer: idempotent, ``acks=all``, delivery reports on the loop.

:meth:`Publisher.produce` queues a record with a callback for its delivery report; the
records queued during one pass of the event loop are handed to librdkafka together at
its end, in order. A record handed over alone wakes librdkafka's broker thread each time:
in bursts it costs a fraction of the CPU, and waits for nothing (the next pass starts
when the callbacks of this one are done). Reports are served by :meth:`Publisher.run`, a
task that calls ``poll(0)`` on the event loop thread, so callbacks run there and may
touch pipeline state without locks. A full local queue (``BufferError``) is waited out,
never dropped; a record librdkafka refuses outright goes to ``refused`` (the pipeline
stops without committing it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import threading
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

# Their public home is confluent_kafka.admin, which re-exports them without __all__
# (mypy --strict does not follow that): imported from where they are defined.
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from confluent_kafka import Message

    from consumer.connectivity import ClusterWatch

    DeliveryCallback = Callable[[KafkaError | None, Message], None]

    # Record headers as librdkafka takes them (handed over without a copy).
    Headers = list[tuple[str, str | bytes | None]]
    # Publisher.produce, or a fake one in tests: (topic, value, key, on_delivery, headers).
    Produce = Callable[[str, bytes, bytes | str | None, DeliveryCallback, Headers | None], None]
    # Publisher.produce_all: (topic, values, key, on_delivery, headers), values in order.
    ProduceAll = Callable[
        [str, Sequence[bytes], bytes | str | None, DeliveryCallback, Headers | None], None
    ]
    _Record = tuple[str, bytes, bytes | str | None, DeliveryCallback, Headers | None]
    # Records queued together: (topic, values, key, on_delivery, headers).
    _Records = tuple[str, Sequence[bytes], bytes | str | None, DeliveryCallback, Headers | None]

log = logging.getLogger(__name__)

# How often delivery reports are served while records are outstanding.
POLL_INTERVAL_S = 0.002
# How long one wait for room in a full local queue lasts (served inside librdkafka).
FULL_QUEUE_WAIT_S = 0.005
# How long a renewal serves the old producer's purged records' reports.
RENEW_DRAIN_S = 1.0


class Publisher:
    """Wraps one ``confluent_kafka.Producer`` shared by results, summaries and dead letters."""

    def __init__(
        self,
        config: dict[str, object],
        cluster: ClusterWatch | None = None,
        refused: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Create the producer (no network I/O happens until the first record).

        Connection failures go to ``cluster`` (logged once per outage) when given; a
        record librdkafka refuses to ``refused`` (without it, the error is raised).
        """
        self._errors: collections.deque[KafkaError] = collections.deque(maxlen=20)
        self._cluster = cluster
        self._refused = refused
        self._config = {**config, "error_cb": self._on_error}
        self._producer = Producer(self._config)
        self._wakeup = asyncio.Event()
        self._queued: list[_Records] = []  # produced during this pass of the loop

    def _on_error(self, error: KafkaError) -> None:
        self._errors.append(error)
        if self._cluster is not None and self._cluster.error(error):
            return
        log.warning("Kafka client error", extra={"error": error.str(), "fatal": error.fatal()})

    @property
    def producer(self) -> Producer:
        """The underlying producer (exactly-once mode drives its transactions)."""
        return self._producer

    async def renew(self) -> None:
        """Replace the producer with a new one of the same configuration (exactly-once).

        The old one's records are purged, their (failed) delivery reports served here on
        the loop, and it is closed in a thread of its own (closing may wait for a broker).
        """
        old, self._queued = self._producer, []
        with contextlib.suppress(KafkaException):
            old.purge()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RENEW_DRAIN_S
        while True:
            old.poll(0)
            if len(old) == 0 or loop.time() >= deadline:
                break
            await asyncio.sleep(POLL_INTERVAL_S)
        self._producer = Producer(self._config)
        threading.Thread(target=_close, args=(old,), name="old-producer", daemon=True).start()

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record; ``on_delivery(err, msg)`` runs on the loop when it is acknowledged.

        The record reaches librdkafka at the end of this pass of the event loop, with
        the others queued meanwhile (at once when no loop runs).
        """
        queued = self._queued
        queued.append((topic, (value,), key, on_delivery, headers))
        if len(queued) == 1:
            self._hand_over_soon()

    def produce_all(
        self,
        topic: str,
        values: Sequence[bytes],
        key: bytes | str | None,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        """Queue records that share topic, key, callback and headers (a unit's results).

        As :meth:`produce` for each value, in order, for one queue entry in all.
        """
        queued = self._queued
        queued.append((topic, values, key, on_delivery, headers))
        if len(queued) == 1:
            self._hand_over_soon()

    def _hand_over_soon(self) -> None:
        """Hand the queue over at the end of this pass of the loop (at once without one)."""
        try:
            asyncio.get_running_loop().call_soon(self.hand_over)
        except RuntimeError:
            self.hand_over()

    def hand_over(self) -> None:
        """Hand the queued records to librdkafka, in order.

        Never drops a record: if librdkafka's local queue is full (500,000 records by
        default), it serves delivery reports, waiting a few milliseconds at a time inside
        librdkafka, until there is room. Only then does this block the event loop.
        """
        queued, self._queued = self._queued, []
        produce = self._producer.produce
        for topic, values, key, on_delivery, headers in queued:
            for value in values:
                try:
                    # Positional (partition -1: by key; timestamp 0: now): the binding
                    # parses them for about half what keywords cost it.
                    produce(topic, value, key, -1, on_delivery, None, 0, headers)
                except Exception as exc:  # noqa: BLE001 - a full queue waits, the rest is refused
                    self._wait_or_refuse(exc, (topic, value, key, on_delivery, headers))
        if queued:
            self._wakeup.set()

    def _wait_or_refuse(self, error: Exception, record: _Record) -> None:
        """Produce a record librdkafka did not take: when its queue has room, or never.

        A full local queue (``BufferError``) is waited out, serving delivery reports; a
        record refused outright (too large, an unknown topic...) can never be delivered,
        so its message must never count as done: it goes to ``refused``.
        """
        topic, value, key, on_delivery, headers = record
        while isinstance(error, BufferError):
            self._producer.poll(FULL_QUEUE_WAIT_S)
            try:
                self._producer.produce(topic, value, key, -1, on_delivery, None, 0, headers)
            except Exception as again:  # noqa: BLE001 - sorted by the loop's condition
                error = again
            else:
                return
        if self._refused is None:
            raise error
        self._refused(error)

    def produce_to(  # noqa: PLR0913, PLR0917 - produce's arguments and the partition
        self,
        topic: str,
        partition: int,
        value: bytes,
        key: str,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record for partition ``partition`` of ``topic`` (as :meth:`produce`)."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=partition,
                    headers=headers,
                    on_delivery=on_delivery,
                )
            except BufferError:
                self._producer.poll(FULL_QUEUE_WAIT_S)
                continue
            self._wakeup.set()
            return

    def partition_count(self, topic: str, timeout_s: float = 10.0) -> int | None:
        """Return the partition count of ``topic``, or None when it does not exist."""
        metadata = self._producer.list_topics(topic, timeout=timeout_s)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        return len(found.partitions)

    async def run(self) -> None:
        """Serve delivery reports until cancelled: every ``POLL_INTERVAL_S`` while any are due.

        While records are outstanding the reports are served by a timer callback
        (:meth:`_serve`, 500 times a second), not by a step of this task: a sleep per
        poll cost a future, its timer's callback and a step of the task each time.
        """
        loop = asyncio.get_running_loop()
        while True:
            self.hand_over()
            if len(self._producer) == 0:
                self._wakeup.clear()
                await self._wakeup.wait()
            served = loop.create_future()  # resolved when nothing is outstanding
            self._serve(loop, served)
            await served

    def _serve(self, loop: asyncio.AbstractEventLoop, served: asyncio.Future[None]) -> None:
        if served.done():  # run() was cancelled: serve no more
            return
        try:
            self._producer.poll(0)
        except Exception as exc:  # noqa: BLE001 - a report's callback failed: run() raises it
            served.set_exception(exc)
            return
        if len(self._producer) == 0:
            served.set_result(None)
        else:
            loop.call_later(POLL_INTERVAL_S, self._serve, loop, served)

    async def flush(self, timeout_s: float) -> int:
        """Serve reports until nothing is outstanding or ``timeout_s`` passes; return the rest."""
        self.hand_over()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self._producer) > 0 and loop.time() < deadline:
            self._producer.poll(0)
            await asyncio.sleep(POLL_INTERVAL_S)
        self._producer.poll(0)
        return len(self._producer)

    def check_topics(self, topics: Sequence[str], timeout_s: float = 10.0) -> None:
        """Raise ``KafkaException`` naming any of ``topics`` the cluster does not have."""
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            # The reason (bad credentials, an untrusted certificate...) arrives through the
            # error callback, served by poll(); say it rather than "transport failure".
            self._producer.poll(0)
            reasons = (re.sub(r" \(after \d+ms[^)]*\)", "", e.str()) for e in self._errors)
            seen = "; ".join(dict.fromkeys(reasons))
            raise KafkaException(
                KafkaError(
                    KafkaError._TRANSPORT,  # noqa: SLF001 - the client's own error code
                    f"cannot reach the cluster within {timeout_s:g}s: {seen or exc}",
                ),
            ) from None
        missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error]
        if missing:
            raise KafkaException(
                KafkaError(
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    f"topic(s) {', '.join(missing)} do not exist: "
                    "create them first (batch-runner submit --create-topic, or kafka-topics.sh)",
                ),
            )


def _close(producer: Producer) -> None:
    """Close a replaced producer (its transaction is over: a failure to abort it is not news)."""
    try:
        producer.close()
    except KafkaException as exc:
        log.debug("closing the replaced producer", extra={"error": str(exc)})


# Producer-only settings an admin client (a producer instance inside librdkafka) must not
# act on: it would otherwise ask for a producer id or emit statistics.
_NOT_FOR_ADMIN = frozenset(
    {"enable.idempotence", "transactional.id", "statistics.interval.ms", "stats_cb"},
)


def topic_record_limits(
    config: dict[str, Any],
    topics: Sequence[str],
    timeout_s: float = 10.0,
) -> dict[str, int]:
    """Return each topic's ``max.message.bytes`` (its own or the broker's default).

    ``config`` is the producer's configuration. Topics whose configuration cannot be
    read (no DescribeConfigs permission, an old broker) are left out: the caller keeps
    its own limit for them.
    """
    admin = AdminClient({k: v for k, v in config.items() if k not in _NOT_FOR_ADMIN})
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in dict.fromkeys(topics)]
    limits: dict[str, int] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entries = future.result(timeout=timeout_s)
            limits[resource.name] = int(entries["max.message.bytes"].value)
        except (KafkaException, KeyError, TypeError, ValueError, TimeoutError) as exc:
            log.info(
                "cannot read a topic's max.message.bytes; keeping the configured limit",
                extra={"topic": resource.name, "error": str(exc)},
            )
    return limits


def usable_record_bytes(topic_max_message_bytes: int) -> int:
    """Return the largest record value (with key) that fits a topic of that limit.

    The broker checks the compressed record batch: leave room for lz4's worst-case
    growth (under 0.4%), the batch and record framing, the headers and the key.
    """
    return topic_max_message_bytes - topic_max_message_bytes // 250 - 4096
