"""The replica's state as its operators see it: health inputs, gauges, stall checks.

:class:`StatusBoard` reads the pipeline's rooms (never changes them) and answers what the
operations server asks (:class:`~consumer.ops.ReplicaStatus`), refreshes the gauges before
a scrape, takes the Kafka clients' statistics and errors, and runs the stall check.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from consumer.progress import ReplicaState

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka import KafkaError
    from prometheus_client import CollectorRegistry

    from consumer.chunks import ChunkBook
    from consumer.connectivity import ClusterWatch
    from consumer.dispatcher import Dispatcher
    from consumer.metrics import Metrics
    from consumer.offsets import PartitionKey
    from consumer.progress import Stall, StallWatch
    from consumer.source import Source

log = logging.getLogger(__name__)


class StatusBoard:
    """What the replica reports about itself; the pipeline owns the state it reads."""

    def __init__(  # noqa: PLR0913 - every room the board reads, each named
        self,
        *,
        source: Source,
        book: ChunkBook,
        dispatcher: Dispatcher,
        cluster: ClusterWatch,
        watch: StallWatch,
        metrics: Metrics,
        fatal: Callable[[], BaseException | None],
        stopping: Callable[[], bool],
    ) -> None:
        """Read these rooms; ``fatal`` and ``stopping`` ask the pipeline."""
        self._source = source
        self._book = book
        self._dispatcher = dispatcher
        self._cluster = cluster
        self._watch = watch
        self._metrics = metrics
        self._fatal = fatal
        self._stopping = stopping

    # --- what the operations server asks (ReplicaStatus) ----------------------------------

    @property
    def fatal(self) -> BaseException | None:
        """The error that stopped the replica, if any."""
        return self._fatal()

    @property
    def stopping(self) -> bool:
        """Whether the replica was asked to stop (it may still be draining)."""
        return self._stopping()

    @property
    def joined(self) -> bool:
        """Whether the replica has joined its consumer group."""
        return self._source.joined

    @property
    def cluster_down_since(self) -> float | None:
        """Since when the Kafka cluster is unreachable (``time.monotonic()``), or ``None``."""
        return self._cluster.down_since

    @property
    def model_answering(self) -> bool:
        """Whether the inference endpoints answer."""
        return self._dispatcher.endpoint_answering()

    @property
    def open_circuits(self) -> dict[str, float]:
        """The endpoints whose circuit is open, with the seconds since it opened."""
        return self._dispatcher.open_circuits(time.monotonic())

    @property
    def stalls(self) -> dict[PartitionKey, Stall]:
        """The partitions found stalled at the last check."""
        return self._watch.stalls

    @property
    def registry(self) -> CollectorRegistry:
        """The replica's Prometheus registry."""
        return self._metrics.registry

    def partition_states(self) -> dict[str, dict[str, object]]:
        """Each assigned partition: paused or not, chunks in flight, idle time, stall."""
        now = time.monotonic()
        out: dict[str, dict[str, object]] = {}
        for tp in sorted(self._source.assignment):
            idle = self._watch.monitor.idle_for(tp, now)
            stall = self._watch.stalls.get(tp)
            out[f"{tp[0]}[{tp[1]}]"] = {
                **self._describe(tp),
                "unfetched": self._metrics.unfetched.get(tp),
                "idle_s": None if idle is None else round(idle, 1),
                "stalled": None if stall is None else str(stall.why),
            }
        return out

    def refresh_gauges(self) -> None:
        """Bring the gauges up to date (called when metrics are scraped)."""
        m = self._metrics
        for name, guard in self._dispatcher.guards.items():
            m.in_flight.labels(name).set(guard.limiter.in_use)
            m.in_flight_limit.labels(name).set(guard.limiter.limit)
        m.buffered_items.set(self._book.buffered_items)
        m.paused_partitions.set(len(self._source.paused | self._source.holding))
        m.assigned_partitions.set(len(self._source.assignment))
        m.stalled_partitions.set(len(self._watch.stalls))

    # --- stalls ------------------------------------------------------------------------------

    def check_progress(self, now: float, window_s: float) -> dict[PartitionKey, Stall]:
        """Find stalled partitions (logged when a stall starts and ends)."""
        replica = ReplicaState(
            buffer_full=self._book.full,
            model_failing=self._dispatcher.failing(window_s, now),
            circuit_open=bool(self._dispatcher.open_circuits(now)),
            retrying=frozenset(k for k in self._dispatcher.retrying if isinstance(k, tuple)),
        )
        return self._watch.check(now, self._has_work, replica, self._describe)

    def _has_work(self, tp: PartitionKey) -> bool:
        """Whether ``tp`` has chunks in flight or messages not yet fetched."""
        return bool(self._book.in_flight(tp)) or self.has_backlog(tp)

    def has_backlog(self, tp: PartitionKey) -> bool:
        """Whether ``tp`` has messages not yet fetched (from the latest statistics)."""
        return self._metrics.unfetched.get(tp, 0) > 0

    def _describe(self, tp: PartitionKey) -> dict[str, object]:
        return {
            "paused": tp in self._source.paused or tp in self._source.holding,
            "in_flight_chunks": len(self._book.in_flight(tp)),
        }


class ClientReports:
    """The Kafka clients' statistics and errors, taken into the metrics and the cluster watch."""

    def __init__(self, metrics: Metrics, cluster: ClusterWatch) -> None:
        """Report into ``metrics`` and ``cluster``."""
        self._metrics = metrics
        self._cluster = cluster

    def consumer_stats(self, text: str) -> None:
        """Take the consumer's statistics (``stats_cb``)."""
        self._cluster.statistics(self._metrics.consumer_stats(text).get("brokers", {}))

    def producer_stats(self, text: str) -> None:
        """Take the producer's statistics (``stats_cb``)."""
        self._cluster.statistics(self._metrics.producer_stats(text).get("brokers", {}))

    def consumer_error(self, error: KafkaError) -> None:
        """Take a consumer error (``error_cb``): counted when it is a connection failure."""
        if not self._cluster.error(error):
            extra = {"error": error.str(), "fatal": error.fatal()}
            log.warning("Kafka consumer error", extra=extra)
