"""The ``openai`` protocol: its codec, its URL choice, rate-limit headers, result annotations.

The pure parts (codec, routing, :mod:`consumer.ratelimits`, :mod:`consumer.annotations`)
are tested on their own, the pacer with a property test on an injected clock; the
dispatcher is tested against the test server's real OpenAI routes on the test's loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.annotations import annotate, custom_id_of, usage_of
from consumer.dispatcher import Dispatcher
from consumer.endpoints import DEFAULT_TARGET, Endpoint
from consumer.metrics import Metrics
from consumer.protocols import (
    BadItem,
    BadResponse,
    CodecOptions,
    codec_options,
    get_codec,
    route,
)
from consumer.ratelimits import RateLimitPacer, parse_duration, retry_after_s
from consumer.settings import Settings
from schemas import Usage
from tests.helpers import examples
from tools.testservers.inference import TestInferenceServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp

    from consumer.outcome import Outcome

CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "how are you"}]}


def line(custom_id: str = "r1", url: str = "/v1/chat/completions", body: object = None) -> bytes:
    """Return an OpenAI Batch line as an item."""
    return orjson.dumps(
        {"custom_id": custom_id, "method": "POST", "url": url, "body": body or CHAT_BODY}
    )


# --- the codec ----------------------------------------------------------------------------


def test_encode_posts_the_body_byte_for_byte() -> None:
    """A bare body is posted as written; a Batch line's body is cut out of it unchanged."""
    codec = get_codec("openai")
    body = b'{"model": "m",  "messages": [{"role":"user","content":"x\\u00e9"}]}'
    assert codec.encode([body]) == body
    item = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":' + body + b"}"
    assert codec.encode([item]) == body


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([b"{}", b"{}"], "one item per request, not 2"),
        ([b"[1, 2]"], "not a JSON object"),
        ([b'"text"'], "not a JSON object"),
        ([b'{"method":"GET","body":{"model":"m"}}'], "POST only"),
        ([b'{"url":3,"body":{"model":"m"}}'], "not valid"),
    ],
)
def test_encode_refuses_what_is_no_single_request(items: list[bytes], message: str) -> None:
    """Several items, a non-object, a GET, a Batch line of the wrong shape: bad items."""
    with pytest.raises(BadItem, match=message):
        get_codec("openai").encode(items)


def test_an_object_with_a_body_that_is_no_object_is_itself_the_body() -> None:
    """Only a ``body`` object makes a Batch line; ``{"body": "text"}`` is posted as is."""
    assert get_codec("openai").encode([b'{"body":"text"}']) == b'{"body":"text"}'


def test_decode_keeps_the_answer_object_whole() -> None:
    """The answer (choices and usage alike) is the single item's prediction."""
    answer = b'{"id":"c1","choices":[],"usage":{"prompt_tokens":1}}'
    assert get_codec("openai").decode(answer, 1) == [answer]
    with pytest.raises(BadResponse, match="not valid JSON"):
        get_codec("openai").decode(b"<html>", 1)
    with pytest.raises(BadResponse, match="unexpected response shape"):
        get_codec("openai").decode(b"[1]", 1)


# --- the URL ------------------------------------------------------------------------------

EMBEDDINGS_TOO = codec_options("openai", {"paths": "/v1/embeddings,/v1/completions"})


@pytest.mark.parametrize(
    ("endpoint", "item", "expected"),
    [
        # no url in the item: the endpoint's own, query included
        (
            "http://h:1/v1/chat/completions?k=1",
            b'{"model":"m"}',
            "http://h:1/v1/chat/completions?k=1",
        ),
        # the endpoint's path
        ("http://h:1/v1/chat/completions", line(), "http://h:1/v1/chat/completions"),
        # another configured path, on the endpoint's host (no query: it was the endpoint's)
        (
            "http://h:1/v1/chat/completions?k=1",
            line(url="/v1/embeddings"),
            "http://h:1/v1/embeddings",
        ),
        # a gateway's prefix: the Batch file's path selects the configured one ending with it
        ("https://gw/llm/v1/chat/completions", line(), "https://gw/llm/v1/chat/completions"),
    ],
)
def test_route_chooses_among_the_configured_urls(endpoint: str, item: bytes, expected: str) -> None:
    """The URL is the endpoint's, or a configured path the item's ``url`` names."""
    assert route(get_codec("openai", EMBEDDINGS_TOO), endpoint, [item]) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://elsewhere/v1/chat/completions", "never a host"),
        ("//elsewhere/v1/chat/completions", "never a host"),
        ("v1/chat/completions", "never a host"),
        ("/v1/moderations", "not a path configured for this endpoint"),
        ("/completions", "not a path configured"),  # a bare suffix selects nothing
    ],
)
def test_route_never_takes_a_host_or_an_unconfigured_path(url: str, message: str) -> None:
    """An item's ``url`` naming a host, or no configured path, is a bad item."""
    codec = get_codec("openai", EMBEDDINGS_TOO)
    with pytest.raises(BadItem, match=message):
        route(codec, "http://h:1/v1/chat/completions", [line(url=url)])


def test_other_protocols_always_post_to_the_endpoint() -> None:
    """Only the openai codec chooses a URL; raw, v1 and v2 ignore any ``url`` in items."""
    for name in ("raw", "v1", "v2"):
        assert route(get_codec(name), "http://h/x", [line(url="/y")]) == "http://h/x"


def test_paths_is_an_openai_option_and_shaping_options_are_not() -> None:
    """``paths`` applies to openai only; rows, columns and unwrap do not apply to openai."""
    assert codec_options("openai", {"paths": "/a, /b"}).paths == ("/a", "/b")
    with pytest.raises(ValueError, match="'paths' applies to the openai protocol, not v1"):
        codec_options("v1", {"paths": "/a"})
    with pytest.raises(ValueError, match="'rows' applies to the raw and v1 and v2 protocol"):
        codec_options("openai", {"rows": "true"})
    with pytest.raises(ValueError, match="not a URL path"):
        codec_options("openai", {"paths": "https://h/v1/embeddings"})
    with pytest.raises(ValueError, match="'unwrap' applies"):
        get_codec("openai", CodecOptions(unwrap=True))


# --- rate-limit headers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("2", 2.0),
        ("0.5", 0.5),
        ("", None),
        ("soon", None),
        ("5x", None),
        (None, None),
    ],
)
def test_parse_duration_reads_openai_resets(text: str | None, seconds: float | None) -> None:
    """Reset durations as OpenAI-compatible servers write them; anything else is None."""
    assert parse_duration(text) == seconds


def test_retry_after_ms_comes_before_retry_after() -> None:
    """``retry-after-ms`` (milliseconds) wins; ``Retry-After`` is read without it."""
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "7"}, 0.0) == 0.25
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "7"}, 0.0) == 7.0
    assert retry_after_s({"retry-after": "7"}, 0.0) == 7.0
    assert retry_after_s({}, 0.0) is None


def budget(remaining: int, limit: int | None = 100, reset: str = "1s") -> dict[str, str]:
    """Return the requests budget headers of one answer."""
    headers = {
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": reset,
    }
    if limit is not None:
        headers["x-ratelimit-limit-requests"] = str(limit)
    return headers


def test_pacer_leaves_a_plentiful_budget_alone() -> None:
    """Above a tenth of the limit left, requests start at once."""
    pacer = RateLimitPacer()
    pacer.observe(budget(50), now=10.0)
    assert [pacer.delay(10.0) for _ in range(5)] == [0.0] * 5


def test_pacer_holds_everything_until_an_empty_budget_resets() -> None:
    """Nothing left: no request starts before the reset the server stated."""
    pacer = RateLimitPacer()
    pacer.observe(budget(0, reset="300ms"), now=10.0)
    assert pacer.delay(10.0) == pytest.approx(0.3)
    assert pacer.delay(10.3) == 0.0


def test_pacer_counts_requests_in_flight_as_spent() -> None:
    """What is left minus the requests on the wire: 10 left and 10 in flight is nothing left."""
    pacer = RateLimitPacer()
    pacer.observe(budget(10, reset="500ms"), now=0.0, in_flight=10)
    assert pacer.delay(0.0) == pytest.approx(0.5)
    spread = RateLimitPacer()
    spread.observe(budget(12, reset="500ms"), now=0.0, in_flight=10)
    assert [spread.delay(0.0) for _ in range(3)] == pytest.approx([0.0, 0.25, 0.5])


def test_pacer_holds_for_spent_tokens_too() -> None:
    """An empty token budget pauses the endpoint like an empty request budget."""
    pacer = RateLimitPacer()
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s"}
    pacer.observe(headers, now=0.0)
    assert pacer.delay(0.5) == pytest.approx(1.5)


def test_pacer_never_believes_an_endless_reset() -> None:
    """A broken reset header cannot park the endpoint longer than ``max_wait_s``."""
    pacer = RateLimitPacer(max_wait_s=5.0)
    pacer.observe(budget(0, reset="100h"), now=0.0)
    assert pacer.delay(0.0) == 5.0


@settings(max_examples=examples(300), deadline=None)
@given(
    remaining=st.integers(1, 9),
    reset_ms=st.integers(1, 60_000),
    waiting=st.integers(1, 40),
)
def test_pacer_spreads_a_low_budget_over_the_reset(
    remaining: int, reset_ms: int, waiting: int
) -> None:
    """Under a tenth left, requests waiting at once start ``reset / remaining`` apart.

    So no more requests start before the reset than the server said remain.
    """
    pacer = RateLimitPacer()
    reset = reset_ms / 1000
    pacer.observe(budget(remaining, limit=100, reset=f"{reset_ms}ms"), now=0.0)
    starts = [pacer.delay(0.0) for _ in range(waiting)]
    spacing = reset / remaining
    assert starts == pytest.approx([i * spacing for i in range(waiting)])
    assert sum(1 for start in starts if start < reset - 1e-9) <= remaining


# --- annotations --------------------------------------------------------------------------


def test_annotations_echo_custom_ids_and_copy_usage() -> None:
    """custom_id from object items, usage from answer objects; None when neither exists."""
    answer = b'{"id":"c","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
    assert custom_id_of(line("r7")) == "r7"
    assert custom_id_of(b'{"custom_id": 7}') is None
    assert custom_id_of(msgspec.Raw(b'["custom_id"]')) is None
    assert usage_of(answer) == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert usage_of(b'{"usage":"lots"}') is None
    assert usage_of(b'{"usage":{"prompt_tokens":4,"total_tokens":4}}') == Usage(
        prompt_tokens=4, total_tokens=4
    )
    notes = annotate([line("r1"), b"{}"], [answer, b"{}"])
    assert notes is not None
    assert [(n.custom_id, n.usage) for n in notes] == [("r1", usage_of(answer)), (None, None)]
    assert annotate([line("r1")], None) is not None  # errors keep their custom_id
    assert annotate([b'{"x":1}', b"2"], [b'"setosa"', b"1"]) is None  # the fast path


# --- the dispatcher against the test server's OpenAI routes -------------------------------


@pytest.fixture
async def server() -> AsyncIterator[TestInferenceServer]:
    """Run the test server on the test's event loop."""
    async with TestInferenceServer() as running:
        yield running


async def configure(http: aiohttp.ClientSession, url: str, **changes: Any) -> None:
    """Set the test server's OpenAI routes' config fields."""
    async with http.post(f"{url}/_control/openai/config", json=changes) as answer:
        assert answer.status == 200, await answer.text()


async def openai_stats(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """Return the test server's OpenAI counters."""
    async with http.get(f"{url}/_control/openai/stats") as answer:
        stats: dict[str, Any] = await answer.json()
        return stats


def openai_settings(url: str, **values: Any) -> Settings:
    """Return settings with one openai endpoint (chat completions, embeddings too) at ``url``."""
    endpoint = Endpoint(
        DEFAULT_TARGET, f"{url}/v1/chat/completions", "openai", codec=EMBEDDINGS_TOO
    )
    fast = {"backoff_base_s": 0.001, "backoff_max_s": 0.005, **values}
    return Settings(bootstrap_servers="unused:9092", endpoints={DEFAULT_TARGET: endpoint}, **fast)


async def run_items(settings: Settings, items: list[bytes]) -> list[Outcome]:
    """Send each item as its own work unit, all at once, through one dispatcher."""
    import asyncio  # noqa: PLC0415 - only these tests gather

    dispatcher = Dispatcher(settings, metrics=Metrics())
    await dispatcher.start()
    try:
        endpoint = settings.endpoints[DEFAULT_TARGET]
        return list(await asyncio.gather(*(dispatcher.run(endpoint, [i]) for i in items)))
    finally:
        await dispatcher.close()


async def test_chat_and_embeddings_lines_reach_their_routes(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """Each line goes to the path its ``url`` names; the answer carries usage."""
    embed = {"model": "e", "input": "two words"}
    chat, embedding = await run_items(
        openai_settings(server.url), [line("c"), line("e", "/v1/embeddings", embed)]
    )
    assert chat.predictions is not None
    assert embedding.predictions is not None
    answer = orjson.loads(chat.predictions[0])
    assert answer["choices"][0]["message"]["content"] == "echo: how are you"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert orjson.loads(embedding.predictions[0])["usage"]["prompt_tokens"] == 2
    stats = await openai_stats(http, server.url)
    assert stats["paths"] == {"/v1/chat/completions": 1, "/v1/embeddings": 1}


async def test_a_429_waits_at_least_its_retry_after_ms(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """A 429 with ``retry-after-ms`` is retried no sooner than it asks (jitter is smaller)."""
    await configure(http, server.url, rate_limited_fraction=1.0, retry_after_ms=300)
    (outcome,) = await run_items(openai_settings(server.url), [line()])
    assert outcome.predictions is not None
    assert outcome.attempts == 2
    assert outcome.latency_ms >= 300


async def test_the_pacer_keeps_a_sequence_of_requests_inside_the_budget(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """One request at a time against 4 per window: the budget headers, honoured, avoid 429s.

    The server states what is left; at 0 the replica waits for the reset before the next
    request, so no request is refused for the budget.
    """
    await configure(http, server.url, requests_per_window=4, window_s=0.2)
    items = [
        line(f"r{i}", body={"model": "m", "messages": [{"content": f"n {i}"}]}) for i in range(13)
    ]
    outcomes = await run_items(openai_settings(server.url, max_in_flight=1), items)
    assert all(o.predictions is not None and o.attempts == 1 for o in outcomes)
    stats = await openai_stats(http, server.url)
    assert stats["over_limit"] == 0
    assert stats["answers"] == {"200": 13}


async def test_an_unconfigured_url_is_a_bad_item_without_a_request(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """A line for a path the endpoint does not have never reaches the server."""
    (outcome,) = await run_items(openai_settings(server.url), [line(url="/v1/moderations")])
    assert outcome.error_kind == "bad_item"
    assert outcome.attempts == 0
    assert (await openai_stats(http, server.url))["requests"] == 0


# --- the test server's OpenAI routes ------------------------------------------------------


async def post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any, Any]:
    """POST ``body``; return the status, the JSON answer and the headers."""
    async with http.post(url, data=orjson.dumps(body)) as answer:
        return answer.status, orjson.loads(await answer.read()), answer.headers


async def test_openai_routes_answer_deterministically_with_usage(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """Chat, completions and embeddings: the same body, the same answer; words as tokens."""
    url = server.url
    chat = {"model": "m", "messages": [{"role": "user", "content": [{"text": "two words"}]}]}
    first = await post(http, f"{url}/v1/chat/completions", chat)
    again = await post(http, f"{url}/v1/chat/completions", chat)
    assert first[:2] == again[:2]
    assert first[1]["choices"][0]["message"]["content"] == "echo: two words"
    assert first[1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    status, completion, _ = await post(
        http, f"{url}/v1/completions", {"model": "m", "prompt": ["a b", "c"]}
    )
    assert status == 200
    assert [c["text"] for c in completion["choices"]] == ["echo: a b", "echo: c"]
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    status, vectors, _ = await post(http, f"{url}/v1/embeddings", {"model": "e", "input": "x y"})
    assert status == 200
    assert len(vectors["data"][0]["embedding"]) == 8
    assert vectors["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    stats = await openai_stats(http, url)
    assert stats["answers"] == {"200": 4}
    assert stats["total_tokens"] == 5 + 5 + 8 + 2


async def test_openai_routes_refuse_bodies_they_cannot_read(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """No model, no messages, a prompt of numbers: 400 with an OpenAI-style error."""
    url = server.url
    for path, body in [
        ("/v1/chat/completions", {"messages": [{"content": "x"}]}),
        ("/v1/chat/completions", {"model": "m", "messages": []}),
        ("/v1/completions", {"model": "m", "prompt": [1, 2]}),
        ("/v1/embeddings", {"model": "m"}),
    ]:
        status, answer, _ = await post(http, f"{url}{path}", body)
        assert status == 400
        assert answer["error"]["type"] == "invalid_request_error"


async def test_openai_routes_state_their_budget_and_refuse_beyond_it(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """Budget headers on every answer; past the budget a 429 says when to come back."""
    await configure(http, server.url, requests_per_window=2, window_s=60)
    url = f"{server.url}/v1/embeddings"
    answers = [await post(http, url, {"model": "e", "input": f"n{i}"}) for i in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert [a[2]["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0", "0"]
    assert answers[0][2]["x-ratelimit-limit-requests"] == "2"
    reset = parse_duration(answers[2][2]["x-ratelimit-reset-requests"])
    assert reset is not None
    assert 0 < reset <= 60
    assert float(answers[2][2]["retry-after-ms"]) == pytest.approx(reset * 1000)
    assert (await openai_stats(http, server.url))["over_limit"] == 1


async def test_chosen_bodies_are_refused_once_with_retry_after_ms(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """With a fraction of 1 every body's first arrival is a 429, its second an answer."""
    await configure(http, server.url, rate_limited_fraction=1.0, retry_after_ms=40)
    url = f"{server.url}/v1/chat/completions"
    first = await post(http, url, CHAT_BODY)
    second = await post(http, url, CHAT_BODY)
    assert (first[0], first[2]["retry-after-ms"]) == (429, "40")
    assert second[0] == 200
    assert (await openai_stats(http, server.url))["rate_limited"] == 1


@settings(max_examples=examples(300), deadline=None)
@given(
    answers=st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from(["0", "200ms", "2s", "soon"])), max_size=6
    ),
    now=st.floats(0.0, 5.0),
)
def test_pacer_ready_is_a_delay_of_zero_that_reserves_nothing(
    answers: list[tuple[int, str]], now: float
) -> None:
    """``ready(now)``: ``delay(now)`` would be 0 and reserve nothing; asking changes nothing.

    The dispatcher asks ``ready`` to send a unit's first request without a coroutine (once
    an answer stated a budget: ``paced``); a pacer that holds (a pause) or spaces requests
    out (each start reserves the next) is not ready, and the unit asks ``delay`` as before.
    """
    pacer = RateLimitPacer()
    for at, (left, reset) in enumerate(answers):
        pacer.observe(budget(left, reset=reset, limit=100), now=at * 0.1)

    def state() -> tuple[float, ...]:
        return (pacer.pause_until, pacer.spacing_s, pacer.spacing_until, pacer.next_start)

    before = state()
    ready = pacer.ready(now)
    assert state() == before
    delay = pacer.delay(now)
    assert ready == (delay == 0.0 and state() == before)
    # Until an answer states a budget the dispatcher does not ask: ready, whatever the time.
    assert pacer.paced == bool(answers)
    assert ready or pacer.paced
