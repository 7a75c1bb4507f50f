"""The test server's aiohttp application: the protocols' routes, health, ``/_control``."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from tools.testservers.inference.openai_routes import add_openai_routes
from tools.testservers.inference.state import ServerState, add_control_routes, json_response

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
    add_control_routes(app, "/_control", state)
    return app
