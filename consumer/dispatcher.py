"""Call the inference API for one work unit: bounded concurrency, timeouts, retries.

One :class:`Dispatcher` per replica owns the single ``aiohttp.ClientSession`` and, per
endpoint, an :class:`~consumer.guard.EndpointGuard`: the limiter that caps its concurrent
HTTP requests (fixed at ``max_in_flight``, or adaptive), and its circuit breaker. A work
unit is retried per the :class:`~consumer.retry.RetryPolicy` (retryable statuses,
connection errors and timeouts, ``Retry-After``, full-jitter backoff, attempt and time
budgets); the place in the limiter is held only while a request is on the wire, never
while backing off. The outcome is always an :class:`Outcome`: predictions for every item,
or one error shared by the unit's items. Nothing here raises for a bad answer.

Waiting on the endpoint costs a unit nothing: the time its circuit is open (or the
endpoint paused by its adaptive limit) does not count against ``max_elapsed_s``, which
otherwise counts from the unit's first attempt, and a failed probe of an open circuit
does not count against ``max_attempts`` (the failure is the endpoint's, not the unit's).
So an outage longer than the time budget turns into a wait, not into error results.

Two clocks per unit: ``queue_ms``, the time spent waiting to be sent (a place in the
limiter, an open circuit: every attempt's waits added up), and ``latency_ms``, from the
first attempt to the final answer without those waits: what the model and the retries
cost, not how busy the replica or the endpoint is.

Answers are read by :mod:`consumer.answers` (a 2xx body under the response size cap, an
error's body cut to its informative end). The same HTTP 500 body ``max_same_error`` times
for one unit is final (``RetryPolicy.answer_is_final``).

Rate limits (:mod:`consumer.ratelimits`): a 429's ``retry-after-ms`` or ``Retry-After``
is the retry's floor, and each endpoint's :class:`~consumer.ratelimits.RateLimitPacer`
reads the ``x-ratelimit-*`` headers of every answer and holds back the next request's
start when the budget runs low (a unit told to wait gives its place in the limiter back
while it waits).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import hdrs

from consumer.attempt import (
    AttemptFailure,
    Target,
    UnitClock,
    error_outcome,
    failed_attempt,
    read_answer,
    retry_delay,
    unreadable,
)
from consumer.breaker import Circuit
from consumer.deadlines import Deadlines
from consumer.guard import EndpointGuard, Ticket, guards_for
from consumer.http_session import Post, open_session, poster, request_headers
from consumer.limiter import Lane
from consumer.metrics import Metrics
from consumer.outcome import Outcome
from consumer.protocols import BadItem, BadResponse, get_codec, route, routes
from consumer.ratelimits import STATED, RateLimitPacer
from schemas.error_kinds import ResultErrorKind

if TYPE_CHECKING:
    from collections.abc import Hashable, Mapping, Sequence

    from consumer.endpoints import Endpoint
    from consumer.limiter import Limiter, Place, Start
    from consumer.retry import RetryPolicy
    from consumer.settings import Settings

# An answer without them states no rate-limit budget: the pacer has nothing to read.
_REQUESTS_STATED, _TOKENS_STATED = STATED


class Dispatcher:
    """Sends work units to the configured endpoints; one instance per replica."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Prepare codecs and the guards; the session is created in :meth:`start`."""
        self._metrics = self.metrics = metrics or Metrics()
        self._settings = settings
        self._policy: RetryPolicy = settings.retry_policy()
        self.guards: dict[str, EndpointGuard] = guards_for(settings, self._metrics)
        self._session = session
        self._owns_session = session is None
        self._post: Post | None = None if session is None else poster(session)
        self._targets: dict[str, Target] = {}
        for name, endpoint in settings.endpoints.items():
            codec = get_codec(endpoint.protocol, endpoint.codec)
            # Its own headers, None without (our User-Agent and Content-Type are the session's); a
            # message's trace headers are added to a copy only when it carries them.
            own, ours = endpoint.headers, not self._owns_session
            headers = request_headers(own, ours=ours, content_type=codec.content_type)
            guard = self.guards[name]
            self._targets[name] = Target(codec, RateLimitPacer(), guard, headers, routes(codec))
        # The attempt's whole time is bounded by the deadlines (one check per tick for
        # all requests); sock_connect bounds opening a connection, without a timer per
        # request (connect would also time the wait for a pooled one: none, by the limit).
        self._deadlines = Deadlines(settings.request_timeout_s)
        self._max_bytes = settings.max_response_bytes
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s)
        # Consecutive requests that got no HTTP answer at all (readiness reads it).
        self.unanswered = 0
        # Units waiting out a retry's backoff, by fair key (the stall check reads it).
        self.retrying: collections.Counter[Hashable] = collections.Counter()
        # When (time.monotonic()) a request last succeeded and last failed (stall checks).
        self.last_success: float | None = None
        self.last_failure: float | None = None

    async def start(self) -> None:
        """Open the shared HTTP session (a pool of ``max_in_flight`` per endpoint)."""
        if self._session is None:
            pool = self._settings.max_in_flight * len(self.guards)
            self._session = open_session(pool, self._timeout)
            self._post = poster(self._session)

    async def close(self) -> None:
        """Close the session if this dispatcher created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = self._post = None

    async def run(  # noqa: C901, PLR0912, PLR0913, PLR0915, PLR0917 - the attempt loop, its request and common case inline; the unit, its headers, lane, place (positional: per unit)
        self,
        endpoint: Endpoint,
        items: Sequence[bytes],
        headers: Mapping[str, str] | None = None,
        fair_key: Hashable = None,
        lane: Lane | None = None,
        held: Place | None = None,
    ) -> Outcome:
        """Send ``items`` to ``endpoint`` until it answers, a permanent error, or the budget.

        Units of different lanes (by default ``fair_key``, the partition they came from;
        the pipeline's are batches weighted by priority) share request places by weight,
        so none waits behind all the others' backlog. ``held``: the place :meth:`submit`
        gave the unit, for its first attempt.
        """
        lane = lane or Lane(fair_key, fair_key)
        codec, pacer, guard, request_headers, routed = self._targets[endpoint.name]
        try:
            body = codec.encode(items)
            url = route(codec, endpoint.url, items) if routed else endpoint.url
        except BadItem as exc:
            return Outcome(None, 0, 0.0, ResultErrorKind.BAD_ITEM, str(exc), final=True)
        post = self._post
        if post is None:
            raise RuntimeError("Dispatcher.start() was not called")
        if headers:
            request_headers = {**(request_headers or {}), **headers}
        metrics, deadlines, max_bytes = self._metrics, self._deadlines, self._max_bytes
        # A unit given its place before it ran has waited for it since then (queue_ms).
        started = held.since if held is not None and held.held else time.monotonic()
        clock = UnitClock(started)
        seen: dict[tuple[int, str], int] = {}  # how often each error answer came back
        while True:
            # A held place becomes the ticket when nothing makes the unit wait (the pace
            # lets a request start, the endpoint is not paused, its circuit is closed).
            ticket = None
            if held is not None and (not pacer.paced or pacer.ready(time.monotonic())):
                ticket = guard.enter_held(held, clock)
            if ticket is None:
                ticket = await self._enter(guard, pacer, lane, clock, held)
            task = deadlines.start()  # (the request inline here: no coroutine layer of its own)
            pacer.in_flight += 1
            sent = time.monotonic()
            try:
                # (the body as bytes, the response left as `async with` would: http_session)
                response = await post(url, data=body, headers=request_headers)
                try:
                    status = response.status
                    answer_headers = response.headers
                    answered = time.monotonic()
                    if _REQUESTS_STATED in answer_headers or _TOKENS_STATED in answer_headers:
                        pacer.observe(answer_headers, answered, pacer.in_flight - 1)
                    (metrics.http_codes.get(status) or metrics.http_code(status)).value += 1
                    metrics.inference_latency.observe(answered - sent)
                    length = answer_headers.get(hdrs.CONTENT_LENGTH)  # (content_length's read)
                    if (
                        200 <= status < 300
                        and length is not None
                        and int(length) <= max_bytes
                        and hdrs.CONTENT_ENCODING not in answer_headers
                    ):
                        answer = await response.read()  # the usual answer
                    else:
                        answer = await read_answer(response, status, max_bytes)
                finally:
                    response.release()
                    await response.wait_for_close()
            except AttemptFailure as failure:
                result: list[bytes] | AttemptFailure = self._failed(guard, ticket, clock, failure)
            except BaseException as error:
                named = failed_attempt(error, deadlines, task, metrics)
                if named is None:  # a cancel from elsewhere, or not the attempt's
                    guard.cancelled(ticket)
                    raise
                result = self._failed(guard, ticket, clock, named)
            else:
                self.unanswered = 0
                guard.leave(ticket, 200)
                try:
                    result = codec.decode(answer, len(items))
                except BadResponse as exc:  # (a wrong count among them)
                    result = unreadable(exc)
            finally:
                deadlines.stop(task)
                pacer.in_flight -= 1
            if not isinstance(result, AttemptFailure):
                self.last_success = now = time.monotonic()
                queued = clock.queued
                self._metrics.queue_wait.observe(queued)
                latency_ms = (now - started - queued) * 1000.0
                # Outcome(result, attempts, latency_ms, queue_ms=...) without its Python __new__
                fields = (result, clock.attempts, latency_ms, None, None, None, queued * 1e3, False)
                return tuple.__new__(Outcome, fields)
            delay = self._retry_delay(result, clock, seen)
            if delay is None:
                self._metrics.queue_wait.observe(clock.queued)
                return error_outcome(clock, result)
            await self._wait(delay, lane.partition)

    def _failed(
        self, guard: EndpointGuard, ticket: Ticket, clock: UnitClock, failure: AttemptFailure
    ) -> AttemptFailure:
        """Give a failed attempt's place back, telling the guard what failed; return ``failure``.

        A failed probe of an open circuit is the endpoint's failure, not the unit's: its
        attempt is not charged (a probe answered 2xx closes the circuit).
        """
        self.unanswered = self.unanswered + 1 if failure.unanswered else 0  # silent ones
        timed_out = failure.kind == ResultErrorKind.TIMEOUT
        guard.leave(ticket, failure.status, timed_out=timed_out, retry_after_s=failure.retry_after)
        if ticket.probe and guard.circuit is not Circuit.CLOSED:
            clock.free_attempt()
        return failure

    async def _enter(
        self,
        guard: EndpointGuard,
        pacer: RateLimitPacer,
        lane: Lane,
        clock: UnitClock,
        held: Place | None = None,
    ) -> Ticket:
        """Take a place through the endpoint's guard once the endpoint's pace lets it start.

        The pace is read with a place held (answers that set it came in while the unit
        waited); a unit told to wait gives its place back meanwhile, and then only waits
        for a pause, its place in the pace being already reserved.
        """
        paced = False
        while True:
            ticket = guard.enter_held(held) if held is not None else None
            if ticket is None:
                ticket = await guard.enter(lane.key, lane.weight, held)
            now = time.monotonic()
            pause = pacer.paused_for(now) if paced else pacer.delay(now)
            if pause <= 0:
                clock.sent(ticket)
                return ticket
            guard.cancelled(ticket)
            clock.gave_back(ticket)
            paced = True
            await self._wait(pause, lane.partition)

    def submit(self, endpoint: Endpoint, lane: Lane, start: Start) -> None:
        """Call ``start`` holding a place of ``endpoint``'s limit (see ``Limiter.submit``)."""
        self.guards[endpoint.name].limiter.submit(start, lane.key, lane.weight)

    async def _wait(self, delay: float, fair_key: Hashable) -> None:
        """Wait out a retry's backoff or the endpoint's pace, counted in :attr:`retrying`."""
        self.retrying[fair_key] += 1
        try:
            await asyncio.sleep(delay)
        finally:
            self.retrying[fair_key] -= 1
            if not self.retrying[fair_key]:
                del self.retrying[fair_key]

    def _retry_delay(
        self, failure: AttemptFailure, clock: UnitClock, seen: dict[tuple[int, str], int]
    ) -> float | None:
        """Return the wait before the next attempt (a retry, counted), or None (final)."""
        self.last_failure = time.monotonic()
        delay = retry_delay(self._policy, failure, clock, seen)
        if delay is not None:
            self._metrics.retries.inc()
        return delay

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared HTTP session (:meth:`start` opens it)."""
        if self._session is None:
            raise RuntimeError("Dispatcher.start() was not called")
        return self._session

    @property
    def limiter(self) -> Limiter:
        """The limiter of the first endpoint (the only one, usually)."""
        return next(iter(self.guards.values())).limiter

    @property
    def fetch_on_hold(self) -> bool:
        """Whether fetching should pause: every endpoint in use has its circuit open.

        With one endpoint, while its circuit is open; with several, only when all those
        requests were sent to are (otherwise work for a healthy one keeps arriving, and
        the buffer bound stops the rest).
        """
        used = [guard for guard in self.guards.values() if guard.used]
        return bool(used) and all(guard.circuit is not Circuit.CLOSED for guard in used)

    def open_circuits(self, now: float) -> dict[str, float]:
        """Return the endpoints whose circuit is not closed, with seconds since it opened."""
        return {
            name: now - guard.breaker.open_since
            for name, guard in self.guards.items()
            if guard.breaker.open_since is not None
        }

    def failing(self, window_s: float, now: float) -> bool:
        """Whether requests failed and none succeeded in the last ``window_s`` seconds."""
        if self.last_failure is None or now - self.last_failure > window_s:
            return False
        return self.last_success is None or now - self.last_success > window_s

    def endpoint_answering(self, max_unanswered: int = 5) -> bool:
        """Whether the endpoints answer: fewer than ``max_unanswered`` silent requests in a row."""
        return self.unanswered < max_unanswered
