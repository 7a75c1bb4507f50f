"""Whether the Kafka cluster is reachable, told once per change instead of once per retry.

While brokers are away librdkafka reports every failed connection attempt of every
client (consumer, producer, their coordinator and bootstrap connections): tens of lines a
second per replica, which bury everything else. :class:`ClusterWatch` sits between those
reports and the log. The first connection failure logs one error ("the Kafka cluster is
unreachable", with the reason); further failures are counted, with a warning summary every
``summary_every_s``; the first sign that the cluster answers again (a broker up in the
client statistics, a delivered record, a confirmed commit) logs one line with how long it
lasted and how many attempts failed. Everything else passes through unchanged.

The clock is injected (``time.monotonic`` by default) so tests can drive it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

# librdkafka log facilities that report a broker connection failing or dropping.
_CONNECTION_FACILITIES = frozenset({"FAIL", "CONNECT", "ERROR", "DISCONNECT"})
# Error codes (error_cb) that only say brokers are unreachable.
_CONNECTION_ERRORS = frozenset(
    {
        KafkaError._TRANSPORT,  # noqa: SLF001 - librdkafka's own codes
        KafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
        KafkaError._RESOLVE,  # noqa: SLF001
        KafkaError._TIMED_OUT,  # noqa: SLF001
    },
)
SUMMARY_EVERY_S = 30.0
# A sign of life counts only this long after the last failure: right after a broker
# goes, statistics still show it up, and right after it is back, connections that were
# already retrying may fail once more.
QUIET_S = 2.0


class ClusterWatch(logging.Filter):
    """Counts connection failures and logs the cluster's reachability when it changes.

    Installed as a filter on librdkafka's logger, it swallows connection-failure lines
    while the cluster is known to be away. Thread-safe: librdkafka logs from its own
    threads and the callbacks run on the consumer thread and the event loop.
    """

    def __init__(
        self,
        *,
        summary_every_s: float = SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start with the cluster assumed reachable."""
        super().__init__()
        self._summary_every_s = summary_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.outages = 0  # how many times the cluster became unreachable
        self._failures = 0
        self._since_summary = 0
        self._last_summary = 0.0
        self._last_failure = 0.0

    @property
    def reachable(self) -> bool:
        """Whether no connection failure has been seen since the cluster last answered."""
        return self.down_since is None

    def filter(self, record: logging.LogRecord) -> bool:
        """Let a librdkafka log line through unless it is a counted connection failure."""
        text = record.getMessage()
        facility = text.split(" ", 1)[0]
        if record.levelno < logging.WARNING or facility not in _CONNECTION_FACILITIES:
            return True
        self.failed(text.split("]: ", 1)[-1])
        return False

    def error(self, error: KafkaError) -> bool:
        """Take an ``error_cb`` error; return whether it was a connection failure (counted)."""
        if error.code() not in _CONNECTION_ERRORS or error.fatal():
            return False
        self.failed(error.str())
        return True

    def failed(self, reason: str) -> None:
        """Count one connection failure; log the change, or a summary now and then."""
        now = self._clock()
        with self._lock:
            self._last_failure = now
            self._failures += 1
            self._since_summary += 1
            if self.down_since is None:
                self.down_since = self._last_summary = now
                self._since_summary = 0
                self.outages += 1
                log.error("the Kafka cluster is unreachable: retrying", extra={"reason": reason})
                return
            if now - self._last_summary < self._summary_every_s:
                return
            failed, self._since_summary, self._last_summary = self._since_summary, 0, now
            down_s = now - self.down_since
        log.warning(
            "the Kafka cluster is still unreachable",
            extra={"down_s": round(down_s, 1), "failed_attempts": failed, "reason": reason},
        )

    def answered(self) -> None:
        """Record a sign that the cluster answers; log the recovery if it was away.

        Ignored within ``QUIET_S`` of the last failure (a stale or partial sign).
        """
        now = self._clock()
        with self._lock:
            if self.down_since is None or now - self._last_failure < QUIET_S:
                return
            since, self.down_since = self.down_since, None
            down_s, failures = now - since, self._failures
            self._failures = 0
        log.info(
            "the Kafka cluster answers again",
            extra={"down_s": round(down_s, 1), "failed_attempts": failures},
        )

    def statistics(self, brokers: dict[str, dict[str, object]]) -> None:
        """Take the ``brokers`` part of librdkafka's statistics: a broker UP is an answer."""
        if any(b.get("state") == "UP" and b.get("nodeid", -1) != -1 for b in brokers.values()):
            self.answered()
