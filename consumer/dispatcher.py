"""Call the inference API for one work unit: bounded concurrency, timeouts, retries.

One :class:`Dispatcher` per replica owns the single ``aiohttp.ClientSession`` and the
:class:`~consumer.limiter.Limiter` that caps concurrent HTTP requests (``max_in_flight``).
A work unit is retried per the :class:`~consumer.retry.RetryPolicy` (retryable statuses,
connection errors and timeouts, ``Retry-After``, full-jitter backoff, attempt and time
budgets); the place in the limiter is held only while a request is on the wire, never
while backing off. The outcome is always an :class:`Outcome`: predictions for every item,
or one error shared by the unit's items. Nothing here raises for a bad answer.

Two clocks per unit: ``queue_ms``, the time spent waiting for a place in the limiter
(every attempt's wait added up), and ``latency_ms``, from the first attempt to the final
answer without those waits: what the model and the retries cost, not how busy the
replica is.

Answers are read by :mod:`consumer.answers`: a 2xx body under the response size cap, an
error answer's body cut to its informative end (a traceback says what went wrong in its
last lines). The same HTTP 500 body ``max_same_error`` times for one unit is final
(``RetryPolicy.answer_is_final``).

Rate limits (:mod:`consumer.ratelimits`): a 429's ``retry-after-ms`` or ``Retry-After``
is the retry's floor, and each endpoint's :class:`~consumer.ratelimits.RateLimitPacer`
reads the ``x-ratelimit-*`` headers of every answer and holds back the next request's
start when the budget runs low (a unit told to wait gives its place in the limiter back
while it waits).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from consumer.answers import ResponseTooLargeError, error_snippet, read_capped, read_tail
from consumer.limiter import Limiter
from consumer.metrics import Metrics
from consumer.protocols import BadItem, BadResponse, Codec, WrongCount, get_codec, route
from consumer.ratelimits import RateLimitPacer, retry_after_s
from schemas.error_kinds import ResultErrorKind

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable, Mapping, Sequence

    from consumer.endpoints import Endpoint
    from consumer.retry import RetryPolicy
    from consumer.settings import Settings


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a work unit.

    Exactly one of ``predictions`` (one JSON text per item, in order) and ``error_kind``
    is set. ``attempts`` counts HTTP requests made; ``latency_ms`` is the wall time from
    the first attempt to the final answer, backoff included, waits for a free request
    slot excluded; ``queue_ms`` is those waits.
    """

    predictions: list[bytes] | None
    attempts: int
    latency_ms: float
    error_kind: ResultErrorKind | None = None
    error_message: str | None = None
    http_status: int | None = None
    queue_ms: float = 0.0


class _Failure(Exception):  # noqa: N818 - internal signal, not part of the API
    def __init__(
        self,
        kind: ResultErrorKind,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body


class Dispatcher:
    """Sends work units to the configured endpoints; one instance per replica."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Prepare codecs and the limiter; the session is created in :meth:`start`."""
        self._metrics = metrics or Metrics()
        self._settings = settings
        self._policy: RetryPolicy = settings.retry_policy()
        self.limiter = Limiter(settings.max_in_flight)
        self._codecs: dict[str, Codec] = {
            name: get_codec(endpoint.protocol, endpoint.codec)
            for name, endpoint in settings.endpoints.items()
        }
        self._pacers = {name: RateLimitPacer() for name in settings.endpoints}
        # Each endpoint's request headers, built once (per-message trace headers are added
        # to a copy only when a message carries them).
        self._headers: dict[str, dict[str, str]] = {
            name: {"Content-Type": self._codecs[name].content_type, **endpoint.headers}
            for name, endpoint in settings.endpoints.items()
        }
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout_s,
            connect=settings.connect_timeout_s,
        )
        # Consecutive requests that got no HTTP answer at all (readiness reads it).
        self.unanswered = 0
        # Units waiting out a retry's backoff, by fair key (the stall check reads it).
        self.retrying: collections.Counter[Hashable] = collections.Counter()
        # When (time.monotonic()) a request last succeeded and last failed (stall checks).
        self.last_success: float | None = None
        self.last_failure: float | None = None

    async def start(self) -> None:
        """Open the shared HTTP session (a connection pool sized to ``max_in_flight``)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._settings.max_in_flight,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=60,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                raise_for_status=False,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                # Inference calls are stateless: no cookie bookkeeping per request.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        """Close the session if this dispatcher created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def run(
        self,
        endpoint: Endpoint,
        items: Sequence[bytes],
        headers: Mapping[str, str] | None = None,
        *,
        fair_key: Hashable = None,
    ) -> Outcome:
        """Send ``items`` to ``endpoint`` until it answers, a permanent error, or the budget.

        Units of different ``fair_key`` (the partition they came from) get request places
        round-robin, so none waits behind all the others' backlog.
        """
        codec = self._codecs[endpoint.name]
        pacer = self._pacers[endpoint.name]
        try:
            body = codec.encode(items)
            url = route(codec, endpoint.url, items)
        except BadItem as exc:
            return Outcome(None, 0, 0.0, ResultErrorKind.BAD_ITEM, str(exc))
        request_headers = self._headers[endpoint.name]
        if headers:
            request_headers = {**request_headers, **headers}
        started = time.monotonic()
        first_attempt = started
        queued = 0.0  # seconds spent waiting for a place in the limiter, all attempts
        seen: dict[tuple[int, str], int] = {}  # how often each error answer came back
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._place(pacer, fair_key) as (waited, sending):
                    queued += waited
                    if attempt == 1:
                        first_attempt = sending
                    answer = await self._post(url, body, request_headers, pacer)
                try:
                    predictions = codec.decode(answer, len(items))
                except WrongCount as exc:
                    raise _Failure(ResultErrorKind.WRONG_COUNT, str(exc), 200) from None
                except BadResponse as exc:
                    raise _Failure(ResultErrorKind.BAD_RESPONSE, str(exc), 200) from None
            except _Failure as failure:
                self.last_failure = time.monotonic()
                delay = self._retry_delay(failure, attempt, first_attempt, seen)
                if delay is None:
                    return self._error(started, queued, attempt, failure)
                self._metrics.retries.inc()
                await self._wait(delay, fair_key)
                continue
            self.last_success = time.monotonic()
            return self._finish(started, queued, attempt, predictions)

    @contextlib.asynccontextmanager
    async def _place(
        self, pacer: RateLimitPacer, fair_key: Hashable
    ) -> AsyncIterator[tuple[float, float]]:
        """Hold a place in the limiter once the endpoint's pace lets a request start.

        Yields the time spent waiting for places and when the request starts. The pace is
        read with a place held (answers that set it came in while the unit waited); a unit
        told to wait gives its place back meanwhile, and then only waits for a pause, its
        place in the pace being already reserved.
        """
        limiter = self.limiter
        waited = 0.0
        paced = False
        while True:
            waiting = time.monotonic()
            await limiter.acquire(fair_key)
            sending = time.monotonic()
            waited += sending - waiting
            pause = pacer.paused_for(sending) if paced else pacer.delay(sending)
            if pause <= 0:
                break
            limiter.release()
            paced = True
            await self._wait(pause, fair_key)
        pacer.in_flight += 1
        try:
            yield waited, sending
        finally:
            pacer.in_flight -= 1
            limiter.release()

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
        self,
        failure: _Failure,
        attempt: int,
        first_attempt: float,
        seen: dict[tuple[int, str], int],
    ) -> float | None:
        """Return the wait before the next attempt, or None (``failure.message`` says why)."""
        policy = self._policy
        if not policy.should_retry(failure.kind, failure.status):
            return None
        elapsed = time.monotonic() - first_attempt
        if failure.status is not None and failure.kind == ResultErrorKind.HTTP_STATUS:
            key = (failure.status, failure.body)
            times = seen[key] = seen.get(key, 0) + 1
            if policy.answer_is_final(failure.status, failure.body, times):
                failure.message = (
                    f"{failure.message} (the same answer {times} times: the model fails on "
                    "this input, not retried further)"
                )
                return None
        delay = policy.next_delay(attempt, elapsed, failure.retry_after)
        if delay is None:
            failure.message = (
                f"gave up after {attempt} attempts in {elapsed:.1f}s: {failure.message}"
            )
        return delay

    def _finish(
        self,
        started: float,
        queued: float,
        attempts: int,
        predictions: list[bytes],
    ) -> Outcome:
        self._metrics.queue_wait.observe(queued)
        return Outcome(
            predictions=predictions,
            attempts=attempts,
            latency_ms=(time.monotonic() - started - queued) * 1000.0,
            queue_ms=queued * 1000.0,
        )

    def _error(self, started: float, queued: float, attempts: int, failure: _Failure) -> Outcome:
        self._metrics.queue_wait.observe(queued)
        return Outcome(
            predictions=None,
            attempts=attempts,
            latency_ms=(time.monotonic() - started - queued) * 1000.0,
            error_kind=failure.kind,
            error_message=failure.message,
            http_status=failure.status,
            queue_ms=queued * 1000.0,
        )

    async def _post(
        self, url: str, body: bytes, headers: Mapping[str, str], pacer: RateLimitPacer
    ) -> bytes:
        """POST once; return the body of a 2xx answer or raise :class:`_Failure`."""
        session = self._session
        if session is None:
            raise RuntimeError("Dispatcher.start() was not called")
        metrics = self._metrics
        started = time.monotonic()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                status = response.status
                self.unanswered = 0
                pacer.observe(response.headers, time.monotonic(), pacer.in_flight - 1)
                metrics.http_code(str(status)).inc()
                metrics.inference_latency.observe(time.monotonic() - started)
                cap = self._settings.max_response_bytes
                if 200 <= status < 300:
                    try:
                        return await read_capped(response, cap)
                    except ResponseTooLargeError as exc:
                        raise _Failure(
                            ResultErrorKind.RESPONSE_TOO_LARGE, str(exc), status
                        ) from None
                snippet = error_snippet(await read_tail(response, cap))
                raise _Failure(
                    ResultErrorKind.HTTP_STATUS,
                    f"HTTP {status} {response.reason or ''}: {snippet}".strip(),
                    status,
                    retry_after_s(response.headers, time.time()),
                    snippet,
                )
        except TimeoutError:
            self.unanswered += 1
            metrics.http_code("timeout").inc()
            raise _Failure(
                ResultErrorKind.TIMEOUT,
                f"no answer within {self._settings.request_timeout_s:g}s",
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            self.unanswered += 1
            metrics.http_code("connection").inc()
            raise _Failure(ResultErrorKind.CONNECTION, f"{type(exc).__name__}: {exc}") from None

    def failing(self, window_s: float, now: float) -> bool:
        """Whether requests failed and none succeeded in the last ``window_s`` seconds."""
        if self.last_failure is None or now - self.last_failure > window_s:
            return False
        return self.last_success is None or now - self.last_success > window_s

    def endpoint_answering(self, max_unanswered: int = 5) -> bool:
        """Whether the endpoints answer: fewer than ``max_unanswered`` silent requests in a row."""
        return self.unanswered < max_unanswered
