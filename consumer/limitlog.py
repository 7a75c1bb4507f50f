"""What one endpoint's concurrency limit tells the operator: its gauge, its cuts, its log.

:class:`LimitReport` keeps ``batch_runner_in_flight_limit`` current, counts each cut of an
adaptive limit by its cause (``batch_runner_in_flight_limit_cuts_total``) and logs the
limit when it moved a lot: by half of the last logged value and by at least two
requests, at most once per ``LOG_LIMIT_EVERY_S`` (a limit swinging around a busy
server's capacity would otherwise log a line a second; the line says how low and high it
went meanwhile). At debug level it also logs every cut, and the limit every
``TRACE_LIMIT_EVERY_S`` while it moves: a trace (``bench/adaptive_trace.py`` reads it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.adaptive import Cut
    from consumer.metrics import Metrics

log = logging.getLogger("consumer.guard")  # the guard's lines, as before they moved here

# The limit is logged when it moved this much (a share of the last logged value) ...
LOG_LIMIT_CHANGE = 0.5
# ... and by at least this many requests, ...
LOG_LIMIT_MIN_STEP = 2
# ... at most once per this many seconds.
LOG_LIMIT_EVERY_S = 10.0
# At debug level the limit is also logged every this many seconds when it changed (a trace).
TRACE_LIMIT_EVERY_S = 0.25


class LimitReport:
    """The gauge, cut counter and log lines of one endpoint's concurrency limit."""

    def __init__(self, endpoint: str, start: int, metrics: Metrics) -> None:
        """Report endpoint ``endpoint``'s limit, which starts at ``start``."""
        self.endpoint = endpoint
        self._metrics = metrics
        self._gauge = metrics.in_flight_limit.labels(endpoint)
        self._gauge.set(start)
        self._logged_limit = start
        self._logged_at = -LOG_LIMIT_EVERY_S
        self._traced_at = -TRACE_LIMIT_EVERY_S
        self._low = self._high = start  # the limit's range since the last line

    def cut(self, cut: Cut, in_flight: int, no_load: float | None) -> None:
        """Count an adaptive limit's cut by its cause; log it at debug level."""
        self._metrics.in_flight_limit_cuts.labels(self.endpoint, cut.cause.value).inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "concurrency limit cut",
                extra={
                    "endpoint": self.endpoint,
                    "cause": cut.cause.value,
                    "was": cut.was,
                    "limit": cut.limit,
                    "in_flight": in_flight,
                    "no_load_ms": None if no_load is None else round(no_load * 1000, 2),
                    "t": round(cut.at, 4),
                },
            )

    def changed(self, limit: int, now: float, in_flight: int) -> None:
        """Take the limit's new value: the gauge, and a line if it moved a lot."""
        self._gauge.set(limit)
        self._low, self._high = min(self._low, limit), max(self._high, limit)
        if now - self._traced_at >= TRACE_LIMIT_EVERY_S and log.isEnabledFor(logging.DEBUG):
            self._traced_at = now
            log.debug(
                "concurrency limit now",
                extra={"endpoint": self.endpoint, "limit": limit, "in_flight": in_flight,
                       "t": round(now, 4)},
            )  # fmt: skip
        step = abs(limit - self._logged_limit)
        if now - self._logged_at < LOG_LIMIT_EVERY_S or step < max(
            LOG_LIMIT_MIN_STEP, LOG_LIMIT_CHANGE * self._logged_limit
        ):
            return
        log.info(
            "concurrency limit changed",
            extra={
                "endpoint": self.endpoint,
                "limit": limit,
                "was": self._logged_limit,
                "low": self._low,
                "high": self._high,
                "since_s": None if self._logged_at < 0 else round(now - self._logged_at, 1),
            },
        )
        self._logged_limit = self._low = self._high = limit
        self._logged_at = now
