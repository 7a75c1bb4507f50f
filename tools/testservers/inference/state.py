"""The server's state: its configuration, its counters, and the handling of one request.

:class:`ServerState` picks each request's action (a permanent item failure wins, then the
request script, then the first item action that is not ``ok``), waits the latency, and
answers: normally, with a status, or misbehaving (a reset, a hang, a truncated or garbage
body, a miscounted answer). It is used only from its event loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
import struct
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import msgspec
import orjson
from aiohttp import web

from consumer.limiter import Limiter
from tools.testservers.inference.config import ServerConfig, ServerStats, check_action, item_key
from tools.testservers.inference.identity import PARSERS, BadRequestError

if TYPE_CHECKING:
    from consumer.protocols import ProtocolName
    from tools.testservers.inference.config import Action
    from tools.testservers.inference.identity import Parsed

GARBAGE: Final = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
UNLIMITED: Final = 2**31  # the places when there is no max_concurrency


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


def json_response(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Return ``payload`` as a JSON answer with ``status`` and ``headers``."""
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


class Controlled(Protocol):
    """What ``/_control`` routes drive: stats to read, a config to change, a reset."""

    @property
    def config(self) -> object:
        """Return the configuration in force."""
        ...

    def stats(self) -> object:
        """Return the counters since the last reset."""
        ...

    def configure(self, **changes: object) -> object:
        """Change config fields (``msgspec.ValidationError`` for a bad one); return it."""
        ...

    def reset(self) -> None:
        """Zero the counters."""
        ...


def add_control_routes(
    app: web.Application, prefix: str, target: Controlled, *, readable_config: bool = True
) -> None:
    """Add ``PREFIX/stats``, ``PREFIX/config`` (POST, and GET if readable) and ``PREFIX/reset``."""

    async def get_stats(_: web.Request) -> web.Response:
        return web.Response(
            body=msgspec.json.encode(target.stats()), content_type="application/json"
        )

    async def get_config(_: web.Request) -> web.Response:
        return web.Response(
            body=msgspec.json.encode(target.config), content_type="application/json"
        )

    async def post_config(request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return json_response({"error": f"body is not valid JSON: {exc}"}, status=400)
        if not isinstance(changes, dict):
            return json_response({"error": "expected an object of config fields"}, status=400)
        try:
            config = target.configure(**changes)
        except msgspec.ValidationError as exc:
            return json_response({"error": str(exc)}, status=400)
        return web.Response(body=msgspec.json.encode(config), content_type="application/json")

    async def post_reset(_: web.Request) -> web.Response:
        target.reset()
        return json_response({"reset": True})

    app.router.add_get(f"{prefix}/stats", get_stats)
    if readable_config:
        app.router.add_get(f"{prefix}/config", get_config)
    app.router.add_post(f"{prefix}/config", post_config)
    app.router.add_post(f"{prefix}/reset", post_reset)


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
        # The capacity: requests admitted within max_concurrency hold a place; in the
        # queue mode the others wait for one, first come, first served.
        self._slots = Limiter(UNLIMITED)
        self._follow_capacity()
        self.clear_counters()

    # control

    def configure(self, **changes: object) -> ServerConfig:
        """Change the named config fields (validated); a new ``script`` restarts the script."""
        merged = {**msgspec.structs.asdict(self.config), **changes}
        self.config = msgspec.convert(merged, ServerConfig)
        if "script" in changes:
            self._script = collections.deque(self.config.script)
        self._follow_capacity()
        return self.config

    def _follow_capacity(self) -> None:
        """Set the places to ``max_concurrency`` (waiters are admitted if it grew)."""
        self._slots.limit = self.config.max_concurrency or UNLIMITED

    def reset(self) -> None:
        """Zero the counters, restore the initial config, and release hung requests."""
        self.config = self.initial_config
        self._script = collections.deque(self.config.script)
        self._follow_capacity()
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
        self.latency_ms: collections.Counter[int] = collections.Counter()
        self.max_in_flight = self.in_flight
        self.max_serving = self._slots.in_use

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
            serving=self._slots.in_use,
            max_serving=self.max_serving,
            queued=self._slots.waiting,
            latency_ms=dict(self.latency_ms),
        )

    # serving

    async def handle(self, request: web.Request, protocol: ProtocolName) -> web.StreamResponse:
        """Count the request, pick its action, and answer accordingly."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        arrived = asyncio.get_running_loop().time()
        try:
            response = await self._handle(request, protocol)
        finally:
            self.in_flight -= 1
        if response.status == 200:
            took = asyncio.get_running_loop().time() - arrived
            self.latency_ms[int(took * 1000)] += 1
        return response

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
            return json_response({"error": str(exc)}, status=400)
        config = self.config
        items = parsed.items
        self.items += len(items)
        self.request_sizes[len(items)] += 1
        attempts = self._count_attempts(items) if config.track_items else None
        if config.outage:
            self.answers["down"] += 1
            _abort(request)
            return web.Response(status=500)
        slots = self._slots
        if config.overload == "reject" and slots.in_use >= slots.limit:
            self.rejected += 1
            return self._status(429)
        await slots.acquire()
        try:
            self.max_serving = max(self.max_serving, slots.in_use)
            return await self._serve(request, parsed, items, attempts)
        finally:
            slots.release()

    async def _serve(
        self, request: web.Request, parsed: Parsed, items: list[Any], attempts: list[int] | None
    ) -> web.StreamResponse:
        """Answer an admitted request: its action, after the latency."""
        config = self.config
        try:
            action, delay_ms = self._choose(items, attempts)
        except BadRequestError as exc:
            self.answers["400"] += 1
            return json_response({"error": str(exc)}, status=400)
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
        self, request: web.Request, action: Action, parsed: Parsed
    ) -> web.StreamResponse:
        if isinstance(action, int) and action != 200:
            return self._status(action)
        if _is_ok(action):
            self.answers["200"] += 1
            return web.Response(body=parsed.answer(), content_type="application/json")
        self.answers[str(action)] += 1
        return await self._misbehave(request, action, parsed)

    async def _misbehave(
        self, request: web.Request, action: Action, parsed: Parsed
    ) -> web.StreamResponse:
        if action == "reset":
            _abort(request)
            return web.Response(status=500)
        if action == "hang":
            await self._release.wait()
            return json_response({"error": "released from a hang"}, status=503)
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
        return json_response(
            {"error": f"test server answered {status}"}, status=status, headers=headers
        )


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
            check_action(action)
        except ValueError as exc:
            raise BadRequestError(f"{where}: fail directive: {exc}") from exc
        return action
    raise BadRequestError(f"{where}: fail directive must be an action or a list of actions")


def _is_ok(action: Action) -> bool:
    return action in {"ok", 200}
