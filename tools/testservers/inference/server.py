"""Run the test server on the test's event loop (``async with``) or in a thread (``with``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Final, Self, TypeVar

from tools.modelserver.http_serving import serving
from tools.testservers.inference.app import build_app
from tools.testservers.inference.config import ServerConfig
from tools.testservers.inference.state import ServerState

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from consumer.protocols import ProtocolName
    from tools.testservers.inference.config import ServerStats

T = TypeVar("T")

SHUTDOWN_TIMEOUT_S: Final = 0.5


async def _call_on_loop(fn: Callable[[], T]) -> T:
    return fn()


class TestInferenceServer:
    """Run the test server on this event loop (``async with``) or in a thread (``with``).

    ``configure``, ``stats`` and ``reset`` may be called from any thread in either mode;
    in thread mode they run on the server's loop and wait for it.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self, config: ServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """Prepare a server with ``config`` on ``host:port`` (``port=0``: a free port)."""
        self._config = config or ServerConfig()
        self._host = host
        self._port = port
        self._state: ServerState | None = None
        self._serving = contextlib.AsyncExitStack()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self.url = ""

    def endpoint(self, protocol: ProtocolName, model: str = "model") -> str:
        """Return the full URL the consumer posts to for ``protocol``."""
        if protocol == "raw":
            return f"{self.url}/predict"
        if protocol == "v1":
            return f"{self.url}/v1/models/{model}:predict"
        if protocol == "openai":
            return f"{self.url}/v1/chat/completions"
        return f"{self.url}/v2/models/{model}/infer"

    # control, from any thread

    def configure(self, **changes: object) -> ServerConfig:
        """Change config fields (see :class:`ServerConfig`); return the new config."""
        return self._call(lambda: self._running_state().configure(**changes))

    def stats(self) -> ServerStats:
        """Return what the server has received since start or the last reset."""
        return self._call(lambda: self._running_state().stats())

    def reset(self) -> None:
        """Zero the counters, restore the config given at construction, release hangs."""
        self._call(lambda: self._running_state().reset())

    def release_hangs(self) -> None:
        """Let requests held by a ``hang`` action finish with a 503."""
        self._call(lambda: self._running_state().release_hangs())

    def _running_state(self) -> ServerState:
        if self._state is None:
            raise RuntimeError("the test server is not running")
        return self._state

    def _call(self, fn: Callable[[], T]) -> T:
        if self._thread is None or self._loop is None:
            return fn()
        future = asyncio.run_coroutine_threadsafe(_call_on_loop(fn), self._loop)
        return future.result(timeout=30)

    # in this event loop

    async def start(self) -> None:
        """Start serving on the running event loop."""
        self._state = ServerState(self._config)
        site = serving(
            build_app(self._state),
            host=self._host,
            port=self._port,
            handler_cancellation=True,
            shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
        )
        self._serving = contextlib.AsyncExitStack()
        self.url = await self._serving.enter_async_context(site)

    async def stop(self) -> None:
        """Release hung requests and stop serving."""
        if self._state is not None:
            self._state.release_hangs()
        await self._serving.aclose()

    async def __aenter__(self) -> Self:
        """Start on the running loop."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        await self.stop()

    # in a thread of its own

    def __enter__(self) -> Self:
        """Start in a background thread with its own event loop; return once it listens."""
        self._thread = threading.Thread(target=self._thread_main, name="test-inference-server")
        self._thread.daemon = True
        self._thread.start()
        if not self._started.wait(timeout=30):
            raise RuntimeError("the test server thread did not start within 30 s")
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and its thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None
        self._loop = None

    def _thread_main(self) -> None:
        asyncio.run(self._serve_in_thread())

    async def _serve_in_thread(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.start()
        except OSError as exc:
            self._startup_error = exc
            return
        finally:
            self._loop = asyncio.get_running_loop()
            self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.stop()
