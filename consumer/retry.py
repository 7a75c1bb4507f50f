"""The retry policy: which failures retry, how long to wait, and when to give up.

Pure logic: no HTTP client, no clock, no sleeping. The dispatcher classifies a failed
inference call as a :class:`~schemas.error_kinds.ResultErrorKind` (plus the HTTP status
for ``http_status``), asks :meth:`RetryPolicy.should_retry`, and if so asks
:meth:`RetryPolicy.next_delay` how long to wait, passing the server's ``Retry-After``
parsed by :func:`parse_retry_after`. ``None`` from ``next_delay`` means give up: the
items get an ``error`` result and the batch goes on.

Which failures retry (``schemas.error_kinds`` declares the kinds that always and never
do):

* ``connection`` (refused, reset, DNS) and ``timeout``: transient, retried.
* ``http_status``: only the statuses in ``retry_statuses`` (by default 408, 425, 429, 500,
  502, 503, 504). Every other 4xx and 5xx fails at once: the same request gets the same
  answer. A 2xx is success and never a failure, so never retried; a 2xx whose body is
  unusable is a ``bad_response``.
* ``bad_response``: a body that is not the expected JSON shape (truncated, HTML from a
  proxy, invalid JSON). Retried: such bodies are usually a transient fault of a proxy, a
  load balancer or a restarting server, and the attempt and time caps bound the cost
  when they are not.
* ``wrong_count``: a well-formed answer with a different number of predictions than
  inputs. Not retried: it is the model's deterministic answer to this input, and asking
  again yields the same. Nor are ``response_too_large``, ``result_too_large``,
  ``bad_item`` and ``unknown_target``, which the same input always meets again.

Backoff is exponential with *full jitter* (AWS Architecture Blog, "Exponential Backoff And
Jitter"): after attempt ``n`` wait ``uniform(0, min(max_delay_s, base_delay_s * 2**(n-1)))``,
which spreads retries of many clients hitting one recovering server. A server-sent
``Retry-After`` is a floor: the wait is ``max(min(retry_after, max_retry_after_s),
jittered backoff)``, so a server's hint is honoured (up to a cap, so a hostile or broken
header cannot park a work unit for hours) while the jitter still spreads clients when the
hint is short.

One more way to give up early: a model that fails on its input answers HTTP 500 with the
same message every time (MLServer and KServe do for an input of the wrong shape). When one
work unit has had the same 500 answer ``max_same_error`` times (3 by default),
:meth:`RetryPolicy.answer_is_final` says that answer is final: waiting ten minutes would
only repeat it. 502, 503 and 504 are never judged so (a gateway or a restarting server
repeats its "unavailable" page until it is back), nor is a 500 with an empty body.

Two caps, whichever comes first: ``max_attempts`` attempts, and ``max_elapsed_s`` seconds
since the work unit's first attempt started (the original example's "60 retries, about 10
minutes"). A wait that would end past the time budget is not started: ``next_delay``
returns ``None`` at once rather than sleep only to give up.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from schemas.error_kinds import ALWAYS_RETRIED, NEVER_RETRIED, ResultErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Request Timeout, Too Early, Too Many Requests, and the transient 5xx."""

REPEATABLE_FAILURE_STATUSES: frozenset[int] = frozenset({500})
"""Statuses whose same answer, repeated, means the model fails on the input itself."""

# RFC 9110 delay-seconds is 1*DIGIT; a decimal fraction is accepted too, as harmless leniency.
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")

# 2.0 ** 1024 overflows a float; far beyond any max_delay_s anyway.
_MAX_EXPONENT = 1023


def is_retryable_status(
    status: int, retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
) -> bool:
    """Return whether an HTTP ``status`` is worth retrying.

    A 2xx is success, not a failure, so it is never "retryable"; nor is any status outside
    ``retry_statuses`` (400, 401, 403, 404, 422, 501, ... fail at once).
    """
    return status in retry_statuses


def should_retry(
    kind: ResultErrorKind,
    status: int | None,
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES,
) -> bool:
    """Return whether a failure of this ``kind`` (and HTTP ``status``) is worth retrying.

    ``status`` is required for :attr:`ResultErrorKind.HTTP_STATUS` (:class:`ValueError`
    without it) and ignored for the other kinds. See the module docstring for the rules.
    """
    if kind in ALWAYS_RETRIED:
        return True
    if kind in NEVER_RETRIED:
        return False
    if status is None:
        raise ValueError(f"a {kind} failure needs its HTTP status")
    return is_retryable_status(status, retry_statuses)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Parse a ``Retry-After`` header into seconds to wait from ``now``.

    ``value`` is delay-seconds (``"120"``) or an HTTP-date (RFC 9110: IMF-fixdate
    ``"Sun, 06 Nov 1994 08:49:37 GMT"``, and the obsolete RFC 850 and asctime forms, all
    UTC). ``now`` is the wall clock in seconds since the epoch (``time.time()``, not
    ``time.monotonic()``), needed for dates. Returns ``None`` for a missing, negative or
    unparseable value, and ``0.0`` for a date in the past. Never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" and asctime dates come back naive; HTTP dates are UTC
        when = when.replace(tzinfo=UTC)
    try:
        delay = when.timestamp() - now
    except (OverflowError, OSError):
        return None
    if not math.isfinite(delay):
        return None
    return max(delay, 0.0)


def _check_finite(name: str, value: float, minimum: float) -> None:
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """How patiently to retry one work unit (one HTTP request of k items).

    Defaults follow the original example: up to 60 attempts within about 10 minutes.
    ``retry_statuses`` accepts any collection of ints and is stored as a ``frozenset``.
    All values are validated on construction (:class:`ValueError` naming the field).
    """

    max_attempts: int = 60
    """Attempts in all, the first included (1 means never retry)."""
    max_elapsed_s: float = 600.0
    """Time budget from the start of the first attempt; no wait may end past it."""
    base_delay_s: float = 0.5
    """Backoff cap after the first attempt; it doubles with every attempt."""
    max_delay_s: float = 30.0
    """Upper bound of the backoff cap."""
    retry_statuses: frozenset[int] = field(default=DEFAULT_RETRY_STATUSES)
    """HTTP statuses that are retried; every other status fails at once."""
    max_retry_after_s: float = 120.0
    """Cap on a server-sent ``Retry-After``."""
    max_same_error: int = 3
    """The same HTTP 500 answer this many times is final (0: never judged so)."""

    def __post_init__(self) -> None:
        """Validate every field, and store ``retry_statuses`` as a frozenset."""
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not math.isfinite(self.max_elapsed_s) or self.max_elapsed_s <= 0:
            raise ValueError(f"max_elapsed_s must be a finite number > 0, got {self.max_elapsed_s}")
        _check_finite("base_delay_s", self.base_delay_s, 0.0)
        _check_finite("max_delay_s", self.max_delay_s, 0.0)
        if self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"max_delay_s must be >= base_delay_s, got {self.max_delay_s} < {self.base_delay_s}"
            )
        _check_finite("max_retry_after_s", self.max_retry_after_s, 0.0)
        if self.max_same_error < 0:
            raise ValueError(f"max_same_error must be >= 0, got {self.max_same_error}")
        statuses = self._statuses(self.retry_statuses)
        object.__setattr__(self, "retry_statuses", statuses)

    @staticmethod
    def _statuses(values: Iterable[int]) -> frozenset[int]:
        statuses = frozenset(values)
        for status in statuses:
            if not 400 <= status <= 599:
                raise ValueError(
                    f"retry_statuses must be HTTP error statuses (400-599), got {status!r}"
                )
        return statuses

    def is_retryable_status(self, status: int) -> bool:
        """Return whether ``status`` is one of this policy's ``retry_statuses`` (never 2xx)."""
        return is_retryable_status(status, self.retry_statuses)

    def should_retry(self, kind: ResultErrorKind, status: int | None) -> bool:
        """Return whether a failure is worth retrying under this policy (see module docs)."""
        return should_retry(kind, status, self.retry_statuses)

    def answer_is_final(self, status: int, body: str, times: int) -> bool:
        """Return whether an answer seen ``times`` times for one work unit is final.

        True for an HTTP 500 with a non-empty ``body`` seen ``max_same_error`` times or
        more (and ``max_same_error`` is not 0): the model's deterministic failure on the
        input. Never for other statuses (see the module docstring).
        """
        return (
            self.max_same_error > 0
            and status in REPEATABLE_FAILURE_STATUSES
            and bool(body.strip())
            and times >= self.max_same_error
        )

    def backoff_cap(self, attempt: int) -> float:
        """Return the upper bound of the jittered wait after ``attempt`` attempts (>= 1)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        exponent = min(attempt - 1, _MAX_EXPONENT)
        return min(self.max_delay_s, self.base_delay_s * 2.0**exponent)

    def next_delay(
        self,
        attempt: int,
        elapsed_s: float,
        retry_after_s: float | None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Return the seconds to wait before the next attempt, or ``None`` to give up.

        ``attempt`` is the number of attempts already made (>= 1), ``elapsed_s`` the time
        since the first attempt started (monotonic clock), ``retry_after_s`` the server's
        hint from :func:`parse_retry_after` (or ``None``), ``rand`` a source of uniform
        numbers in [0, 1] (injected by tests).

        ``None`` when the attempts are used up (``attempt >= max_attempts``) or the wait
        would end past the time budget (``elapsed_s + delay > max_elapsed_s``). Otherwise
        ``rand() * backoff_cap(attempt)`` (full jitter), raised to ``retry_after_s``
        capped at ``max_retry_after_s`` when the server sent one.
        """
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        if not math.isfinite(elapsed_s) or elapsed_s < 0:
            raise ValueError(f"elapsed_s must be a finite number >= 0, got {elapsed_s!r}")
        if retry_after_s is not None and (math.isnan(retry_after_s) or retry_after_s < 0):
            raise ValueError(f"retry_after_s must be >= 0 or None, got {retry_after_s!r}")
        if attempt >= self.max_attempts:
            return None
        fraction = rand()
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"rand() must return a number in [0, 1], got {fraction!r}")
        delay = fraction * self.backoff_cap(attempt)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        if elapsed_s + delay > self.max_elapsed_s:
            return None
        return delay
