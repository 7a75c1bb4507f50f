"""The replica's HTTP session and each endpoint's request headers, built once.

One ``aiohttp.ClientSession`` serves every endpoint of a replica (:mod:`consumer.dispatcher`
sends through it). Its settings are chosen for many small stateless requests: a
connection pool as large as the endpoints' limits, no total timeout per request (the
dispatcher's :class:`~consumer.deadlines.Deadlines` bound each attempt with one timer for
all; ``sock_connect`` bounds opening a connection without a timer per request), no cookie
bookkeeping.

Our ``User-Agent`` and the body's ``Content-Type`` (JSON, every codec's) are among the
headers aiohttp adds to each request itself (beside ``Accept`` and ``Accept-Encoding``), and
the body goes to aiohttp as ``bytes``: a request then passes aiohttp no headers of its own,
which aiohttp 3.14 would copy into new ``CIMultiDict``s twice per request (merged with the
session's defaults, then into the request's headers, header by header). aiohttp looks a
``bytes`` body's payload up by its type; a payload object passed instead (an
``aiohttp.BytesPayload`` made with the content type) costs it an ``isinstance`` check
against its ``Payload`` ABC (``ABCMeta.__instancecheck__``, a Python call) per request.
aiohttp copies the payload's own ``Content-Type`` (``application/octet-stream`` for
``bytes``) only where the request has none. An endpoint's own headers (and a message's
trace headers) are passed per request and replace ours in any letter case; they are built
once per endpoint, as aiohttp keeps them (a plain dict would be copied into a
``CIMultiDict`` per request). Skipping aiohttp's own ``User-Agent`` instead
(``skip_auto_headers``) costs aiohttp 3.14 a new ``CIMultiDict`` and a copy of the headers
per request.

A request is a call of what :func:`poster` returns: the coroutine function that
``session.post`` wraps (aiohttp's private ``ClientSession._request``, its version pinned in
``uv.lock``; every dispatcher test goes through it). What ``post`` returns, a context
manager around that coroutine, costs each request Python calls that no request needs:
``post`` itself; the object, made through a generic alias (``_RequestContextManager``)
that sets ``__orig_class__`` on it, which its slots refuse (an ``AttributeError`` raised
and cleared inside CPython per request); its ``__aenter__`` and ``__aexit__`` and the
response's own. The caller leaves the response as that ``__aexit__`` would:
``release()``, then ``await wait_for_close()``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final, TypeAlias

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy, istr

from consumer.protocols.codec import JSON_CONTENT_TYPE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

Post: TypeAlias = "Callable[..., Awaitable[aiohttp.ClientResponse]]"
"""A POST to the session: ``post(url, data=..., headers=...)``, awaited for the response."""

USER_AGENT: Final = "kafka-batch-runner"
"""The ``User-Agent`` of inference requests (unless an endpoint's headers name another)."""

CONTENT_TYPE: Final = JSON_CONTENT_TYPE
"""The ``Content-Type`` requests of :func:`open_session`'s session carry unless told another."""


def request_headers(
    own: Mapping[str, str], *, ours: bool = False, content_type: str = CONTENT_TYPE
) -> CIMultiDictProxy[str] | None:
    """Return the headers an endpoint's requests pass aiohttp: its own (None: none).

    ``ours``: with our ``User-Agent`` and ``Content-Type`` first (for a session not opened
    by :func:`open_session`, whose requests add them), replaced by the endpoint's own in
    any case. ``content_type``: the codec's, passed as a header where it is not the one
    the session adds.
    """
    headers: CIMultiDict[str] = CIMultiDict({"User-Agent": USER_AGENT} if ours else {})
    if ours or content_type != CONTENT_TYPE:
        headers[hdrs.CONTENT_TYPE] = content_type
    headers.update(own)
    return CIMultiDictProxy(headers) if headers else None


class _Request(aiohttp.ClientRequest):
    """aiohttp's request, adding our ``User-Agent`` and ``Content-Type`` unless they are set."""

    DEFAULT_HEADERS: dict[istr, str] = {  # noqa: RUF012 - aiohttp declares it so (read only)
        **aiohttp.ClientRequest.DEFAULT_HEADERS,
        hdrs.USER_AGENT: USER_AGENT,
        hdrs.CONTENT_TYPE: CONTENT_TYPE,
    }


def poster(session: aiohttp.ClientSession) -> Post:
    """Return the coroutine function ``session.post`` wraps: a POST awaited for its response.

    The caller releases the response as ``async with session.post(...)`` does on leaving:
    ``response.release()``, then ``await response.wait_for_close()``.
    """
    request: Callable[..., Awaitable[aiohttp.ClientResponse]] = session._request  # noqa: SLF001 - post()'s own call (see the module's docs)
    return functools.partial(request, hdrs.METH_POST)


def open_session(pool_size: int, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    """Return the replica's session: a pool of ``pool_size`` connections, ``timeout``."""
    connector = aiohttp.TCPConnector(
        limit=pool_size,
        limit_per_host=0,
        ttl_dns_cache=300,
        keepalive_timeout=60,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        request_class=_Request,
        timeout=timeout,
        raise_for_status=False,
        auto_decompress=True,
        # Inference calls are stateless: no cookie bookkeeping per request.
        cookie_jar=aiohttp.DummyCookieJar(),
    )
