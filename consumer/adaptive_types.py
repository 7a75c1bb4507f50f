"""The adaptive limit's vocabulary: what an answer says, why a cut was made, the knobs.

:mod:`consumer.adaptive` holds the rules that use them (and re-exports these names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Signal(StrEnum):
    """What one answer says about the endpoint's capacity."""

    OK = "ok"
    """A successful answer: its round trip time is a sample."""
    OVERLOAD = "overload"
    """429 or 503: the server refused the request for lack of capacity."""
    TIMEOUT = "timeout"
    """No answer within the request timeout: treated as overload."""
    IGNORE = "ignore"
    """An answer that says nothing about capacity."""


class Cause(StrEnum):
    """Why the limit was cut (:attr:`AdaptiveLimit.last_cut`)."""

    OVERLOAD = "overload"
    """A 429 or 503 to a request sent after the last cut."""
    TIMEOUT = "timeout"
    """A request sent after the last cut got no answer in time."""
    QUEUE = "queue"
    """A standing queue in the server: the fastest answers of a round were slow."""


@dataclass(frozen=True, slots=True)
class Cut:
    """One cut of the limit: why, when, and from what to what."""

    cause: Cause
    at: float
    was: int
    limit: int


@dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    """The knobs of :class:`AdaptiveLimit`; validated on construction (``ValueError``)."""

    min_limit: int = 1
    max_limit: int = 64
    initial_limit: int = 8
    """Where the limit starts (clamped into ``[min_limit, max_limit]``)."""
    backoff: float = 0.9
    """Factor applied to the limit on an overload answer or a timeout."""
    tolerance: float = 1.15
    """A round's fastest round trip above this x the no-load time means queueing.

    1.15 rather than 1.3: the delay rule settles where a round's fastest answers stand
    near this level, and 1.3 left the server a standing queue whose p99 round trip was
    about 2 x its no-load time (simulated and in scenario 7); 1.15 moves it to 1.7-1.8 x
    for about 1% of the server's throughput (bench/results/README.md, round 8).
    """
    probe: float = 1.0
    """Additive increase per round of ``limit`` successful answers."""
    rtt_window_s: float = 30.0
    """How long the smallest round trip time is remembered."""
    plateau_s: float = 1.0
    """After an overload answer, how long the limit stays below the level refused."""
    max_hold_s: float = 10.0
    """Longest ``Retry-After`` that extends that plateau."""
    refusals_rule_s: float = 30.0
    """After a 429 or 503, how long the queueing-delay rule stands aside (refusals rule)."""

    def __post_init__(self) -> None:
        """Check every field."""
        if self.min_limit < 1 or self.max_limit < self.min_limit:
            raise ValueError(
                f"need 1 <= min_limit <= max_limit, got {self.min_limit} and {self.max_limit}"
            )
        if self.initial_limit < 1:
            raise ValueError(f"initial_limit must be >= 1, got {self.initial_limit}")
        if not 0.0 < self.backoff < 1.0:
            raise ValueError(f"backoff must be in (0, 1), got {self.backoff}")
        if not (math.isfinite(self.tolerance) and self.tolerance > 1.0):
            raise ValueError(f"tolerance must be a finite number > 1, got {self.tolerance}")
        for name in ("probe", "rtt_window_s", "plateau_s", "refusals_rule_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.max_hold_s) and self.max_hold_s >= 0):
            raise ValueError(f"max_hold_s must be a finite number >= 0, got {self.max_hold_s}")
