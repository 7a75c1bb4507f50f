"""Scenarios 9-11: poison isolation, a small batch beside a big one, priorities.

Each runs the new behaviour beside today's in the same run, on the same server:

9. ``poison``: 10,000 items at 50 per request, 1% of them refused by the model (HTTP
   422), with bisection (``--max-bisect-calls 32``) and without (0: today). Figures: the
   good items that got an error result, and the calls beyond one per work unit divided
   by the bad items (the server counts the calls).
10. ``fair-latency``: a big batch (30,000 items, 1 item per request, C = 64, L = 20 ms:
    three times the buffer; not 1M, which would take over five minutes a run at this
    setting's ceiling of 3,200 items/s) on one partition; while it runs, a 3-item batch
    every half second on another, each timed from submit to its last record read. With
    ``--fairness batches`` (new) and ``partitions`` (today), and the 3-item batch on an
    idle replica. Figures: the small batch's latency, its ratio to the idle latency, and
    the big batch's throughput beside runs of it alone, in turns (its loss: the median
    of the ratios of neighbouring runs).
11. ``priorities``: two batches of priority 1 and 3, same size, on two partitions of one
    replica; the share of calls while both run (results per batch from the first
    result until one batch finishes; one item per request, so one result is one call),
    and the longest second without a result for the priority-1 batch (starvation).
"""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.kafka_io import Backlog, make_topics
from bench.procs import start_replica, stop_all
from bench.procs import wait_assigned as wait_replicas_assigned
from schemas import encode_batch_request

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bench.kafka_io import Topics
    from bench.procs import Replica, Server
    from bench.scenarios import Context

LATENCY_MS, CONCURRENCY = 20.0, 64
SMALL_EVERY_S = 0.5
RUN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PoisonBacklog(Backlog):
    """A backlog whose items at ``bad`` indices ask the test server to refuse them."""

    bad: frozenset[int] = frozenset()

    def messages(self, partitions: int) -> Iterator[tuple[int, str, bytes]]:
        """Yield the plain backlog's messages with the bad items spoiled."""
        for partition, key, value in super().messages(partitions):
            spoiled = value
            for index in self.bad:
                spoiled = spoiled.replace(
                    b'{"i":%d}' % index, b'{"i":%d,"fail":"permanent"}' % index
                )
            yield partition, key, spoiled


def server_requests(server: Server) -> int:
    """Return how many model requests the test server has answered so far."""
    stats = requests.get(f"{server.url}/_control/stats", timeout=10).json()
    return int(stats["requests"])


# --- 9: poison ----------------------------------------------------------------------------


def poison_isolation(ctx: Context) -> dict[str, Any]:
    """Scenario 9: 1% bad items at 50 per request, with bisection and without."""
    from bench.scenarios import Goal, pipeline_run, result  # noqa: PLC0415 - a cycle otherwise

    items, per_request = ctx.size(10_000, 1_000), 50
    picker = random.Random(19)  # noqa: S311 - which items are bad, not a secret
    bad = frozenset(picker.sample(range(items), items // 100))
    backlog = PoisonBacklog(items, chunk_size=1000, items_per_request=per_request, bad=bad)
    units = -(-items // per_request)
    runs: dict[str, Any] = {}
    with ctx.server(LATENCY_MS, "--poison-status", "422") as server:
        for label, calls in (("bisect", 32), ("today", 0)):
            before = server_requests(server)
            figures = pipeline_run(
                ctx, server, backlog, label=label, max_in_flight=CONCURRENCY,
                max_bisect_calls=calls,
            )  # fmt: skip
            figures["calls"] = server_requests(server) - before
            runs[label] = figures
    figures = {
        "items": items,
        "bad_items": len(bad),
        "good_item_errors": runs["bisect"]["item_errors"] - len(bad),
        "today_good_item_errors": runs["today"]["item_errors"] - len(bad),
        "extra_calls_per_bad_item": (runs["bisect"]["calls"] - units) / len(bad),
        "today_extra_calls_per_bad_item": (runs["today"]["calls"] - units) / len(bad),
        "items_per_s": runs["bisect"]["items_per_s"],
        "today_items_per_s": runs["today"]["items_per_s"],
    }
    beside = (
        f"today (--max-bisect-calls 0): {figures['today_good_item_errors']} good items got "
        f"an error, {figures['today_extra_calls_per_bad_item']:.1f} extra calls per bad item"
    )
    return result(
        f"9 poison isolation ({items:,} items, {per_request}/request, {len(bad)} refused with 422)",
        figures,
        [Goal("good_item_errors", "==", 0), Goal("extra_calls_per_bad_item", "<=", 12.0)],
        runs,
        beside,
    )


# --- the harness's view of the results topic ------------------------------------------------


class ArrivalReader:
    """Read the results topic in a thread; note when each record of each key arrived."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        """Read every results partition from its start."""
        self.arrivals: dict[bytes, list[float]] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-arrivals-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            },
        )
        self._consumer.assign(
            [TopicPartition(topics.results, p, OFFSET_BEGINNING) for p in range(topics.partitions)]
        )
        self._thread = threading.Thread(target=self._run, name="bench-arrivals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(num_messages=10_000, timeout=0.05)
                now = time.monotonic()
                failed = next((msg.error() for msg in batch if msg.error() is not None), None)
                if failed is not None:
                    self._failure = RuntimeError(f"reading results failed: {failed}")
                    return
                with self._lock:
                    for msg in batch:
                        self.arrivals.setdefault(msg.key() or b"", []).append(now)
                    if batch:
                        self._lock.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._failure = exc
        finally:
            self._consumer.close()

    def count(self, key: bytes) -> int:
        """Return how many records of ``key`` arrived."""
        if self._failure is not None:
            raise RuntimeError("the result reader failed") from self._failure
        with self._lock:
            return len(self.arrivals.get(key, ()))

    def wait_for(self, key: bytes, records: int, timeout_s: float = RUN_TIMEOUT_S) -> float:
        """Wait until ``records`` records of ``key`` arrived; return when the last did."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.arrivals.get(key, ())) < records:
                if self._failure is not None:
                    raise RuntimeError("the result reader failed") from self._failure
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.count(key)} of {records} records for {key!r}")
                self._lock.wait(min(left, 0.5))
            return self.arrivals[key][records - 1]

    def times(self, key: bytes) -> list[float]:
        """Return the arrival times of ``key``'s records so far."""
        with self._lock:
            return list(self.arrivals.get(key, ()))

    def close(self) -> None:
        """Stop reading."""
        self._stop.set()
        self._thread.join(10)


@dataclass
class Rig:
    """One replica on fresh topics of two partitions, a producer and an arrival reader."""

    ctx: Context
    server: Server
    settings: dict[str, object]
    topics: Topics = field(init=False)
    replica: Replica = field(init=False)
    reader: ArrivalReader = field(init=False)
    producer: Producer = field(init=False)

    def __enter__(self) -> Self:
        """Start the replica and wait until it owns both partitions."""
        ctx = self.ctx
        self.topics = make_topics(ctx.bootstrap, 2)
        env = {
            **ctx.consumer_env(self.topics, self.server, **self.settings),
            "BATCH_RUNNER_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        }
        self.replica = start_replica(env, ctx.workdir, ctx.wrapper("fair"))
        wait_replicas_assigned([self.replica], self.topics.request_partitions(), 120)
        self.reader = ArrivalReader(ctx.bootstrap, self.topics)
        self.producer = Producer(
            {"bootstrap.servers": ctx.bootstrap, "linger.ms": 0, "acks": "all"}
        )
        return self

    def __exit__(self, *_: object) -> None:
        """Stop the reader and the replica."""
        self.reader.close()
        stop_all([self.replica])

    def submit(self, backlog: Backlog, partition: int) -> float:
        """Produce ``backlog`` (one batch) to ``partition``; return when it started."""
        started = time.monotonic()
        for _, key, value in backlog.messages(1):
            while True:
                try:
                    self.producer.produce(
                        self.topics.requests, key=key, value=value, partition=partition
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)
        self.producer.flush(120)
        return started

    def small_batch(self, number: int) -> float:
        """Submit a 3-item batch to partition 1; return ms to its 3 results and summary."""
        batch_id = f"small{number}"
        value = encode_batch_request(
            batch_id=batch_id,
            items=[b'{"s":%d,"k":%d}' % (number, k) for k in range(3)],
            start=0,
            total=3,
            chunk=0,
            chunks=1,
        )
        started = time.monotonic()
        self.producer.produce(self.topics.requests, key=batch_id, value=value, partition=1)
        self.producer.flush(10)
        return (self.reader.wait_for(batch_id.encode(), 4, 60) - started) * 1000


def big_backlog(items: int, prefix: str, priority: int | None = None) -> Backlog:
    """Return one batch of ``items`` at one item per request, in chunks of 1,000."""
    return Backlog(items, chunk_size=1000, items_per_request=1, prefix=prefix, priority=priority)


# --- 10: a small batch beside a big one -------------------------------------------------------


def _beside_big(
    ctx: Context, server: Server, fairness: str, items: int, *, smalls: bool
) -> dict[str, Any]:
    """Run a big batch on partition 0, with 3-item batches on partition 1 if ``smalls``."""
    settings = {"max_in_flight": CONCURRENCY, "fairness": fairness}
    big = big_backlog(items, "big")
    records = items + big.chunks
    latencies: list[float] = []
    with Rig(ctx, server, settings) as rig:
        started = rig.submit(big, 0)
        key = b"big0"
        if smalls:
            rig.reader.wait_for(key, min(2000, items // 4))  # the buffer is full by now
            number = 0
            while rig.reader.count(key) < records * 0.9:
                latencies.append(rig.small_batch(number))
                number += 1
                time.sleep(SMALL_EVERY_S)
        finished = rig.reader.wait_for(key, records)
    return {
        "items_per_s": items / (finished - started),
        "small_batches": len(latencies),
        "small_latency_ms": latencies,
    }


def _idle_latency(ctx: Context, server: Server, rounds: int) -> list[float]:
    with Rig(ctx, server, {"max_in_flight": CONCURRENCY}) as rig:
        for n in range(3):  # warm-up
            rig.small_batch(-1 - n)
        return [rig.small_batch(n) for n in range(rounds)]


def small_beside_big(ctx: Context) -> dict[str, Any]:
    """Scenario 10: a 3-item batch's latency while a big batch runs, and the big one's loss."""
    from bench.scenarios import Goal, result  # noqa: PLC0415 - a cycle otherwise

    items = ctx.size(30_000, 3_000)
    pairs = ctx.size(3, 1)
    alone: list[dict[str, Any]] = []
    fairs: list[dict[str, Any]] = []
    with ctx.server(LATENCY_MS) as server:
        idle = _idle_latency(ctx, server, ctx.size(20, 5))
        # Alone and beside the small batches in turns: this machine's load moves from
        # minute to minute, so the loss is the median of the ratios of neighbouring runs.
        for _ in range(pairs):
            alone.append(_beside_big(ctx, server, "batches", items, smalls=False))
            fairs.append(_beside_big(ctx, server, "batches", items, smalls=True))
        today = _beside_big(ctx, server, "partitions", items, smalls=True)
    idle_p50 = statistics.median(idle)
    ratios = [f["items_per_s"] / a["items_per_s"] for a, f in zip(alone, fairs, strict=True)]
    fair = {
        "items_per_s": statistics.median(f["items_per_s"] for f in fairs),
        "small_latency_ms": [ms for f in fairs for ms in f["small_latency_ms"]],
    }
    figures = {
        "big_items": items,
        "idle_p50_ms": idle_p50,
        "p50_ms": statistics.median(fair["small_latency_ms"]),
        "max_ms": max(fair["small_latency_ms"]),
        "p50_vs_idle": statistics.median(fair["small_latency_ms"]) / idle_p50,
        "today_p50_ms": statistics.median(today["small_latency_ms"]),
        "today_max_ms": max(today["small_latency_ms"]),
        "today_p50_vs_idle": statistics.median(today["small_latency_ms"]) / idle_p50,
        "big_alone_items_per_s": statistics.median(a["items_per_s"] for a in alone),
        "big_items_per_s": fair["items_per_s"],
        "big_throughput_loss": max(0.0, 1 - statistics.median(ratios)),
        "today_big_items_per_s": today["items_per_s"],
    }
    beside = (
        f"today (--fairness partitions): p50 {figures['today_p50_ms']:.0f} ms, max "
        f"{figures['today_max_ms']:.0f} ms ({figures['today_p50_vs_idle']:.1f}x idle)"
    )
    return result(
        f"10 a 3-item batch beside a {items:,}-item batch (1/request, C = {CONCURRENCY}, "
        f"L = {LATENCY_MS:.0f} ms), submit → last record",
        figures,
        [
            Goal("max_ms", "<=", 2000.0),
            Goal("p50_vs_idle", "<=", 5.0),
            Goal("big_throughput_loss", "<=", 0.05),
        ],
        {"idle_ms": idle, "alone": alone, "fair": fairs, "ratios": ratios, "today": today},
        beside,
    )


# --- 11: priorities -------------------------------------------------------------------------


def _two_priorities(ctx: Context, server: Server, fairness: str, items: int) -> dict[str, Any]:
    settings = {"max_in_flight": CONCURRENCY, "fairness": fairness}
    low, high = big_backlog(items, "low", 1), big_backlog(items, "high", 3)
    with Rig(ctx, server, settings) as rig:
        rig.submit(low, 0)
        rig.submit(high, 1)
        for key, backlog in ((b"low0", low), (b"high0", high)):
            rig.reader.wait_for(key, items + backlog.chunks)
        low_times, high_times = rig.reader.times(b"low0"), rig.reader.times(b"high0")
    start = max(low_times[0], high_times[0])
    end = min(low_times[-1], high_times[-1])
    in_window = [sum(1 for t in times if start <= t <= end) for times in (low_times, high_times)]
    seconds = [t for t in low_times if start <= t <= end]
    gaps = [b - a for a, b in itertools.pairwise(seconds)]
    return {
        "window_s": end - start,
        "low_results": in_window[0],
        "high_results": in_window[1],
        "share_ratio": in_window[1] / max(1, in_window[0]),
        "low_longest_gap_s": max(gaps, default=0.0),
    }


def priority_share(ctx: Context) -> dict[str, Any]:
    """Scenario 11: batches of priority 1 and 3 together: 3:1 calls, neither starves."""
    from bench.scenarios import Goal, result  # noqa: PLC0415 - a cycle otherwise

    items = ctx.size(20_000, 2_000)
    with ctx.server(LATENCY_MS) as server:
        ours = _two_priorities(ctx, server, "batches", items)
        today = _two_priorities(ctx, server, "partitions", items)
    figures = {
        "items_per_batch": items,
        "share_ratio": ours["share_ratio"],
        "share_error": abs(ours["share_ratio"] / 3 - 1),
        "low_longest_gap_s": ours["low_longest_gap_s"],
        "window_s": ours["window_s"],
        "today_share_ratio": today["share_ratio"],
    }
    beside = f"today (--fairness partitions): {today['share_ratio']:.2f}:1"
    return result(
        f"11 priorities 3 and 1 ({items:,} items each, 1/request, C = {CONCURRENCY}), "
        "results per batch while both run",
        figures,
        [Goal("share_error", "<=", 0.10), Goal("low_longest_gap_s", "<=", 1.0)],
        {"ours": ours, "today": today},
        beside,
    )
