"""One HTTP attempt of a work unit: what went wrong with it, and whether to try again.

The dispatcher sends the request and reads the usual answer itself (one coroutine
layer less per unit); :func:`read_answer` reads any other answer: the body of a 2xx
under the response size cap, or :class:`AttemptFailure` with the result error kind, the
status, the server's ``Retry-After`` (or ``retry-after-ms``) and the informative end of
an error body (:mod:`consumer.answers`). :func:`failed_attempt` names a timeout or a
connection failure, :func:`unreadable` a 2xx body the endpoint's codec could not read,
:func:`retry_delay` the wait before the next attempt (:class:`~consumer.retry.RetryPolicy`).
Limits and clocks are the dispatcher's.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, NamedTuple

import aiohttp

from consumer.answers import ResponseTooLargeError, error_snippet, read_capped, read_tail
from consumer.outcome import Outcome
from consumer.protocols import BadResponse, Codec, WrongCount
from consumer.ratelimits import retry_after_s
from schemas.error_kinds import ResultErrorKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from consumer.deadlines import Deadlines
    from consumer.guard import EndpointGuard, Ticket
    from consumer.metrics import Metrics
    from consumer.ratelimits import RateLimitPacer
    from consumer.retry import RetryPolicy

# Failures where the endpoint never answered (it may be down), as opposed to an answer.
_SILENT = frozenset({ResultErrorKind.TIMEOUT, ResultErrorKind.CONNECTION})


class Target(NamedTuple):
    """What a work unit's attempts at one endpoint use, looked up once per unit."""

    codec: Codec
    pacer: RateLimitPacer
    guard: EndpointGuard
    headers: Mapping[str, str] | None
    """The endpoint's own request headers (None: none; see :mod:`consumer.http_session`)."""
    routed: bool
    """Whether the codec chooses each request's URL (:func:`consumer.protocols.route`)."""


class UnitClock:
    """One work unit's attempts and waits, for its outcome and its retry budget.

    The time budget counts from the first attempt, without the waits on the endpoint
    (paused, circuit open) before later attempts; failed probes are not charged.
    """

    __slots__ = ("attempts", "charged", "endpoint_waits", "first_attempt", "queued", "started")

    def __init__(self, started: float) -> None:
        """Start the unit's clock at ``started`` (``time.monotonic()``)."""
        self.started = started
        self.first_attempt = started
        self.attempts = 0  # HTTP requests made
        self.charged = 0  # attempts counted against max_attempts (failed probes are not)
        self.queued = 0.0  # waits to be sent, all attempts (queue_ms)
        self.endpoint_waits = 0.0  # of which while the endpoint was paused or its circuit open

    def sent(self, ticket: Ticket) -> None:
        """Count an attempt and the waits before it."""
        self.attempts += 1
        self.charged += 1
        self.queued += ticket.endpoint_wait_s + ticket.queue_wait_s
        if self.attempts == 1:
            self.first_attempt = ticket.sent_at
        else:
            self.endpoint_waits += ticket.endpoint_wait_s

    def gave_back(self, ticket: Ticket) -> None:
        """Count the waits of a place given back unused (the endpoint's pace said wait)."""
        self.queued += ticket.endpoint_wait_s + ticket.queue_wait_s
        if self.attempts:
            self.endpoint_waits += ticket.endpoint_wait_s

    def free_attempt(self) -> None:
        """Do not count the last attempt against ``max_attempts``."""
        self.charged -= 1

    def elapsed(self, now: float) -> float:
        """Seconds since the first attempt, the waits on the endpoint excluded."""
        return max(0.0, now - self.first_attempt - self.endpoint_waits)


class AttemptFailure(Exception):  # noqa: N818 - a signal inside the dispatcher, not an API error
    """Why one attempt did not give predictions (``message`` may be extended by a retry)."""

    def __init__(
        self,
        kind: ResultErrorKind,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        body: str = "",
    ) -> None:
        """Name the failure: its kind, message, HTTP status, retry floor, error body."""
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.final = False  # the endpoint's deterministic answer to the input (set on retry)

    @property
    def unanswered(self) -> bool:
        """Whether the endpoint never answered (a timeout or a connection failure)."""
        return self.kind in _SILENT


def error_outcome(clock: UnitClock, failure: AttemptFailure) -> Outcome:
    """Return the outcome of a unit whose last attempt failed for good (``failure``)."""
    queued = clock.queued
    return Outcome(
        predictions=None,
        attempts=clock.attempts,
        latency_ms=(time.monotonic() - clock.started - queued) * 1000.0,
        error_kind=failure.kind,
        error_message=failure.message,
        http_status=failure.status,
        queue_ms=queued * 1000.0,
        final=failure.final,
    )


def unreadable(error: BadResponse) -> AttemptFailure:
    """Return the failure of a 2xx whose predictions the codec could not read."""
    if isinstance(error, WrongCount):
        return AttemptFailure(ResultErrorKind.WRONG_COUNT, str(error), 200)
    return AttemptFailure(ResultErrorKind.BAD_RESPONSE, str(error), 200)


async def read_answer(response: aiohttp.ClientResponse, status: int, max_bytes: int) -> bytes:
    """Return a 2xx answer's body under ``max_bytes``, or raise its :class:`AttemptFailure`.

    The dispatcher reads the usual answer (2xx, a declared length under the cap, not
    compressed) itself; this is every other answer: an undeclared or compressed 2xx
    body, one over the cap, an error status with its body's informative end.
    """
    if 200 <= status < 300:
        try:
            return await read_capped(response, max_bytes)
        except ResponseTooLargeError as exc:
            raise AttemptFailure(ResultErrorKind.RESPONSE_TOO_LARGE, str(exc), status) from None
    snippet = error_snippet(await read_tail(response, max_bytes))
    raise AttemptFailure(
        ResultErrorKind.HTTP_STATUS,
        f"HTTP {status} {response.reason or ''}: {snippet}".strip(),
        status,
        retry_after_s(response.headers, time.time()),
        snippet,
    )


def failed_attempt(
    error: BaseException, deadlines: Deadlines, task: asyncio.Task[object], metrics: Metrics
) -> AttemptFailure | None:
    """Name an attempt's failure from what its request raised; None: not the attempt's.

    A timeout (the request's deadline, ``sock_connect``, a session's own timeout), a
    connection error. None: let ``error`` through: a cancel from elsewhere (not the
    deadline's, see :meth:`Deadlines.expired`), or anything else. Call it before
    ``deadlines.stop(task)``.
    """
    if isinstance(error, asyncio.CancelledError):
        if not deadlines.expired(task):
            return None
    elif not isinstance(error, TimeoutError):  # (an OSError: first)
        if not isinstance(error, (aiohttp.ClientError, OSError)):
            return None
        metrics.http_code("connection").inc()
        kind, message = ResultErrorKind.CONNECTION, f"{type(error).__name__}: {error}"
        return AttemptFailure(kind, message)
    metrics.http_code("timeout").inc()
    return AttemptFailure(ResultErrorKind.TIMEOUT, f"no answer within {deadlines.timeout_s:g}s")


def retry_delay(
    policy: RetryPolicy,
    failure: AttemptFailure,
    clock: UnitClock,
    seen: dict[tuple[int, str], int],
) -> float | None:
    """Return the wait before the next attempt, or None: ``failure`` is final.

    ``seen`` counts each error answer of the unit (the same HTTP 500 body ``max_same_error``
    times is final); a final failure's ``message`` says why when the budget ran out.
    """
    if not policy.should_retry(failure.kind, failure.status):
        failure.final = True
        return None
    attempt = clock.attempts
    elapsed = clock.elapsed(time.monotonic())
    if failure.status is not None and failure.kind == ResultErrorKind.HTTP_STATUS:
        key = (failure.status, failure.body)
        times = seen[key] = seen.get(key, 0) + 1
        if policy.answer_is_final(failure.status, failure.body, times):
            failure.message = (
                f"{failure.message} (the same answer {times} times: the model fails on "
                "this input, not retried further)"
            )
            failure.final = True
            return None
    delay = policy.next_delay(max(clock.charged, 1), elapsed, failure.retry_after)
    if delay is None:
        failure.message = f"gave up after {attempt} attempts in {elapsed:.1f}s: {failure.message}"
    return delay
