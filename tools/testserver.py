"""A misbehaving-on-purpose inference server for tests and benchmarks.

The model is the identity: each item's prediction is the item itself, so a test can check
that every result landed at the right index. It speaks the consumer's three protocols:

- ``POST /predict`` (``raw``): a JSON array is a list of items and is echoed back; any
  other value is one item and is echoed back. (An array sent as one ``raw`` item is
  therefore counted as its elements; the echo is still exact.)
- ``POST /v1/models/{name}:predict`` (``v1``): ``{"instances": [...]}`` answers
  ``{"predictions": [...]}`` with the same values.
- ``POST /v2/models/{name}/infer`` (``v2``): the input tensors come back as the output
  tensors, unchanged. Items are counted along the first dimension: rows of a ``[n, k]``
  tensor, records of one ``[n]`` tensor per key, or the JSON texts of a ``BYTES`` tensor.

Every item is identified by :func:`item_key` (its compact JSON re-encoding), under which
the server counts how many requests carried it (its attempts).

What the server does to a request is set per run in a :class:`ServerConfig`:

- ``latency_ms`` (and ``latency_max_ms`` for a uniform random latency) before answering;
- ``max_concurrency``: a request arriving while that many are in progress answers 429
  with ``Retry-After: retry_after_s`` at once;
- ``script``: actions consumed one per request, in order; when it runs out requests are
  served normally;
- ``item_scripts``: per item key, the action for its 1st, 2nd, ... attempt;
- items may also carry their own directives: an object item with ``"fail": "permanent"``
  is always answered ``poison_status``; ``"fail": <action>`` always that action;
  ``"fail": [<action>, ...]`` that action for its 1st, 2nd, ... attempt (attempt-based
  scripts need ``track_items``, on by default); and
  ``"delay_ms": <number>`` adds that much latency to its request.

An action is an HTTP status (``503``; ``200`` is a normal answer; 429 and 503 carry
``Retry-After``), ``"ok"``, ``"reset"`` (the connection is reset mid-request),
``"hang"`` (no answer until the client gives up or the server is reset), ``"truncated"``
(half the body, short of its ``Content-Length``, then a reset), ``"garbage"`` (200 with
a non-JSON body), ``"wrong_count"`` (one prediction fewer, or two for a single item) or
``"delay:<ms>"`` (answer normally after that much extra latency). When several apply,
a permanent item failure wins, then the request script, then the first item action
that is not ``ok``.

Three ways to run it:

1. In the test's event loop: ``async with TestInferenceServer(config) as server``.
2. In a background thread with its own loop: ``with TestInferenceServer(config) as
   server`` (for tests whose consumer runs as a subprocess).
3. As a process: ``python -m tools.testserver --port 0 --latency-ms 20`` prints its URL
   on standard output and serves until SIGTERM/SIGINT. ``GET /_control/stats``,
   ``GET``/``POST /_control/config`` (fields to change) and ``POST /_control/reset``
   script it from outside; these routes exist in the other modes too.

:meth:`TestInferenceServer.stats` reports what arrived: requests, items, answers by
outcome, requests in flight and the most seen at once, attempts per item key, request
sizes and protocols.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import math
import random
import signal
import socket
import struct
import sys
import threading
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeAlias, TypeVar, cast

import msgspec
import orjson
from aiohttp import web

from tools.http_serving import serving

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

__all__ = [
    "ServerConfig",
    "ServerState",
    "ServerStats",
    "TestInferenceServer",
    "build_app",
    "item_key",
    "main",
]

log = logging.getLogger(__name__)

ProtocolName: TypeAlias = Literal["raw", "v1", "v2"]
Action: TypeAlias = int | str
T = TypeVar("T")

NAMED_ACTIONS: Final = frozenset({"ok", "reset", "hang", "truncated", "garbage", "wrong_count"})
GARBAGE: Final = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
SHUTDOWN_TIMEOUT_S: Final = 0.5


def _check_action(action: Action) -> None:
    if isinstance(action, int):
        if not 200 <= action <= 599:
            raise ValueError(f"HTTP status {action} is outside 200-599")
        return
    if action in NAMED_ACTIONS:
        return
    if action.startswith("delay:"):
        try:
            ms = float(action.removeprefix("delay:"))
        except ValueError:
            ms = -1.0
        if ms >= 0:
            return
    raise ValueError(
        f"unknown action {action!r} (an HTTP status, delay:<ms>, or one of "
        f"{', '.join(sorted(NAMED_ACTIONS))})"
    )


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the server behaves; see the module docstring for each field's meaning."""

    latency_ms: float = 0.0
    latency_max_ms: float | None = None
    max_concurrency: int | None = None
    retry_after_s: float = 1.0
    script: tuple[Action, ...] = ()
    item_scripts: dict[str, tuple[Action, ...]] = msgspec.field(default_factory=dict)
    poison_status: int = 500
    track_items: bool = True
    # Request headers whose values are counted (lower-case names), for auth and tracing tests.
    record_headers: tuple[str, ...] = ("authorization", "traceparent", "x-api-key")

    def __post_init__(self) -> None:
        """Refuse settings that cannot be acted on."""
        if self.latency_ms < 0 or (
            self.latency_max_ms is not None and self.latency_max_ms < self.latency_ms
        ):
            raise ValueError("latency_ms must be >= 0 and latency_max_ms >= latency_ms")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        _check_action(self.poison_status)
        for action in self.script:
            _check_action(action)
        for actions in self.item_scripts.values():
            for action in actions:
                _check_action(action)


class ServerStats(msgspec.Struct, frozen=True, kw_only=True):
    """What the server received and how it answered, since start or the last reset.

    ``answers`` counts outcomes: HTTP statuses as strings (``"200"``, ``"429"``,
    ``"503"``...) and ``"reset"``, ``"hang"``, ``"truncated"``, ``"garbage"``,
    ``"wrong_count"``. ``rejected`` counts the 429s sent for exceeding
    ``max_concurrency`` (also in ``answers["429"]``). ``max_in_flight`` is the most
    requests in progress at once, counting those then rejected. ``attempts`` maps each
    :func:`item_key` to the number of requests that carried it (empty when
    ``track_items`` is off). ``request_sizes`` maps items per request to requests.
    """

    requests: int
    items: int
    answers: dict[str, int]
    rejected: int
    in_flight: int
    max_in_flight: int
    attempts: dict[str, int]
    request_sizes: dict[int, int]
    protocols: dict[str, int]
    headers: dict[str, int] = msgspec.field(default_factory=dict)
    """``"name: value"`` of each recorded header (see ``record_headers``) -> requests."""


def item_key(item: object) -> str:
    """Return the key the server counts an item's attempts under: its compact JSON."""
    return orjson.dumps(item).decode()


class BadRequestError(ValueError):
    """A request the identity model cannot read; answered 400 with this message."""


# --- reading requests and writing identity answers per protocol ------------------------


class _Parsed:
    """One request, read: its items and how to echo them (optionally miscounted)."""

    __slots__ = ("body", "envelope", "items", "protocol")

    def __init__(
        self, protocol: ProtocolName, body: bytes, items: list[Any], envelope: object
    ) -> None:
        self.protocol = protocol
        self.body = body
        self.items = items
        self.envelope = envelope

    def answer(self, *, miscount: bool = False) -> bytes:
        """Return the identity answer, or one with the wrong number of predictions."""
        if self.protocol == "raw":
            if not miscount:
                return self.body
            if isinstance(self.envelope, list):
                return orjson.dumps(_miscount(self.envelope))
            return orjson.dumps([self.envelope, self.envelope])
        if self.protocol == "v1":
            predictions = self.items
            return orjson.dumps(
                {"predictions": _miscount(predictions) if miscount else predictions}
            )
        envelope = cast("dict[str, Any]", self.envelope)
        outputs = [
            {
                "name": t["name"],
                "shape": t["shape"],
                "datatype": t["datatype"],
                "data": t["data"],
            }
            for t in envelope["inputs"]
        ]
        if miscount:
            outputs = [_miscount_tensor(t) for t in outputs]
        answer: dict[str, Any] = {"model_name": "identity", "outputs": outputs}
        if "id" in envelope:
            answer["id"] = envelope["id"]
        return orjson.dumps(answer)


def _miscount(values: list[Any]) -> list[Any]:
    """Return one value fewer, or the single value twice."""
    return values[:-1] if len(values) > 1 else values * 2


def _miscount_tensor(tensor: dict[str, Any]) -> dict[str, Any]:
    n = tensor["shape"][0]
    data = tensor["data"]
    width = len(data) // n if n else 0
    new_n = n - 1 if n > 1 else 2
    new_data = data[: new_n * width] if n > 1 else data * 2
    return {**tensor, "shape": [new_n, *tensor["shape"][1:]], "data": new_data}


def _loads(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from exc


def _parse_raw(body: bytes) -> _Parsed:
    value = _loads(body)
    items = value if isinstance(value, list) else [value]
    return _Parsed("raw", body, items, value)


def _parse_v1(body: bytes) -> _Parsed:
    value = _loads(body)
    if not isinstance(value, dict) or not isinstance(value.get("instances"), list):
        raise BadRequestError('expected an object with an "instances" array')
    return _Parsed("v1", body, value["instances"], value)


def _rows(flat: list[Any], dims: list[int]) -> list[Any]:
    if len(dims) == 1:
        return flat
    step = len(flat) // dims[0] if dims[0] else 0
    return [_rows(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]


def _bytes_item(value: object) -> object:
    if isinstance(value, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(value)
    return value


def _tensor_items(tensor: dict[str, Any]) -> list[Any]:
    shape: list[int] = tensor["shape"]
    data: list[Any] = tensor["data"]
    if tensor["datatype"] == "BYTES":
        return [_bytes_item(v) for v in data]
    if len(shape) == 1 or len(data) == shape[0]:
        return data
    if len(data) != math.prod(shape):
        raise BadRequestError(f"shape {shape} does not match {len(data)} data values")
    return _rows(data, shape)


def _parse_v2(body: bytes) -> _Parsed:
    value = _loads(body)
    inputs = value.get("inputs") if isinstance(value, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError('expected an object with a non-empty "inputs" array')
    for tensor in inputs:
        if not (
            isinstance(tensor, dict)
            and isinstance(tensor.get("name"), str)
            and isinstance(tensor.get("datatype"), str)
            and isinstance(tensor.get("data"), list)
            and isinstance(tensor.get("shape"), list)
            and tensor["shape"]
            and all(type(d) is int and d >= 0 for d in tensor["shape"])
        ):
            raise BadRequestError("each input needs name, datatype, shape [n, ...] and data")
    if len({t["shape"][0] for t in inputs}) != 1:
        raise BadRequestError("input tensors disagree on the first dimension")
    if len(inputs) == 1:
        items = _tensor_items(inputs[0])
    else:
        columns = [(t["name"], t["data"]) for t in inputs]
        items = [{name: data[i] for name, data in columns} for i in range(inputs[0]["shape"][0])]
    return _Parsed("v2", body, items, value)


PARSERS: Final[dict[ProtocolName, Callable[[bytes], _Parsed]]] = {
    "raw": _parse_raw,
    "v1": _parse_v1,
    "v2": _parse_v2,
}


# --- the server's state: configuration, counters, and the handlers ----------------------


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _abort(request: web.Request) -> None:
    """Reset the request's connection (RST, not an orderly close)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _json(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


class ServerState:
    """The behaviour and counters of one server; used only from its event loop's thread."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        """Start with ``config`` (default: a well-behaved identity server) and zero counts."""
        self.initial_config = config or ServerConfig()
        self.config = self.initial_config
        self._script: collections.deque[Action] = collections.deque(self.config.script)
        self._release = asyncio.Event()
        self._random = random.Random()  # noqa: S311 - latency jitter, not cryptography
        self.in_flight = 0
        self.clear_counters()

    # control

    def configure(self, **changes: object) -> ServerConfig:
        """Change the named config fields (validated); a new ``script`` restarts the script."""
        merged = {**msgspec.structs.asdict(self.config), **changes}
        self.config = msgspec.convert(merged, ServerConfig)
        if "script" in changes:
            self._script = collections.deque(self.config.script)
        return self.config

    def reset(self) -> None:
        """Zero the counters, restore the initial config, and release hung requests."""
        self.config = self.initial_config
        self._script = collections.deque(self.config.script)
        self.release_hangs()
        self.clear_counters()

    def release_hangs(self) -> None:
        """Let requests waiting in a ``hang`` finish (with a 503)."""
        self._release.set()
        self._release = asyncio.Event()

    def clear_counters(self) -> None:
        """Zero every counter except requests now in flight."""
        self.requests = 0
        self.items = 0
        self.rejected = 0
        self.answers: collections.Counter[str] = collections.Counter()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.request_sizes: collections.Counter[int] = collections.Counter()
        self.protocols: collections.Counter[str] = collections.Counter()
        self.headers: collections.Counter[str] = collections.Counter()
        self.max_in_flight = self.in_flight

    def stats(self) -> ServerStats:
        """Return a snapshot of the counters."""
        return ServerStats(
            requests=self.requests,
            items=self.items,
            answers=dict(self.answers),
            rejected=self.rejected,
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            attempts=dict(self.attempts),
            request_sizes=dict(self.request_sizes),
            protocols=dict(self.protocols),
            headers=dict(self.headers),
        )

    # serving

    async def handle(self, request: web.Request, protocol: ProtocolName) -> web.StreamResponse:
        """Count the request, pick its action, and answer accordingly."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._handle(request, protocol)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.Request, protocol: ProtocolName) -> web.StreamResponse:
        body = await request.read()
        self.requests += 1
        self.protocols[protocol] += 1
        for name in self.config.record_headers:
            seen = request.headers.get(name)
            if seen is not None:
                self.headers[f"{name}: {seen}"] += 1
        try:
            parsed = PARSERS[protocol](body)
        except BadRequestError as exc:
            self.answers["400"] += 1
            return _json({"error": str(exc)}, status=400)
        config = self.config
        items = parsed.items
        self.items += len(items)
        self.request_sizes[len(items)] += 1
        attempts = self._count_attempts(items) if config.track_items else None
        if config.max_concurrency is not None and self.in_flight > config.max_concurrency:
            self.rejected += 1
            return self._status(429)
        try:
            action, delay_ms = self._choose(items, attempts)
        except BadRequestError as exc:
            self.answers["400"] += 1
            return _json({"error": str(exc)}, status=400)
        if isinstance(action, str) and action.startswith("delay:"):
            delay_ms += float(action.removeprefix("delay:"))
            action = "ok"
        latency_ms = config.latency_ms
        if config.latency_max_ms is not None:
            latency_ms = self._random.uniform(config.latency_ms, config.latency_max_ms)
        if latency_ms + delay_ms > 0:
            await asyncio.sleep((latency_ms + delay_ms) / 1000)
        return await self._act(request, action, parsed)

    def _count_attempts(self, items: list[Any]) -> list[int]:
        counts = []
        for item in items:
            key = item_key(item)
            self.attempts[key] += 1
            counts.append(self.attempts[key])
        return counts

    def _choose(self, items: list[Any], attempts: list[int] | None) -> tuple[Action, float]:
        """Return the request's action and the extra latency its items ask for.

        Raises ``BadRequestError`` for an item directive that names no action.
        """
        scripted: Action = self._script.popleft() if self._script else "ok"
        item_action: Action = "ok"
        delay_ms = 0.0
        item_scripts = self.config.item_scripts
        for i, item in enumerate(items):
            attempt = attempts[i] if attempts is not None else 0
            action: Action = "ok"
            if isinstance(item, dict) and ("fail" in item or "delay_ms" in item):
                directive = item.get("fail")
                if directive == "permanent":
                    return self.config.poison_status, 0.0
                delay = item.get("delay_ms")
                if isinstance(delay, int | float) and not isinstance(delay, bool):
                    delay_ms = max(delay_ms, float(delay))
                action = _directive(directive, attempt, f"item {i}")
            if item_scripts and attempt and _is_ok(action):
                actions = item_scripts.get(item_key(item))
                if actions and attempt <= len(actions):
                    action = actions[attempt - 1]
            if _is_ok(item_action) and not _is_ok(action):
                item_action = action
        return (scripted if not _is_ok(scripted) else item_action), delay_ms

    async def _act(
        self, request: web.Request, action: Action, parsed: _Parsed
    ) -> web.StreamResponse:
        if isinstance(action, int) and action != 200:
            return self._status(action)
        if _is_ok(action):
            self.answers["200"] += 1
            return web.Response(body=parsed.answer(), content_type="application/json")
        self.answers[str(action)] += 1
        return await self._misbehave(request, action, parsed)

    async def _misbehave(
        self, request: web.Request, action: Action, parsed: _Parsed
    ) -> web.StreamResponse:
        if action == "reset":
            _abort(request)
            return web.Response(status=500)
        if action == "hang":
            await self._release.wait()
            return _json({"error": "released from a hang"}, status=503)
        if action == "garbage":
            return web.Response(body=GARBAGE, content_type="text/html")
        if action == "wrong_count":
            return web.Response(body=parsed.answer(miscount=True), content_type="application/json")
        # "truncated" (actions are validated on the way in): promise the whole answer,
        # send half of it, then reset the connection.
        full = parsed.answer()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(full)
        await response.prepare(request)
        await response.write(full[: len(full) // 2])
        _abort(request)
        return response

    def _status(self, status: int) -> web.Response:
        self.answers[str(status)] += 1
        headers = None
        if status in {429, 503}:
            headers = {"Retry-After": _retry_after(self.config.retry_after_s)}
        return _json({"error": f"test server answered {status}"}, status=status, headers=headers)


def _directive(value: object, attempt: int, where: str) -> Action:
    """Return the action an item's ``fail`` value asks for on its ``attempt``-th try."""
    if value is None:
        return "ok"
    if type(value) is list:
        if not attempt:  # attempts are not counted with track_items off
            return "ok"
        value = value[attempt - 1] if attempt <= len(value) else "ok"
    if type(value) in (int, str):
        action = cast("Action", value)
        try:
            _check_action(action)
        except ValueError as exc:
            raise BadRequestError(f"{where}: fail directive: {exc}") from exc
        return action
    raise BadRequestError(f"{where}: fail directive must be an action or a list of actions")


def _is_ok(action: Action) -> bool:
    return action in {"ok", 200}


# --- the application --------------------------------------------------------------------

STATE_KEY: Final = web.AppKey("state", ServerState)


def build_app(state: ServerState) -> web.Application:
    """Return the test server's application, serving ``state``."""
    app = web.Application()
    app[STATE_KEY] = state

    async def raw(request: web.Request) -> web.StreamResponse:
        return await state.handle(request, "raw")

    async def v1(request: web.Request) -> web.StreamResponse:
        return await state.handle(request, "v1")

    async def v2(request: web.Request) -> web.StreamResponse:
        return await state.handle(request, "v2")

    async def healthy(_: web.Request) -> web.Response:
        return _json({"live": True, "ready": True})

    app.router.add_post("/predict", raw)
    app.router.add_post("/v1/models/{name}:predict", v1)
    app.router.add_post("/v2/models/{name}/infer", v2)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", v2)
    app.router.add_get("/v2/health/live", healthy)
    app.router.add_get("/v2/health/ready", healthy)
    _add_control_routes(app, state)
    return app


def _add_control_routes(app: web.Application, state: ServerState) -> None:
    """Add ``/_control/...``: read the stats and config, change the config, reset."""

    async def get_stats(_: web.Request) -> web.Response:
        return web.Response(
            body=msgspec.json.encode(state.stats()), content_type="application/json"
        )

    async def get_config(_: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(state.config), content_type="application/json")

    async def post_config(request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"body is not valid JSON: {exc}"}, status=400)
        if not isinstance(changes, dict):
            return _json({"error": "expected an object of config fields"}, status=400)
        try:
            config = state.configure(**changes)
        except msgspec.ValidationError as exc:
            return _json({"error": str(exc)}, status=400)
        return web.Response(body=msgspec.json.encode(config), content_type="application/json")

    async def post_reset(_: web.Request) -> web.Response:
        state.reset()
        return _json({"reset": True})

    app.router.add_get("/_control/stats", get_stats)
    app.router.add_get("/_control/config", get_config)
    app.router.add_post("/_control/config", post_config)
    app.router.add_post("/_control/reset", post_reset)


# --- running it -------------------------------------------------------------------------


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


# --- as a process -----------------------------------------------------------------------


def _action(text: str) -> Action:
    action: Action = int(text) if text.strip().isdigit() else text.strip()
    _check_action(action)
    return action


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.testserver",
        description="An identity inference server that misbehaves as told, for tests and "
        "benchmarks. Prints its URL, then serves until SIGTERM or SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency per request")
    parser.add_argument(
        "--latency-max-ms", type=float, help="random latency, uniform in [latency-ms, this]"
    )
    parser.add_argument("--max-concurrency", type=int, help="429 beyond this many in flight")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds")
    parser.add_argument(
        "--script",
        type=lambda text: tuple(_action(a) for a in text.split(",") if a.strip()),
        default=(),
        help="actions for the first requests, comma-separated (e.g. 503,reset,ok)",
    )
    parser.add_argument("--poison-status", type=int, default=500, help="for fail=permanent")
    parser.add_argument(
        "--no-track-items", action="store_true", help="skip per-item attempt counts (faster)"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    return parser


async def _serve_forever(server: TestInferenceServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        log.info("test inference server listening on %s", server.url)
        await stop.wait()
    log.info("test inference server stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the test server as a process until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    config = ServerConfig(
        latency_ms=args.latency_ms,
        latency_max_ms=args.latency_max_ms,
        max_concurrency=args.max_concurrency,
        retry_after_s=args.retry_after,
        script=args.script,
        poison_status=args.poison_status,
        track_items=not args.no_track_items,
    )
    asyncio.run(_serve_forever(TestInferenceServer(config, host=args.host, port=args.port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
