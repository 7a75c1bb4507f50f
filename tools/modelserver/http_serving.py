"""Serve an aiohttp application on the running event loop, for the tools' HTTP servers."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["serving"]

AIOHTTP_SHUTDOWN_TIMEOUT_S: Final = 60.0  # aiohttp's own default for a runner


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    *,
    host: str,
    port: int,
    handler_cancellation: bool = False,
    shutdown_timeout_s: float = AIOHTTP_SHUTDOWN_TIMEOUT_S,
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (``port=0``: a free one); yield its base URL.

    Requests are not logged. A bind error (``OSError``) propagates once the runner is
    cleaned up; leaving the block stops serving and cleans up the same way.
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=handler_cancellation,
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
