"""Rate limits as OpenAI-compatible servers state them, read from answers (pure, clock-free).

Two kinds of header:

* On a 429 (or 503), how long to wait: ``retry-after-ms`` (milliseconds, as OpenAI and
  LiteLLM send it) before ``Retry-After`` (seconds or an HTTP date):
  :func:`retry_after_s`, which the dispatcher hands to the retry policy.
* On every answer, what is left of the endpoint's budget:
  ``x-ratelimit-remaining-requests`` / ``-tokens``, with ``x-ratelimit-limit-*`` and
  ``x-ratelimit-reset-*`` (a duration: ``1s``, ``6m0s``, ``20ms``). A
  :class:`RateLimitPacer` per endpoint turns them into a wait before each request starts,
  so the replica slows down *before* the server answers 429. What is left counts the
  replica's other requests still in flight as spent (the server may not have counted
  them yet):

  - nothing left: no request starts until the reset;
  - requests: under ``low_fraction`` of the limit left (or any amount when the limit is
    not stated), the requests left are spread evenly over the time to the reset (one
    every ``reset / remaining`` seconds);
  - tokens: under ``low_fraction`` of the limit left, at most ``spread_when_low``
    requests start per reset period (how many tokens the next requests take is not
    known in advance).

  The pace lasts until the reset the server stated; a later answer replaces it.

Times are seconds on a monotonic clock the caller passes in (``now``); nothing here sleeps.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from consumer.retry import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Mapping

_DURATION: Final = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+(?:\.\d+)?)ms)?",
)
_SECONDS: Final = re.compile(r"\d+(?:\.\d+)?")
_UNITS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Per budget: the names of its remaining, limit and reset headers (read on every answer).
_BUDGET_HEADERS: Final = tuple(
    (
        dimension,
        tuple(f"x-ratelimit-{kind}-{dimension}" for kind in ("remaining", "limit", "reset")),
    )
    for dimension in ("requests", "tokens")
)


STATED: Final = tuple(remaining for _, (remaining, _, _) in _BUDGET_HEADERS)
"""The headers without which an answer states no budget (:meth:`RateLimitPacer.observe`)."""


def parse_duration(text: str | None) -> float | None:
    """Parse a reset duration (``1s``, ``6m0s``, ``1h2m3.5s``, ``250ms``, ``0.5``) in seconds.

    None for a missing or unreadable value; never raises.
    """
    if text is None:
        return None
    value = text.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    found = _DURATION.fullmatch(value)
    if not value or found is None:
        return None
    return sum(float(amount) * _UNITS[unit] for unit, amount in found.groupdict().items() if amount)


def _count(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


def retry_after_s(headers: Mapping[str, str], wall_now: float) -> float | None:
    """Return the wait an answer asks for: ``retry-after-ms``, else ``Retry-After``.

    ``headers`` look up case-insensitively (aiohttp's do); ``wall_now`` is
    ``time.time()`` (for HTTP dates). None when the answer asks for nothing readable.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis.strip())
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value / 1000.0
    return parse_retry_after(headers.get("retry-after"), wall_now)


@dataclass(slots=True)
class RateLimitPacer:
    """One endpoint's pace, from the ``x-ratelimit-*`` headers of its answers."""

    low_fraction: float = 0.1
    """Below this share of the limit left, requests are spread out."""
    spread_when_low: int = 10
    """Tokens low: at most this many requests start per reset period."""
    default_reset_s: float = 1.0
    """The reset assumed when an answer states a budget but no reset."""
    max_wait_s: float = 120.0
    """No reset is believed longer than this (a broken header must not park the endpoint)."""
    in_flight: int = 0
    """Requests to the endpoint on the wire now (the dispatcher counts them)."""
    pause_until: float = 0.0
    spacing_s: float = 0.0
    spacing_until: float = 0.0
    next_start: float = 0.0
    paced: bool = False
    """Whether an answer ever stated a budget: until one does, a request may always start."""

    def observe(self, headers: Mapping[str, str], now: float, in_flight: int = 0) -> None:
        """Take the budget an answer states (its ``x-ratelimit-*`` headers) into account.

        ``in_flight`` is how many other requests to the endpoint are on the wire: they
        will spend some of what is left.
        """
        self.paced = True
        for dimension, (remaining_name, limit_name, reset_name) in _BUDGET_HEADERS:
            text = headers.get(remaining_name)
            if text is None:  # the usual answer: no budget stated
                continue
            stated = _count(text)
            if stated is None:
                continue
            remaining = stated - in_flight if dimension == "requests" else stated
            limit = _count(headers.get(limit_name))
            reset = parse_duration(headers.get(reset_name))
            reset = min(self.default_reset_s if reset is None else reset, self.max_wait_s)
            if remaining <= 0:
                self.pause_until = max(self.pause_until, now + reset)
                continue
            if limit is not None and remaining >= limit * self.low_fraction:
                continue
            if dimension == "requests":
                spacing = reset / remaining
            else:
                spacing = reset / self.spacing_when_low_count(remaining)
            if now >= self.spacing_until or spacing > self.spacing_s:
                self.spacing_s = spacing
                self.spacing_until = now + reset

    def spacing_when_low_count(self, remaining_tokens: int) -> int:
        """How many requests may start per reset period when ``remaining_tokens`` are left."""
        return max(1, min(self.spread_when_low, remaining_tokens))

    def ready(self, now: float) -> bool:
        """Whether a request may start at ``now``: :meth:`delay` would say 0 and reserve nothing."""
        return now >= self.pause_until and (self.spacing_s <= 0 or now >= self.spacing_until)

    def paused_for(self, now: float) -> float:
        """Return how long the endpoint is paused from ``now`` (nothing is reserved)."""
        return max(0.0, self.pause_until - now)

    def delay(self, now: float) -> float:
        """Reserve the next request's start; return how long to wait for it (0: start now)."""
        start = max(now, self.pause_until)
        if self.spacing_s > 0 and start < self.spacing_until:
            start = max(start, self.next_start)
            self.next_start = start + self.spacing_s
        return start - now
