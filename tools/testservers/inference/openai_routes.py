"""OpenAI-compatible routes of the test server: chat, completions, embeddings.

Deterministic answers, so a test can check every line: a chat completion answers
``echo: <the last message's text>``, a completion ``echo: <the prompt>``, an embedding
is a vector made from a hash of its input. ``usage`` counts words (whitespace-separated)
as tokens: the prompt's in ``prompt_tokens``, the answer's in ``completion_tokens``.

What the routes do is set in an :class:`OpenAIConfig` (``POST /_control/openai/config``
with the fields to change; ``GET /_control/openai/stats``, ``POST /_control/openai/reset``):

- the latency is the server's (``latency_ms``, ``latency_max_ms`` of its ServerConfig);
- ``rate_limited_fraction``: that share of distinct request bodies (chosen by a hash of
  the body, so the same ones every run) is answered 429 with ``retry-after-ms:
  retry_after_ms`` the first time it arrives, and normally afterwards;
- ``requests_per_window`` / ``tokens_per_window``: a budget per window of ``window_s``
  seconds, stated on every answer as OpenAI does (``x-ratelimit-limit-requests``,
  ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests``, and ``-tokens``);
  a request over the budget is answered 429 with ``retry-after-ms`` until the window's
  end (counted in ``over_limit``).

:class:`OpenAIStats` counts requests per path, answers by status, the 429s of each kind,
and the tokens of the ``usage`` of every 200 answer.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import random
from typing import TYPE_CHECKING, Any, Final

import msgspec
import orjson
from aiohttp import web

from tools.testservers.inference.state import add_control_routes, json_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tools.testservers.inference.state import ServerState

CHAT: Final = "/v1/chat/completions"
COMPLETIONS: Final = "/v1/completions"
EMBEDDINGS: Final = "/v1/embeddings"


class OpenAIConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the OpenAI routes behave (the module docstring says what each field does)."""

    rate_limited_fraction: float = 0.0
    retry_after_ms: float = 20.0
    requests_per_window: int | None = None
    tokens_per_window: int | None = None
    window_s: float = 1.0
    embedding_dims: int = 8

    def __post_init__(self) -> None:
        """Refuse settings that cannot be acted on."""
        if not 0.0 <= self.rate_limited_fraction <= 1.0:
            raise ValueError("rate_limited_fraction must be in [0, 1]")
        if self.retry_after_ms < 0 or self.window_s <= 0 or self.embedding_dims < 1:
            raise ValueError("retry_after_ms >= 0, window_s > 0 and embedding_dims >= 1")
        for budget in (self.requests_per_window, self.tokens_per_window):
            if budget is not None and budget < 1:
                raise ValueError("a budget per window must be at least 1")


class OpenAIStats(msgspec.Struct, frozen=True, kw_only=True):
    """What the OpenAI routes received and answered since start or the last reset."""

    requests: int
    paths: dict[str, int]
    answers: dict[str, int]
    rate_limited: int
    """429s sent by ``rate_limited_fraction`` (first arrivals of chosen bodies)."""
    over_limit: int
    """429s sent because a window's budget was spent."""
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _BadRequest(Exception):  # noqa: N818 - internal signal: a 400 answer
    pass


def words(text: str) -> int:
    """Return the test server's token count of ``text``: its whitespace-separated words."""
    return len(text.split())


def _text(value: object) -> str:
    """Return the text of a message's content: a string, or the ``text`` of its parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(
            str(part.get("text", "")) for part in value if isinstance(part, dict)
        ).strip()
    return ""


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _chat(body: dict[str, Any], digest: str) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages: a non-empty array is required")
    texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
    answer = f"echo: {texts[-1] if texts else ''}"
    prompt, completion = sum(words(t) for t in texts), words(answer)
    return {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            },
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _completion(body: dict[str, Any], digest: str) -> dict[str, Any]:
    prompt = body.get("prompt")
    given: list[object] = prompt if isinstance(prompt, list) else [prompt]
    prompts = [p for p in given if isinstance(p, str)]
    if not prompts or len(prompts) != len(given):
        raise _BadRequest("prompt: a string or an array of strings is required")
    answers = [f"echo: {p}" for p in prompts]
    used, made = sum(words(p) for p in prompts), sum(words(a) for a in answers)
    return {
        "id": f"cmpl-{digest[:24]}",
        "object": "text_completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [
            {"index": i, "text": a, "finish_reason": "stop", "logprobs": None}
            for i, a in enumerate(answers)
        ],
        "usage": {"prompt_tokens": used, "completion_tokens": made, "total_tokens": used + made},
    }


def _vector(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    return [round((seed[i % len(seed)] - 127.5) / 127.5, 6) for i in range(dims)]


def _embeddings(body: dict[str, Any], dims: int) -> dict[str, Any]:
    value = body.get("input")
    given: list[object] = value if isinstance(value, list) else [value]
    inputs = [i for i in given if isinstance(i, str)]
    if not inputs or len(inputs) != len(given):
        raise _BadRequest("input: a string or an array of strings is required")
    used = sum(words(i) for i in inputs)
    return {
        "object": "list",
        "model": body.get("model"),
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(text, dims)}
            for i, text in enumerate(inputs)
        ],
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


class _Window:
    """One budget (requests or tokens) per window of the clock."""

    def __init__(self, limit: int, window_s: float, now: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.start = math.floor(now / window_s) * window_s
        self.used = 0

    def roll(self, now: float) -> None:
        start = math.floor(now / self.window_s) * self.window_s
        if start > self.start:
            self.start, self.used = start, 0

    def reset_ms(self, now: float) -> int:
        """Milliseconds to the window's end, rounded up (a client never comes back early)."""
        return max(1, math.ceil((self.start + self.window_s - now) * 1000))

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class OpenAIState:
    """The OpenAI routes' configuration and counters; used only from the server's loop."""

    def __init__(self, server: ServerState, config: OpenAIConfig | None = None) -> None:
        """Serve with the latency of ``server`` and the behaviour of ``config``."""
        self.server = server
        self.initial_config = config or OpenAIConfig()
        self.config = self.initial_config
        self._random = random.Random()  # noqa: S311 - latency jitter, not cryptography
        self.clear()

    def clear(self) -> None:
        """Zero the counters, forget which bodies were seen, start new windows."""
        self.requests = 0
        self.paths: collections.Counter[str] = collections.Counter()
        self.answers: collections.Counter[str] = collections.Counter()
        self.rate_limited = 0
        self.over_limit = 0
        self.tokens: collections.Counter[str] = collections.Counter()
        self._seen: set[str] = set()
        self._windows: dict[str, _Window] = {}

    def configure(self, **changes: object) -> OpenAIConfig:
        """Change the named fields (validated); budgets start over."""
        merged = {**msgspec.structs.asdict(self.config), **changes}
        self.config = msgspec.convert(merged, OpenAIConfig)
        self._windows = {}
        return self.config

    def reset(self) -> None:
        """Restore the initial configuration and zero the counters."""
        self.config = self.initial_config
        self.clear()

    def stats(self) -> OpenAIStats:
        """Return a snapshot of the counters."""
        return OpenAIStats(
            requests=self.requests,
            paths=dict(self.paths),
            answers=dict(self.answers),
            rate_limited=self.rate_limited,
            over_limit=self.over_limit,
            prompt_tokens=self.tokens["prompt_tokens"],
            completion_tokens=self.tokens["completion_tokens"],
            total_tokens=self.tokens["total_tokens"],
        )

    def _budgets(self, now: float) -> dict[str, _Window]:
        config = self.config
        for name, limit in (
            ("requests", config.requests_per_window),
            ("tokens", config.tokens_per_window),
        ):
            if limit is None:
                continue
            window = self._windows.get(name)
            if window is None:
                window = self._windows[name] = _Window(limit, config.window_s, now)
            window.roll(now)
        return self._windows

    @staticmethod
    def _budget_headers(budgets: dict[str, _Window], now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, window in budgets.items():
            headers[f"x-ratelimit-limit-{name}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(window.remaining)
            headers[f"x-ratelimit-reset-{name}"] = f"{window.reset_ms(now)}ms"
        return headers

    def _answer(self, status: int, payload: object, headers: dict[str, str]) -> web.Response:
        self.answers[str(status)] += 1
        return json_response(payload, status=status, headers=headers)

    async def handle(self, request: web.Request, path: str) -> web.Response:
        """Answer one request on ``path`` (see the module docstring)."""
        raw = await request.read()
        self.requests += 1
        self.paths[path] += 1
        server = self.server.config
        latency = server.latency_ms
        if server.latency_max_ms is not None:
            latency = self._random.uniform(server.latency_ms, server.latency_max_ms)
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        digest = _digest(raw)
        now = asyncio.get_running_loop().time()
        budgets = self._budgets(now)
        refused = self._refusal(digest, budgets, now)
        if refused is not None:
            return refused
        try:
            answer = self._answer_for(path, raw, digest)
        except _BadRequest as exc:
            error = {"message": str(exc), "type": "invalid_request_error"}
            return self._answer(400, {"error": error}, {})
        usage = answer["usage"]
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self.tokens[key] += int(usage.get(key, 0))
        if "requests" in budgets:
            budgets["requests"].used += 1
        if "tokens" in budgets:
            budgets["tokens"].used += int(usage["total_tokens"])
        return self._answer(200, answer, self._budget_headers(budgets, now))

    def _refusal(self, digest: str, budgets: dict[str, _Window], now: float) -> web.Response | None:
        """Return a 429 for a chosen body's first arrival or a spent budget, else None."""
        config = self.config
        if digest not in self._seen:
            self._seen.add(digest)
            if int(digest[:8], 16) < config.rate_limited_fraction * 0x1_0000_0000:
                self.rate_limited += 1
                headers = {"retry-after-ms": f"{config.retry_after_ms:g}"}
                error = {"message": "rate limited (test server)", "type": "rate_limit_exceeded"}
                return self._answer(429, {"error": error}, headers)
        spent = [w for w in budgets.values() if w.remaining <= 0]
        if not spent:
            return None
        self.over_limit += 1
        wait = max(w.reset_ms(now) for w in spent)
        headers = {**self._budget_headers(budgets, now), "retry-after-ms": str(wait)}
        error = {"message": "rate limit reached (test server)", "type": "requests"}
        return self._answer(429, {"error": error}, headers)

    def _answer_for(self, path: str, raw: bytes, digest: str) -> dict[str, Any]:
        """Return the answer to the body ``raw`` on ``path``; raise :class:`_BadRequest`."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _BadRequest(f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise _BadRequest("the body must be an object with a string model")
        if path == CHAT:
            return _chat(body, digest)
        if path == COMPLETIONS:
            return _completion(body, digest)
        return _embeddings(body, self.config.embedding_dims)


OPENAI_KEY: Final = web.AppKey("openai", OpenAIState)


def add_openai_routes(app: web.Application, server: ServerState) -> OpenAIState:
    """Add the OpenAI routes and their ``/_control/openai`` routes to ``app``."""
    state = app[OPENAI_KEY] = OpenAIState(server)

    def route(path: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            return await state.handle(request, path)

        return serve

    for path in (CHAT, COMPLETIONS, EMBEDDINGS):
        app.router.add_post(path, route(path))

    add_control_routes(app, "/_control/openai", state, readable_config=False)
    return state
