"""What happened to a work unit: its predictions, or one error its items share."""

from __future__ import annotations

from typing import NamedTuple

from schemas.error_kinds import ResultErrorKind  # noqa: TC001 - NamedTuple reads it at run time


class Outcome(NamedTuple):
    """What happened to a work unit.

    Exactly one of ``predictions`` (one JSON text per item, in order) and ``error_kind``
    is set. ``attempts`` counts HTTP requests made; ``latency_ms`` is the wall time from
    the first attempt to the final answer, backoff included, waits for a free request
    slot excluded; ``queue_ms`` is those waits. ``final`` marks an error that is the
    endpoint's deterministic answer to this input (not retried, or the same HTTP 500
    over and over), as opposed to a budget that ran out: only such an error is worth
    splitting the unit for (:mod:`consumer.bisect`).

    A named tuple, not a frozen dataclass: one is made per unit, and a frozen
    dataclass's ``__init__`` sets each of its eight fields through ``object.__setattr__``.
    """

    predictions: list[bytes] | None
    attempts: int
    latency_ms: float
    error_kind: ResultErrorKind | None = None
    error_message: str | None = None
    http_status: int | None = None
    queue_ms: float = 0.0
    final: bool = False
