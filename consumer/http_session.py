"""The replica's HTTP session and each endpoint's request headers, built once.

One ``aiohttp.ClientSession`` serves every endpoint of a replica (:mod:`consumer.dispatcher`
sends through it). Its settings are chosen for many small stateless requests: a
connection pool as large as the endpoints' limits, no total timeout per request (the
dispatcher's :class:`~consumer.deadlines.Deadlines` bound each attempt with one timer for
all; ``sock_connect`` bounds opening a connection without a timer per request), no cookie
bookkeeping.

Each endpoint's headers are built once, as aiohttp keeps them (a plain dict would be copied
into a ``CIMultiDict`` per request). They carry our ``User-Agent``: aiohttp then adds none
of its own, and skipping its header instead (``skip_auto_headers``) costs aiohttp 3.14 a
new ``CIMultiDict`` and a copy of the headers per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

if TYPE_CHECKING:
    from collections.abc import Mapping

USER_AGENT: Final = "kafka-batch-runner"
"""The ``User-Agent`` of inference requests (unless an endpoint's headers name another)."""


def request_headers(content_type: str, own: Mapping[str, str]) -> CIMultiDictProxy[str]:
    """Return an endpoint's request headers: ours, then its own (replacing ours, any case)."""
    headers = CIMultiDict({"Content-Type": content_type, "User-Agent": USER_AGENT})
    headers.update(own)
    return CIMultiDictProxy(headers)


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
        timeout=timeout,
        raise_for_status=False,
        auto_decompress=True,
        # Inference calls are stateless: no cookie bookkeeping per request.
        cookie_jar=aiohttp.DummyCookieJar(),
    )
