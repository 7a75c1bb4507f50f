"""The consumer's per-item hot path: results in bursts, lock-free histograms, the event loop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import KafkaError, KafkaException, Message
from prometheus_client import CollectorRegistry, Counter, Histogram

from consumer.__main__ import loop_factory
from consumer.loop_metrics import LoopCounter, LoopHistogram
from consumer.metrics import LATENCY_BUCKETS, Metrics
from consumer.publisher import Publisher
from consumer.settings import Settings
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

# No broker: librdkafka queues records locally until it reaches one (never, here).
UNREACHABLE = {"bootstrap.servers": "127.0.0.1:1", "message.max.bytes": 10_000}


class Held:
    """The records librdkafka holds, told by their delivery reports once purged."""

    def __init__(self) -> None:
        """Nothing held yet."""
        self.values: list[bytes] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        """Take one delivery report: the record was purged from librdkafka's queue."""
        assert err is not None
        assert err.code() == KafkaError._PURGE_QUEUE
        self.values.append(msg.value() or b"")

    def take(self, publisher: Publisher) -> list[bytes]:
        """Purge what librdkafka holds; return the values it held, in order."""
        producer = publisher._producer
        producer.purge()
        producer.poll(0)
        values, self.values = self.values, []
        return values


def exported(registry: CollectorRegistry, label: str) -> dict[tuple[str, str], float]:
    """Return every sample but the ``_created`` ones, by name and the value of ``label``."""
    return {
        (s.name, s.labels.get(label, "")): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_records_of_one_loop_pass_reach_librdkafka_together_at_its_end() -> None:
    """Produced records wait for the end of the pass, then all of them are queued, in order."""
    refused: list[BaseException] = []
    held = Held()

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        publisher = Publisher(dict(UNREACHABLE), refused=refused.append)
        for n in range(3):
            publisher.produce("results", b"%d" % n, None, held)
        before = held.take(publisher)
        await asyncio.sleep(0)
        return before, held.take(publisher)

    assert asyncio.run(scenario()) == ([], [b"0", b"1", b"2"])
    assert refused == []


def test_a_record_librdkafka_refuses_goes_to_refused_and_the_others_are_queued() -> None:
    """A record over ``message.max.bytes`` is refused outright: the pipeline must hear of it."""
    refused: list[BaseException] = []
    held = Held()

    async def scenario() -> list[bytes]:
        publisher = Publisher(dict(UNREACHABLE), refused=refused.append)
        publisher.produce("results", b"small", None, held)
        publisher.produce("results", b"x" * 20_000, None, held)
        publisher.produce("results", b"small too", None, held)
        await asyncio.sleep(0)
        return held.take(publisher)

    assert asyncio.run(scenario()) == [b"small", b"small too"]
    assert len(refused) == 1
    assert isinstance(refused[0], KafkaException)
    assert refused[0].args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_a_units_records_queued_together_keep_their_order_among_the_others() -> None:
    """``produce_all`` queues a unit's records as one entry: in order, between the others."""
    refused: list[BaseException] = []
    held = Held()

    async def scenario() -> list[bytes]:
        publisher = Publisher(dict(UNREACHABLE), refused=refused.append)
        publisher.produce("results", b"a", "k", held)
        publisher.produce_all("results", [b"b", b"x" * 20_000, b"c"], "k", held, [("h", b"v")])
        publisher.produce("results", b"d", "k", held)
        await asyncio.sleep(0)
        return held.take(publisher)

    assert asyncio.run(scenario()) == [b"a", b"b", b"c", b"d"]
    assert len(refused) == 1  # the record over message.max.bytes; the rest went on
    assert refused[0].args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_a_full_local_queue_is_waited_out_not_dropped() -> None:
    """Records beyond librdkafka's queue wait for room (here: the first ones time out)."""
    config = {**UNREACHABLE, "queue.buffering.max.messages": 2, "message.timeout.ms": 50}
    reports: list[tuple[int | None, bytes]] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        reports.append((None if err is None else err.code(), msg.value() or b""))

    async def scenario() -> None:
        publisher = Publisher(config, refused=lambda exc: pytest.fail(str(exc)))
        publisher.produce_all("results", [b"0", b"1", b"2", b"3"], "k", report)
        await asyncio.sleep(0)  # the hand-over waits until the first two time out
        publisher.producer.purge()
        publisher.producer.poll(0)

    asyncio.run(scenario())
    assert [value for _, value in reports] == [b"0", b"1", b"2", b"3"]
    codes = [code for code, _ in reports]
    assert codes[:2] == [KafkaError._MSG_TIMED_OUT] * 2  # what made room for the others
    assert set(codes) <= {KafkaError._MSG_TIMED_OUT, KafkaError._PURGE_QUEUE}


def test_outside_a_running_loop_a_record_is_handed_over_at_once() -> None:
    """Without an event loop (a script, a test) there is no pass to wait for."""
    held = Held()
    publisher = Publisher(dict(UNREACHABLE))
    publisher.produce("results", b"now", None, held)
    assert held.take(publisher) == [b"now"]


def test_loop_histogram_exports_what_a_prometheus_histogram_would() -> None:
    """Same buckets, sum and count as ``prometheus_client.Histogram`` for the same values."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopHistogram("t_seconds", "t", buckets=LATENCY_BUCKETS, registry=ours)
    plain = Histogram("t_seconds", "t", buckets=LATENCY_BUCKETS, registry=theirs)
    for value in (0.0, 0.001, 0.0011, 0.05, 0.3, 2.5, 59.0, 61.0, 1e6):
        fast.observe(value)
        plain.observe(value)

    assert exported(ours, "le") == exported(theirs, "le")


def test_histogram_observations_are_kept_until_folded_into_their_buckets() -> None:
    """An observation is only kept; the pipeline's periodic fold (or a scrape) counts it.

    So a replica's memory does not grow with the items it serves between scrapes.
    """
    metrics = Metrics()
    for value in (0.002, 0.02, 0.2, 2.0):
        metrics.inference_latency.observe(value)
        metrics.queue_wait.observe(value)
        metrics.item_latency.observe(value)
    assert metrics.inference_latency.kept == 4
    metrics.fold()
    assert (metrics.inference_latency.kept, metrics.queue_wait.kept) == (0, 0)
    assert metrics.item_latency.kept == 0
    count = metrics.registry.get_sample_value("batch_runner_inference_latency_seconds_count")
    total = metrics.registry.get_sample_value("batch_runner_queue_wait_seconds_sum")
    assert (count, total) == (4, 0.002 + 0.02 + 0.2 + 2.0)


def test_loop_counter_exports_what_a_prometheus_counter_would() -> None:
    """Same name, labels and values as a labelled ``prometheus_client.Counter``."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopCounter("t_total", "t", "code", registry=ours)
    plain = Counter("t_total", "t", ["code"], registry=theirs)
    for code, amount in (("200", 1), ("200", 3), ("503", 1), ("timeout", 2.5)):
        fast.labels(code).inc(amount)
        plain.labels(code).inc(amount)
    with pytest.raises(ValueError, match="only grows"):
        fast.labels("200").inc(-1)

    assert exported(ours, "code") == exported(theirs, "code")
    assert exported(ours, "code")[("t_total", "200")] == 4


def test_the_event_loop_setting() -> None:
    """The default is uvloop; asyncio's own loop on request; anything else is refused."""
    base = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "BATCH_RUNNER_ENDPOINT": "http://m/v1"}
    assert Settings.from_env(base).event_loop == "uvloop"
    assert Settings.from_env({**base, "BATCH_RUNNER_EVENT_LOOP": "asyncio"}).event_loop == (
        "asyncio"
    )
    with pytest.raises(ConfigError, match="event_loop 'trio': use uvloop or asyncio"):
        Settings.from_env({**base, "BATCH_RUNNER_EVENT_LOOP": "trio"})
    assert loop_factory("asyncio") is None
    factory = loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


class Reporting:
    """A stand-in for librdkafka's producer: each ``poll`` reports one held record."""

    def __init__(self) -> None:
        """Nothing held, nothing polled yet."""
        self.held: list[tuple[bytes, object]] = []
        self.polls = 0

    def produce(self, *args: object) -> None:
        """Hold the record (topic, value, key, partition, on_delivery, ...) until a poll."""
        value, on_delivery = args[1], args[4]
        assert isinstance(value, bytes)
        self.held.append((value, on_delivery))

    def __len__(self) -> int:
        """How many records are outstanding."""
        return len(self.held)

    def poll(self, _timeout: float) -> int:
        """Report the oldest held record (its callback gets no error, no message)."""
        self.polls += 1
        if not self.held:
            return 0
        _, on_delivery = self.held.pop(0)
        on_delivery(None, None)  # type: ignore[operator] # the callback the test gave
        return 1


def test_delivery_reports_are_served_while_outstanding_and_not_polled_for_when_none_are() -> None:
    """``run`` polls until every record is reported, then waits for the next record.

    A cancel of ``run`` stops its polls, and a report's callback that raises ends ``run``
    with that error (the pipeline's task group sees it), as when the task polled itself.
    """
    reported: list[bytes] = []

    def report(value: bytes) -> Callable[[KafkaError | None, Message], None]:
        return lambda _err, _msg: reported.append(value)

    async def scenario() -> tuple[int, int, int]:
        publisher = Publisher(dict(UNREACHABLE))
        fake = Reporting()
        publisher._producer = fake  # type: ignore[assignment] # the stand-in above
        task = asyncio.create_task(publisher.run())
        for n in range(3):
            publisher.produce("results", b"%d" % n, None, report(b"%d" % n))
        for _ in range(200):
            await asyncio.sleep(0.002)
            if len(reported) == 3:
                break
        served = fake.polls
        await asyncio.sleep(0.03)  # nothing outstanding: no polls meanwhile
        idle = fake.polls - served
        publisher.produce("results", b"3", None, report(b"3"))
        for _ in range(200):
            await asyncio.sleep(0.002)
            if len(reported) == 4:
                break
        fake.held.append((b"x", lambda _e, _m: None))  # outstanding when run is cancelled
        publisher._wakeup.set()
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_at = fake.polls
        await asyncio.sleep(0.03)
        after_cancel = fake.polls - cancelled_at

        def fails(_err: object, _msg: object) -> None:
            raise RuntimeError("a callback's bug")

        task = asyncio.create_task(publisher.run())
        fake.held.clear()
        publisher.produce("results", b"4", None, fails)
        with pytest.raises(RuntimeError, match="a callback's bug"):
            await asyncio.wait_for(task, 5)
        return served, idle, after_cancel

    served, idle, after_cancel = asyncio.run(scenario())
    assert reported == [b"0", b"1", b"2", b"3"]
    assert served >= 3
    assert idle == 0
    assert after_cancel == 0
