"""The replica's HTTP session and each endpoint's request headers, built once.

One ``aiohttp.ClientSession`` serves every endpoint of a replica (:mod:`consumer.dispatcher`
sends through it). Its settings are chosen for many small stateless requests: a
connection pool as large as the endpoints' limits, no total timeout per request (the
dispatcher's :class:`~consumer.deadlines.Deadlines` bound each attempt with one timer for
all; ``sock_connect`` bounds opening a connection without a timer per request), no cookie
bookkeeping.

Our ``User-Agent`` is one of the headers aiohttp adds to each request itself (beside
``Accept`` and ``Accept-Encoding``), and the body's ``Content-Type`` comes with the body (an
``aiohttp.BytesPayload`` made with it): a request then passes aiohttp no headers of its
own, which aiohttp 3.14 would copy into new ``CIMultiDict``s twice per request (merged with
the session's defaults, then into the request's headers, header by header). An endpoint's
own headers (and a message's trace headers) are passed per request and replace ours in any
letter case; they are built once per endpoint, as aiohttp keeps them (a plain dict would be
copied into a ``CIMultiDict`` per request). Skipping aiohttp's own ``User-Agent`` instead
(``skip_auto_headers``) costs aiohttp 3.14 a new ``CIMultiDict`` and a copy of the headers
per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy, istr

if TYPE_CHECKING:
    from collections.abc import Mapping

USER_AGENT: Final = "kafka-batch-runner"
"""The ``User-Agent`` of inference requests (unless an endpoint's headers name another)."""


def request_headers(own: Mapping[str, str], *, ours: bool = False) -> CIMultiDictProxy[str] | None:
    """Return the headers an endpoint's requests pass aiohttp: its own (None: none).

    ``ours``: with our ``User-Agent`` first (for a session not opened by
    :func:`open_session`, whose requests add it), replaced by the endpoint's own in any case.
    """
    headers: CIMultiDict[str] = CIMultiDict({"User-Agent": USER_AGENT} if ours else {})
    headers.update(own)
    return CIMultiDictProxy(headers) if headers else None


class _Request(aiohttp.ClientRequest):
    """aiohttp's request, adding our ``User-Agent`` where it adds its own (unless one is set)."""

    DEFAULT_HEADERS: dict[istr, str] = {  # noqa: RUF012 - aiohttp declares it so (read only)
        **aiohttp.ClientRequest.DEFAULT_HEADERS,
        hdrs.USER_AGENT: USER_AGENT,
    }


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
