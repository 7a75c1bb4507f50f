"""The circuit breaker of one endpoint: stop sending to a model server that is down.

Pure logic: no HTTP, no clock, no sleeping. Before sending, the dispatcher asks
:meth:`CircuitBreaker.admit`; after each request it reports what the outcome says about
the server with :meth:`CircuitBreaker.record`. Three states, as in resilience4j:

* **closed**: requests go through. The circuit opens after ``failures`` requests in a row
  got no answer at all (a refused or reset connection, a timeout), or when at least
  ``error_share`` of the last ``window`` requests were refused or unanswered (502, 503,
  504, no answer).
* **open**: nothing is sent. After ``probe_interval_s``, or the server's ``Retry-After``
  if that is longer (capped at ``max_retry_after_s``), the next request to ask becomes
  the probe and the circuit is half-open. Each failed probe doubles the interval, up to
  ``probe_backoff_cap`` times ``probe_interval_s`` (resilience4j's exponential wait in
  the open state): a long outage costs the server a request every few seconds per
  replica, and recovery is noticed within that cap. Three times rather than more: the
  requests on the wire when an outage begins already cost about half a call per replica
  per second of a 30 s outage, and each second of the cap is a second a replica may
  still wait after the model is back.
* **half-open**: only the probe is on the wire; everyone else waits. An answer that shows
  a working server closes the circuit; a refusal or no answer opens it again for another
  interval. So a server that is down gets at most one request per ``probe_interval_s``
  from each replica, fewer as the outage lasts.

A 429 does not count against the server either: it says the server is up and busy, which
is the concurrency limit's business (:mod:`consumer.adaptive` and ``Retry-After``); a
breaker counting 429s would open on every overshoot of a busy server's capacity and
stop a replica whose only fault is sending a little too much. A 500 does not count:
models answer 500 for one bad input (and the retry policy stops repeating the same 500),
so poison items must not close the road for the good ones. Outcomes of requests sent
before the circuit opened that arrive while it is open are ignored: only the probe
decides. ``failures`` = 0 turns the breaker off.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from enum import StrEnum


class Circuit(StrEnum):
    """The state of a circuit."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Verdict(StrEnum):
    """What one request's outcome says about the server."""

    UP = "up"
    """An answer from a working server: 2xx, any 4xx (429 included: busy, not down), a 500."""
    REFUSED = "refused"
    """An answer refusing service: 502, 503, 504."""
    DOWN = "down"
    """No answer: the connection failed or the request timed out."""


REFUSING_STATUSES = frozenset({502, 503, 504})


def verdict_of(status: int | None) -> Verdict:
    """Return the verdict on an HTTP ``status`` (``None``: no answer at all)."""
    if status is None:
        return Verdict.DOWN
    return Verdict.REFUSED if status in REFUSING_STATUSES else Verdict.UP


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The knobs of :class:`CircuitBreaker`; validated on construction (``ValueError``)."""

    failures: int = 5
    """Requests in a row without an answer that open the circuit (0: never open)."""
    error_share: float = 0.5
    """Share of refused or unanswered requests among the last ``window`` that opens it."""
    window: int = 20
    """How many recent requests the share is taken over."""
    probe_interval_s: float = 1.0
    """Time between probes while the circuit is open."""
    max_retry_after_s: float = 120.0
    """Longest ``Retry-After`` that keeps the circuit open."""
    probe_backoff_cap: float = 3.0
    """Failed probes double the interval up to this many times ``probe_interval_s``."""

    def __post_init__(self) -> None:
        """Check every field."""
        if self.failures < 0:
            raise ValueError(f"failures must be >= 0, got {self.failures}")
        if not 0.0 < self.error_share <= 1.0:
            raise ValueError(f"error_share must be in (0, 1], got {self.error_share}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not (math.isfinite(self.probe_backoff_cap) and self.probe_backoff_cap >= 1):
            raise ValueError(f"probe_backoff_cap must be >= 1, got {self.probe_backoff_cap}")
        for name in ("probe_interval_s", "max_retry_after_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")

    @property
    def enabled(self) -> bool:
        """Whether the circuit can open at all."""
        return self.failures > 0


@dataclass(frozen=True, slots=True)
class Admission:
    """The breaker's answer to "may I send now?"."""

    send: bool
    probe: bool = False
    """The request is the half-open probe: report its outcome with ``probe=True``."""
    wait_s: float = 0.0
    """When not sending: the longest wait before asking again is worth it."""


SEND = Admission(send=True)  # the closed circuit's answer, every time


class CircuitBreaker:
    """The circuit of one endpoint."""

    def __init__(self, config: BreakerConfig) -> None:
        """Start closed, with no outcome seen."""
        self.config = config
        self.state = Circuit.CLOSED
        self.opens = 0  # how many times the circuit opened from closed
        self.open_since: float | None = None  # when it opened from closed (None: closed)
        self._probe_at = 0.0  # when open: the earliest time of the next probe
        self._in_a_row = 0  # requests in a row without an answer
        self._recent: collections.deque[bool] = collections.deque(maxlen=config.window)
        self._bad = 0  # refused or unanswered among _recent
        self._failed_probes = 0  # in a row, since the circuit last opened from closed
        # Whether another answer from a working server would change nothing: the circuit
        # is closed and the whole window of recent requests was answered. A further
        # answer (not the probe) leaves the state, the window and its counts as they are,
        # so record() may be skipped for it. Kept by record() and _open()/_close().
        self.all_up = False

    def admit(self, now: float) -> Admission:
        """Return whether a request may be sent at ``now``, and whether it is the probe."""
        if self.state is Circuit.CLOSED:
            return SEND
        if self.state is Circuit.OPEN:
            if now >= self._probe_at:
                self.state = Circuit.HALF_OPEN
                return Admission(send=True, probe=True)
            return Admission(send=False, wait_s=self._probe_at - now)
        return Admission(send=False, wait_s=self.probe_interval())

    def record(
        self,
        verdict: Verdict,
        now: float,
        *,
        probe: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        """Take a request's outcome into account (``probe``: it was the admitted probe)."""
        if probe:
            if self.state is not Circuit.HALF_OPEN:
                raise RuntimeError(f"a probe's outcome while the circuit is {self.state}")
            if verdict is Verdict.UP:
                self._close()
            else:
                self._failed_probes += 1
                self._open(now, retry_after_s)
            return
        if self.state is not Circuit.CLOSED or not self.config.enabled:
            return
        bad = verdict is not Verdict.UP
        self._in_a_row = self._in_a_row + 1 if verdict is Verdict.DOWN else 0
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._bad -= 1
        self._recent.append(bad)
        self._bad += bad
        full = len(self._recent) == self.config.window
        self.all_up = full and self._bad == 0 and self._in_a_row == 0
        if self._in_a_row >= self.config.failures or (
            full and self._bad >= self.config.error_share * self.config.window
        ):
            self.opens += 1
            self.open_since = now
            self._failed_probes = 0
            self._open(now, retry_after_s)

    def abandon_probe(self, now: float) -> None:
        """Forget the probe, cancelled before its outcome: the next request may probe at once."""
        if self.state is Circuit.HALF_OPEN:
            self.state = Circuit.OPEN
            self._probe_at = now

    def probe_interval(self) -> float:
        """Return the time from the circuit opening (again) to the next probe."""
        config = self.config
        doubled = config.probe_interval_s * 2.0 ** min(self._failed_probes, 30)
        return min(doubled, config.probe_interval_s * config.probe_backoff_cap)

    def _open(self, now: float, retry_after_s: float | None) -> None:
        wait = self.probe_interval()
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.config.max_retry_after_s))
        self.state = Circuit.OPEN
        self.all_up = False
        self._probe_at = now + wait
        self._in_a_row = 0
        self._recent.clear()
        self._bad = 0

    def _close(self) -> None:
        self.state = Circuit.CLOSED
        self.all_up = False  # (the window was emptied when it opened)
        self.open_since = None
