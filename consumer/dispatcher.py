"""Call the inference API for one work unit: bounded concurrency, timeouts, retries.

One :class:`Dispatcher` per replica owns the single ``aiohttp.ClientSession`` and the
:class:`~consumer.limiter.Limiter` that caps concurrent HTTP requests (``max_in_flight``).
A work unit is retried per the :class:`~consumer.retry.RetryPolicy` (retryable statuses,
connection errors and timeouts, ``Retry-After``, full-jitter backoff, attempt and time
budgets); the place in the limiter is held only while a request is on the wire, never
while backing off. The outcome is always an :class:`Outcome`: predictions for every item,
or one error shared by the unit's items. Nothing here raises for a bad answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from consumer.limiter import Limiter
from consumer.metrics import Metrics
from consumer.protocols import BadResponse, Codec, WrongCount, get_codec
from consumer.retry import FailureKind, parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from consumer.retry import RetryPolicy
    from consumer.settings import Endpoint, Settings


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a work unit.

    Exactly one of ``predictions`` (one JSON text per item, in order) and ``error_kind``
    is set. ``attempts`` counts HTTP requests made; ``latency_ms`` is the wall time from
    the first attempt to the final answer, backoff included.
    """

    predictions: list[bytes] | None
    attempts: int
    latency_ms: float
    error_kind: str | None = None
    error_message: str | None = None
    http_status: int | None = None


class _Failure(Exception):  # noqa: N818 - internal signal, not part of the API
    def __init__(
        self,
        kind: str,
        message: str,
        status: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after


# A response over the size cap would be over it again: not one of the retry policy's kinds.
RESPONSE_TOO_LARGE = "response_too_large"


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
            name: get_codec(endpoint.protocol) for name, endpoint in settings.endpoints.items()
        }
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
    ) -> Outcome:
        """Send ``items`` to ``endpoint`` until it answers, a permanent error, or the budget."""
        codec = self._codecs[endpoint.name]
        body = codec.encode(items)
        request_headers = self._headers[endpoint.name]
        if headers:
            request_headers = {**request_headers, **headers}
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.limiter:
                    answer = await self._post(endpoint.url, body, request_headers)
                try:
                    predictions = codec.decode(answer, len(items))
                except WrongCount as exc:
                    raise _Failure(FailureKind.WRONG_COUNT, str(exc), 200) from None
                except BadResponse as exc:
                    raise _Failure(FailureKind.BAD_RESPONSE, str(exc), 200) from None
            except _Failure as failure:
                self.last_failure = time.monotonic()
                retryable = failure.kind != RESPONSE_TOO_LARGE and self._policy.should_retry(
                    FailureKind(failure.kind),
                    failure.status,
                )
                elapsed = time.monotonic() - started
                delay = None
                if retryable:
                    delay = self._policy.next_delay(
                        attempt,
                        elapsed,
                        parse_retry_after(failure.retry_after, time.time()),
                    )
                if delay is None:
                    message = failure.message
                    if retryable:
                        message = f"gave up after {attempt} attempts in {elapsed:.1f}s: {message}"
                    return self._error(started, attempt, failure.kind, message, failure.status)
                self._metrics.retries.inc()
                await asyncio.sleep(delay)
                continue
            self.last_success = time.monotonic()
            return Outcome(
                predictions=predictions,
                attempts=attempt,
                latency_ms=(time.monotonic() - started) * 1000.0,
            )

    @staticmethod
    def _error(
        started: float,
        attempts: int,
        kind: str,
        message: str,
        status: int | None,
    ) -> Outcome:
        return Outcome(
            predictions=None,
            attempts=attempts,
            latency_ms=(time.monotonic() - started) * 1000.0,
            error_kind=kind,
            error_message=message,
            http_status=status,
        )

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> bytes:
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
                metrics.http_code(str(status)).inc()
                metrics.inference_latency.observe(time.monotonic() - started)
                if 200 <= status < 300:
                    return await self._read_capped(response)
                snippet = (await response.content.read(300)).decode("utf-8", "replace")
                raise _Failure(
                    FailureKind.HTTP_STATUS,
                    f"HTTP {status} {response.reason or ''}: {snippet}".strip(),
                    status,
                    response.headers.get("Retry-After"),
                )
        except TimeoutError:
            self.unanswered += 1
            metrics.http_code("timeout").inc()
            raise _Failure(
                FailureKind.TIMEOUT,
                f"no answer within {self._settings.request_timeout_s:g}s",
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            self.unanswered += 1
            metrics.http_code("connection").inc()
            raise _Failure(FailureKind.CONNECTION, f"{type(exc).__name__}: {exc}") from None

    def failing(self, window_s: float, now: float) -> bool:
        """Whether requests failed and none succeeded in the last ``window_s`` seconds."""
        if self.last_failure is None or now - self.last_failure > window_s:
            return False
        return self.last_success is None or now - self.last_success > window_s

    def endpoint_answering(self, max_unanswered: int = 5) -> bool:
        """Whether the endpoints answer: fewer than ``max_unanswered`` silent requests in a row."""
        return self.unanswered < max_unanswered

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        cap = self._settings.max_response_bytes
        length = response.content_length
        if length is not None:
            if length > cap:
                raise _Failure(
                    RESPONSE_TOO_LARGE,
                    f"response of {length} bytes exceeds the {cap}-byte cap",
                    response.status,
                )
            if response.headers.get("Content-Encoding") is None:
                # The declared length bounds what read() takes in: one call, no loop.
                return await response.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > cap:
                raise _Failure(
                    RESPONSE_TOO_LARGE,
                    f"response exceeds the {cap}-byte cap",
                    response.status,
                )
            chunks.append(chunk)
        return b"".join(chunks)
