"""Prometheus metrics of one replica, in a registry of its own (no process globals).

Names follow Prometheus conventions: a ``batch_runner_`` prefix, base units (seconds),
``_total`` for counters. librdkafka's statistics (``stats_cb``, JSON every
``statistics.interval.ms``) feed the consumer lag and producer queue gauges.
"""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from consumer.loop_metrics import LoopCounter, LoopCounterChild, LoopHistogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """Every metric the replica exports."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.items = LoopCounter(
            "batch_runner_items_total",
            "Items whose result was published, by status.",
            "status",
            registry=r,
        )
        self.chunks = Counter(
            "batch_runner_chunks_total",
            "Request messages finished: done (all records acknowledged) or dead_letter.",
            ["outcome"],
            registry=r,
        )
        self.http_requests = LoopCounter(
            "batch_runner_http_requests_total",
            "Inference HTTP requests by outcome: the status code, or timeout/connection.",
            "code",
            registry=r,
        )
        self.tokens = Counter(
            "batch_runner_tokens_total",
            "Tokens the inference answers report using (their usage), by kind: prompt or "
            "completion.",
            ["kind"],
            registry=r,
        )
        self.retries = Counter(
            "batch_runner_retries_total",
            "Inference requests retried after a retryable failure.",
            registry=r,
        )
        self.bisections = Counter(
            "batch_runner_bisections_total",
            "Work units refused for their input and split in two to find the bad items.",
            registry=r,
        )
        self.bisect_calls = Counter(
            "batch_runner_bisect_calls_total",
            "Inference requests sent for parts of refused work units (retries included).",
            registry=r,
        )
        self.isolated_items = Counter(
            "batch_runner_isolated_items_total",
            "Items refused alone after bisection (they got an error result, their unit's "
            "other items did not).",
            registry=r,
        )
        self.in_flight = Gauge(
            "batch_runner_in_flight_requests",
            "Inference HTTP requests on the wire now, per endpoint.",
            ["endpoint"],
            registry=r,
        )
        self.in_flight_limit = Gauge(
            "batch_runner_in_flight_limit",
            "The current bound on concurrent inference requests, per endpoint (live: the "
            "adaptive limit moves between --min-in-flight and --max-in-flight).",
            ["endpoint"],
            registry=r,
        )
        self.in_flight_limit_cuts = Counter(
            "batch_runner_in_flight_limit_cuts_total",
            "Times the adaptive limit was cut, per endpoint and cause: overload (429/503), "
            "timeout, queue (a standing queue in the server).",
            ["endpoint", "cause"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "batch_runner_event_loop_lag_seconds",
            "How late the replica's event loop ran its last 10 ms timer while requests "
            "were on the wire (0 when none are); measured with --concurrency adaptive only.",
            registry=r,
        )
        self.circuit_state = Gauge(
            "batch_runner_circuit_state",
            "Each endpoint's circuit: 0 closed, 1 half-open (a probe on the wire), 2 open.",
            ["endpoint"],
            registry=r,
        )
        self.circuit_opened = Counter(
            "batch_runner_circuit_opened_total",
            "Times an endpoint's circuit opened (requests stopped, probes once per interval).",
            ["endpoint"],
            registry=r,
        )
        self.batches = Gauge(
            "batch_runner_batches",
            "Batches whose status this replica owns, by state.",
            ["state"],
            registry=r,
        )
        self.batch_seconds = LoopHistogram(
            "batch_runner_batch_seconds",
            "Time from a batch's submit to its final state (owner's clock minus submit's).",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200, 86400),
            registry=r,
        )
        self.foreign_chunks = Counter(
            "batch_runner_foreign_chunks_total",
            "Chunks found on a partition other than their batch's (another key, or none): "
            "processed, and counted by their batch's owner through a progress record.",
            registry=r,
        )
        self.buffered_items = Gauge(
            "batch_runner_buffered_items",
            "Items received and not yet done.",
            registry=r,
        )
        self.paused_partitions = Gauge(
            "batch_runner_paused_partitions",
            "Partitions not fetched because of backpressure (paused, or waited out while "
            "the buffer is full).",
            registry=r,
        )
        self.stalled_partitions = Gauge(
            "batch_runner_stalled_partitions",
            "Assigned partitions with work that have not moved for the stall timeout.",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "batch_runner_assigned_partitions",
            "Partitions assigned to this replica.",
            registry=r,
        )
        self.inference_latency = LoopHistogram(
            "batch_runner_inference_latency_seconds",
            "Time of one inference HTTP request.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = LoopHistogram(
            "batch_runner_queue_wait_seconds",
            "Time a work unit waited to be sent (a free request slot, an open circuit), all "
            "attempts.",
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.item_latency = LoopHistogram(
            "batch_runner_item_latency_seconds",
            "From the request message's timestamp to its item's result being published.",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.resumed_items = Counter(
            "batch_runner_resumed_items_total",
            "Items not sent to the model again: a previous owner of the partition had their "
            "results acknowledged (item-level resume from the commit metadata).",
            registry=r,
        )
        # Results published, and how many of them the last successful commit covered:
        # about what a crash now would repeat (item-level resume bounds it to this).
        self.published = 0
        self.published_committed = 0
        self.uncommitted_items = Gauge(
            "batch_runner_uncommitted_items",
            "Results published since those the last successful commit covered.",
            registry=r,
        )
        self.uncommitted_items.set_function(lambda: self.published - self.published_committed)
        self.commits = Counter(
            "batch_runner_commits_total",
            "Successful offset commits.",
            registry=r,
        )
        self.commit_round_errors = Counter(
            "batch_runner_commit_round_errors_total",
            "Commit rounds that raised (logged with their traceback); the next round retries.",
            registry=r,
        )
        self.committed_offset = Gauge(
            "batch_runner_committed_offset",
            "Last offset committed by this replica, per partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "batch_runner_consumer_lag_messages",
            "Messages between the committed offset and the end of the partition (librdkafka).",
            ["topic", "partition"],
            registry=r,
        )
        self.dead_letters = Counter(
            "batch_runner_dead_letters_total",
            "Invalid request messages sent to the dead-letter topic, by kind.",
            ["kind"],
            registry=r,
        )
        self.producer_queue = Gauge(
            "batch_runner_producer_queue_messages",
            "Records waiting in the producer's local queue (librdkafka).",
            registry=r,
        )
        self.broker_rtt = Gauge(
            "batch_runner_broker_rtt_seconds",
            "Average broker round-trip time seen by the consumer (librdkafka).",
            ["broker"],
            registry=r,
        )
        # Children used on every work unit, looked up once.
        self.items_ok = self.items.labels("ok")
        self.items_error = self.items.labels("error")
        self.http_codes: dict[int | str, LoopCounterChild] = {}  # by code (see http_code)
        # Per (topic, partition): messages past the consumer's position (not yet fetched),
        # from the latest statistics; the stall check reads it.
        self.unfetched: dict[tuple[str, int], int] = {}

    def fold(self) -> None:
        """Count the observations kept by the histograms (see :class:`LoopHistogram`)."""
        for histogram in (
            self.inference_latency, self.queue_wait, self.item_latency, self.batch_seconds
        ):  # fmt: skip
            histogram.fold()

    def http_code(self, code: int | str) -> LoopCounterChild:
        """Return the ``http_requests`` counter of ``code`` (a status, timeout, connection)."""
        child = self.http_codes.get(code)
        if child is None:
            child = self.http_codes[code] = self.http_requests.labels(str(code))
        return child

    def consumer_stats(self, text: str) -> dict[str, Any]:
        """Take librdkafka's consumer statistics JSON (``stats_cb``); return it parsed."""
        stats: dict[str, Any] = orjson.loads(text)
        unfetched: dict[tuple[str, int], int] = {}
        for topic, info in stats.get("topics", {}).items():
            for partition, values in info.get("partitions", {}).items():
                if partition == "-1" or not values.get("desired", True):
                    continue
                end = _valid(values.get("hi_offset"))
                committed = _valid(values.get("committed_offset"))
                if end is not None and committed is not None:
                    self.consumer_lag.labels(topic, partition).set(max(0, end - committed))
                position = next(
                    (
                        p
                        for p in (
                            _valid(values.get("app_offset")),
                            committed,
                            _valid(values.get("next_offset")),
                        )
                        if p is not None
                    ),
                    None,
                )
                if end is not None and position is not None:
                    unfetched[(topic, int(partition))] = max(0, end - position)
        self.unfetched = unfetched
        for name, broker in stats.get("brokers", {}).items():
            rtt = broker.get("rtt", {}).get("avg")
            if isinstance(rtt, int | float) and rtt > 0:
                self.broker_rtt.labels(name).set(rtt / 1_000_000)
        return stats

    def producer_stats(self, text: str) -> dict[str, Any]:
        """Take librdkafka's producer statistics JSON (``stats_cb``); return it parsed."""
        stats: dict[str, Any] = orjson.loads(text)
        count = stats.get("msg_cnt")
        if isinstance(count, int):
            self.producer_queue.set(count)
        return stats


def _valid(offset: object) -> int | None:
    """Return a statistics offset, or ``None`` for librdkafka's "invalid" (negative) values."""
    return offset if isinstance(offset, int) and offset >= 0 else None
