"""One HTTP attempt of a work unit: POST, read the answer, name what went wrong.

:func:`post_once` returns the body of a 2xx answer under the response size cap, or
raises :class:`AttemptFailure` with the result error kind, the status, the server's
``Retry-After`` (or ``retry-after-ms``) and the informative end of an error body
(:mod:`consumer.answers`). :func:`unreadable` names a 2xx body the endpoint's codec
could not read. Retrying, limits and clocks are the dispatcher's.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, NamedTuple

import aiohttp
from aiohttp import hdrs

from consumer.answers import ResponseTooLargeError, error_snippet, read_capped, read_tail
from consumer.protocols import BadResponse, Codec, WrongCount
from consumer.ratelimits import STATED, retry_after_s
from schemas.error_kinds import ResultErrorKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from consumer.deadlines import Deadlines
    from consumer.guard import EndpointGuard
    from consumer.metrics import Metrics
    from consumer.ratelimits import RateLimitPacer

# An answer without them states no rate-limit budget: the pacer has nothing to read.
_REQUESTS_STATED, _TOKENS_STATED = STATED
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


def unreadable(error: BadResponse) -> AttemptFailure:
    """Return the failure of a 2xx whose predictions the codec could not read."""
    if isinstance(error, WrongCount):
        return AttemptFailure(ResultErrorKind.WRONG_COUNT, str(error), 200)
    return AttemptFailure(ResultErrorKind.BAD_RESPONSE, str(error), 200)


async def post_once(  # noqa: PLR0913, PLR0917 - the request, what reads its answer (positional: per unit)
    session: aiohttp.ClientSession,
    url: str,
    body: aiohttp.BytesPayload,
    headers: Mapping[str, str] | None,
    pacer: RateLimitPacer,
    metrics: Metrics,
    deadlines: Deadlines,
    max_bytes: int,
) -> bytes:
    """POST once; return the body of a 2xx answer or raise :class:`AttemptFailure`.

    The whole attempt (connecting, sending, the answer and its body) has
    ``deadlines.timeout_s``; a cancel from elsewhere goes through as a cancel.
    """
    started = time.monotonic()
    task = deadlines.start()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            status = response.status
            answer_headers = response.headers
            answered = time.monotonic()
            if _REQUESTS_STATED in answer_headers or _TOKENS_STATED in answer_headers:
                pacer.observe(answer_headers, answered, pacer.in_flight - 1)
            (metrics.http_codes.get(status) or metrics.http_code(status)).value += 1
            metrics.inference_latency.observe(answered - started)
            if 200 <= status < 300:
                length = answer_headers.get(hdrs.CONTENT_LENGTH)  # (content_length's own read)
                if (
                    length is not None
                    and int(length) <= max_bytes
                    and hdrs.CONTENT_ENCODING not in answer_headers
                ):
                    return await response.read()  # read_capped's first case, without its coroutine
                try:
                    return await read_capped(response, max_bytes)
                except ResponseTooLargeError as exc:
                    raise AttemptFailure(
                        ResultErrorKind.RESPONSE_TOO_LARGE, str(exc), status
                    ) from None
            snippet = error_snippet(await read_tail(response, max_bytes))
            raise AttemptFailure(
                ResultErrorKind.HTTP_STATUS,
                f"HTTP {status} {response.reason or ''}: {snippet}".strip(),
                status,
                retry_after_s(response.headers, time.time()),
                snippet,
            )
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        metrics.http_code("timeout").inc()
        message = f"no answer within {deadlines.timeout_s:g}s"
        raise AttemptFailure(ResultErrorKind.TIMEOUT, message) from None
    except TimeoutError:  # connecting (sock_connect), or a session with its own timeout
        metrics.http_code("timeout").inc()
        message = f"no answer within {deadlines.timeout_s:g}s"
        raise AttemptFailure(ResultErrorKind.TIMEOUT, message) from None
    except (aiohttp.ClientError, OSError) as exc:
        metrics.http_code("connection").inc()
        raise AttemptFailure(ResultErrorKind.CONNECTION, f"{type(exc).__name__}: {exc}") from None
    finally:
        deadlines.stop(task)
