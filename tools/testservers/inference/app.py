"""The test server's aiohttp application: the protocols' routes, health, ``/_control``."""

from __future__ import annotations

from typing import Final

import msgspec
import orjson
from aiohttp import web

from tools.testservers.inference.openai_routes import add_openai_routes
from tools.testservers.inference.state import ServerState, json_response

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
        return json_response({"live": True, "ready": True})

    app.router.add_post("/predict", raw)
    app.router.add_post("/v1/models/{name}:predict", v1)
    app.router.add_post("/v2/models/{name}/infer", v2)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", v2)
    app.router.add_get("/v2/health/live", healthy)
    app.router.add_get("/v2/health/ready", healthy)
    add_openai_routes(app, state)  # /v1/chat/completions, /v1/completions, /v1/embeddings
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
            return json_response({"error": f"body is not valid JSON: {exc}"}, status=400)
        if not isinstance(changes, dict):
            return json_response({"error": "expected an object of config fields"}, status=400)
        try:
            config = state.configure(**changes)
        except msgspec.ValidationError as exc:
            return json_response({"error": str(exc)}, status=400)
        return web.Response(body=msgspec.json.encode(config), content_type="application/json")

    async def post_reset(_: web.Request) -> web.Response:
        state.reset()
        return json_response({"reset": True})

    app.router.add_get("/_control/stats", get_stats)
    app.router.add_get("/_control/config", get_config)
    app.router.add_post("/_control/config", post_config)
    app.router.add_post("/_control/reset", post_reset)
