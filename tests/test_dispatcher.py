"""The dispatcher against real HTTP servers: final 500s, error messages, bad items, the queue.

Every test runs a real aiohttp server on the test's event loop (the project's test
inference server, or a small app whose 500 answers a test chooses) and a real
:class:`~consumer.dispatcher.Dispatcher` with its own session and limiter.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from consumer.answers import ERROR_SNIPPET_CHARS, error_snippet
from consumer.dispatcher import Dispatcher
from consumer.endpoints import DEFAULT_TARGET, Endpoint
from consumer.http_session import request_headers
from consumer.limiter import Place
from consumer.metrics import Metrics
from consumer.protocols import CodecOptions
from consumer.settings import Settings
from tools.modelserver.http_serving import serving
from tools.testservers.inference import ServerConfig, TestInferenceServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from consumer.outcome import Outcome
    from consumer.protocols import ProtocolName

TRACEBACK = "\n".join(
    [
        "Traceback (most recent call last):",
        *(
            f'  File "/srv/model/layer_{i}.py", line {i}, in predict\n    x = f(x)'
            for i in range(60)
        ),
        "ValueError: X has 3 features, but LogisticRegression is expecting 4 features as input.",
    ]
)


def settings_for(
    url: str, protocol: ProtocolName = "v1", codec: CodecOptions | None = None, **values: Any
) -> Settings:
    """Return settings with one default endpoint at ``url`` and fast retries."""
    endpoint = Endpoint(DEFAULT_TARGET, url, protocol, codec=codec or CodecOptions())
    fast = {"backoff_base_s": 0.001, "backoff_max_s": 0.005, **values}
    return Settings(bootstrap_servers="unused:9092", endpoints={DEFAULT_TARGET: endpoint}, **fast)


async def dispatch(
    settings: Settings, items: list[object], metrics: Metrics | None = None
) -> Outcome:
    """Run one work unit of ``items`` through a fresh dispatcher."""
    dispatcher = Dispatcher(settings, metrics=metrics)
    await dispatcher.start()
    try:
        return await dispatcher.run(
            settings.endpoints[DEFAULT_TARGET], [orjson.dumps(i) for i in items]
        )
    finally:
        await dispatcher.close()


@pytest.fixture
async def error_server() -> AsyncIterator[tuple[str, list[int]]]:
    """Serve ``POST /same`` (a fixed 500), ``/varying`` (500s that differ), ``/traceback``.

    Yields the base URL and the list of statuses answered (one per request).
    """
    answered: list[int] = []

    def route(make: Callable[[int], web.Response]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            answered.append(500)
            return make(len(answered))

        return handle

    app = web.Application()
    app.router.add_post(
        "/same", route(lambda _: web.json_response({"error": "boom: bad input"}, status=500))
    )
    app.router.add_post(
        "/varying", route(lambda n: web.json_response({"error": f"request {n}"}, status=500))
    )
    app.router.add_post("/traceback", route(lambda _: web.Response(text=TRACEBACK, status=500)))
    async with serving(app, host="127.0.0.1", port=0) as url:
        yield url, answered


# --- error messages -------------------------------------------------------------------------


def test_error_snippet_keeps_the_end_of_a_traceback() -> None:
    """The line saying what is wrong (the last) survives; the text is capped at a line start."""
    snippet = error_snippet(TRACEBACK.encode())
    assert len(TRACEBACK) > ERROR_SNIPPET_CHARS
    assert len(snippet) <= ERROR_SNIPPET_CHARS
    assert snippet.endswith("expecting 4 features as input.")
    kept = snippet.removeprefix("\u2026")
    assert TRACEBACK.endswith("\n" + kept)  # from the start of a line


@pytest.mark.parametrize(
    ("body", "snippet"),
    [
        (b'{"error": "X has 3 features"}', "X has 3 features"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"error": {"message": "quota", "code": 7}}', "quota"),
        (b"  plain text\n", "plain text"),
        (b'{"errors": ["x"]}', '{"errors": ["x"]}'),
        (b"\xff\xfeoops", "\ufffd\ufffdoops"),
        (b"", ""),
    ],
)
def test_error_snippet_takes_the_message_out_of_json_errors(body: bytes, snippet: str) -> None:
    """MLServer, KServe and Triton wrap the message in ``error``; FastAPI in ``detail``."""
    assert error_snippet(body) == snippet


def test_error_snippet_without_line_breaks_keeps_the_last_characters() -> None:
    """A long single line keeps its last ``cap - 1`` characters after an ellipsis."""
    assert error_snippet(b"a" * 50 + b"END", cap=10) == "\u2026aaaaaaEND"


async def test_a_long_500_body_reaches_the_result_by_its_end(
    error_server: tuple[str, list[int]],
) -> None:
    """The error result's message ends with the traceback's last line, not its first 300."""
    url, _ = error_server
    outcome = await dispatch(settings_for(url + "/traceback", max_attempts=1), [1])
    assert outcome.error_kind == "http_status"
    assert outcome.http_status == 500
    assert outcome.error_message is not None
    assert "HTTP 500 Internal Server Error: \u2026" in outcome.error_message
    assert outcome.error_message.endswith("expecting 4 features as input.")


# --- answers over the size cap ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/declared", "response of 400 bytes exceeds the 300-byte cap"),
        ("/streamed", "response exceeds the 300-byte cap"),
    ],
)
async def test_a_2xx_answer_over_the_cap_is_response_too_large(path: str, message: str) -> None:
    """Over ``max_response_bytes``, declared or counted, a 200 is a final error, not a body."""

    async def declared(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'"' + b"x" * 398 + b'"', content_type="application/json")

    async def streamed(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(10):
            await response.write(b" " * 40)
        await response.write(b"[1]")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/declared", declared)
    app.router.add_post("/streamed", streamed)
    async with serving(app, host="127.0.0.1", port=0) as url:
        outcome = await dispatch(settings_for(url + path, "raw", max_response_bytes=300), [1])
    assert (outcome.error_kind, outcome.http_status, outcome.attempts) == (
        "response_too_large",
        200,
        1,
    )
    assert outcome.error_message == message


# --- the same 500 answer, repeated -----------------------------------------------------------


async def test_the_same_500_three_times_is_final(error_server: tuple[str, list[int]]) -> None:
    """A model failing on its input with the same message is not asked 60 times."""
    url, answered = error_server
    outcome = await dispatch(settings_for(url + "/same"), [1])
    assert (outcome.error_kind, outcome.http_status, outcome.attempts) == ("http_status", 500, 3)
    assert len(answered) == 3
    assert outcome.error_message == (
        "HTTP 500 Internal Server Error: boom: bad input (the same answer 3 times: the model "
        "fails on this input, not retried further)"
    )


@pytest.mark.parametrize(("path", "same"), [("/varying", 3), ("/same", 0)])
async def test_500s_that_differ_or_with_the_check_off_are_retried_to_the_budget(
    error_server: tuple[str, list[int]], path: str, same: int
) -> None:
    """Different bodies are a flaky server, not a verdict; ``max_same_error=0`` turns it off."""
    url, answered = error_server
    outcome = await dispatch(settings_for(url + path, max_attempts=6, max_same_error=same), [1])
    assert (outcome.error_kind, outcome.attempts, len(answered)) == ("http_status", 6, 6)
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("gave up after 6 attempts in ")


async def test_the_same_503_is_never_final() -> None:
    """A server answering 503 (loading, restarting) keeps the unit's whole patience."""
    async with TestInferenceServer(ServerConfig(poison_status=503, retry_after_s=0)) as server:
        settings = settings_for(server.endpoint("v1"), max_attempts=5)
        outcome = await dispatch(settings, [{"fail": "permanent"}])
    assert (outcome.error_kind, outcome.http_status, outcome.attempts) == ("http_status", 503, 5)


# --- items the codec cannot shape -----------------------------------------------------------


async def test_a_bad_item_fails_without_a_request() -> None:
    """An object missing a stated column gets ``bad_item`` with 0 attempts; nothing is sent."""
    codec = CodecOptions(rows=True, columns=("a", "b"))
    async with TestInferenceServer() as server:
        outcome = await dispatch(settings_for(server.endpoint("v1"), codec=codec), [{"a": 1}])
        assert server.stats().requests == 0
    assert (outcome.error_kind, outcome.attempts, outcome.http_status) == ("bad_item", 0, None)
    assert outcome.error_message == "item 0 of the request has no 'b' (columns: a, b)"


async def test_codec_options_shape_what_the_server_receives() -> None:
    """With ``rows`` the identity server sees (and echoes) rows in the stated column order."""
    codec = CodecOptions(rows=True, columns=("b", "a"))
    async with TestInferenceServer() as server:
        outcome = await dispatch(
            settings_for(server.endpoint("v1"), codec=codec), [{"a": 1, "b": 2}, {"b": 3, "a": 4}]
        )
    assert outcome.predictions == [b"[2,1]", b"[3,4]"]


# --- the queue and the latency ----------------------------------------------------------------


async def test_waiting_for_a_request_slot_is_queue_time_not_latency() -> None:
    """A unit that waits for a free slot reports that wait as ``queue_ms``.

    Bounds by construction, not timings: the slot is held for ``hold`` seconds, so the
    unit waited at least that long; its latency starts once it has the slot, so it is at
    most the time from the release to the answer.
    """
    hold = 0.3
    metrics = Metrics()
    async with TestInferenceServer() as server:
        settings = settings_for(server.endpoint("v1"), max_in_flight=1)
        dispatcher = Dispatcher(settings, metrics=metrics)
        await dispatcher.start()
        try:
            await dispatcher.limiter.acquire()
            unit = asyncio.create_task(
                dispatcher.run(settings.endpoints[DEFAULT_TARGET], [b"1"]),
            )
            await asyncio.sleep(hold)
            released = time.monotonic()
            dispatcher.limiter.release()
            outcome = await unit
            after_release_ms = (time.monotonic() - released) * 1000
        finally:
            await dispatcher.close()
    assert outcome.predictions == [b"1"]
    assert outcome.queue_ms >= hold * 1000
    assert outcome.latency_ms <= after_release_ms
    assert metrics.registry.get_sample_value("batch_runner_queue_wait_seconds_count") == 1


# --- request headers --------------------------------------------------------------------------


async def test_requests_carry_our_user_agent_unless_the_endpoint_names_its_own() -> None:
    """Each request names the replica as its User-Agent, once; an endpoint's own header wins.

    The endpoint's headers replace ours whatever their case (no header sent twice), and a
    message's trace headers are added to them.
    """
    seen: list[dict[str, list[str]]] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append({k.lower(): request.headers.getall(k) for k in request.headers})
        return web.json_response({"predictions": [1]})

    app = web.Application()
    app.router.add_post("/predict", handle)
    async with serving(app, host="127.0.0.1", port=0) as url:
        plain = settings_for(f"{url}/predict")
        await dispatch(plain, [{"i": 1}])
        endpoint = Endpoint(
            DEFAULT_TARGET, f"{url}/predict", "v1", headers={"user-agent": "mine/2", "X-Key": "k"}
        )
        own = Settings(bootstrap_servers="unused:9092", endpoints={DEFAULT_TARGET: endpoint})
        dispatcher = Dispatcher(own)
        await dispatcher.start()
        try:
            trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
            await dispatcher.run(endpoint, [b'{"i":2}'], trace)
        finally:
            await dispatcher.close()
    assert seen[0]["user-agent"] == ["kafka-batch-runner"]
    assert seen[0]["content-type"] == ["application/json"]
    assert seen[1]["user-agent"] == ["mine/2"]
    assert seen[1]["x-key"] == ["k"]
    assert seen[1]["traceparent"] == [trace["traceparent"]]
    assert seen[1]["content-type"] == ["application/json"]


async def test_requests_carry_one_json_content_type_whoever_opened_the_session() -> None:
    """The body is sent as ``application/json``, once: on our session, on one given to us.

    Our session adds the ``Content-Type`` as aiohttp adds its own headers (the body goes
    to aiohttp as bytes, whose own type would be ``application/octet-stream``); a session
    given to the dispatcher gets it in the endpoint's headers. An endpoint's own
    ``content-type`` replaces ours in any letter case.
    """
    seen: list[dict[str, list[str]]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append({k.lower(): request.headers.getall(k) for k in request.headers})
        assert orjson.loads(body) == {"instances": [{"i": 1}]}
        return web.json_response({"predictions": [1]})

    app = web.Application()
    app.router.add_post("/predict", handle)
    async with serving(app, host="127.0.0.1", port=0) as url:
        plain = settings_for(f"{url}/predict")
        assert (await dispatch(plain, [{"i": 1}])).predictions == [b"1"]
        async with aiohttp.ClientSession() as session:
            dispatcher = Dispatcher(plain, session=session)
            await dispatcher.start()
            outcome = await dispatcher.run(plain.endpoints[DEFAULT_TARGET], [b'{"i":1}'])
            assert outcome.predictions == [b"1"]
        endpoint = Endpoint(
            DEFAULT_TARGET, f"{url}/predict", "v1", headers={"content-TYPE": "application/x-mine"}
        )
        own = Settings(bootstrap_servers="unused:9092", endpoints={DEFAULT_TARGET: endpoint})
        assert (await dispatch(own, [{"i": 1}])).predictions == [b"1"]
    assert [s["content-type"] for s in seen] == [
        ["application/json"],
        ["application/json"],
        ["application/x-mine"],
    ]
    assert [s["user-agent"] for s in seen] == [["kafka-batch-runner"]] * 3


def test_a_codec_of_another_content_type_names_it_in_the_request_headers() -> None:
    """Only JSON goes without headers of its own: another content type is a request header."""
    assert request_headers({}) is None
    assert request_headers({}, content_type="application/json") is None
    other = request_headers({}, content_type="text/csv")
    assert other is not None
    assert dict(other) == {"Content-Type": "text/csv"}
    given = request_headers({}, ours=True)
    assert given is not None
    assert dict(given) == {"User-Agent": "kafka-batch-runner", "Content-Type": "application/json"}


async def test_every_answer_and_a_cancel_give_the_one_connection_back() -> None:
    """With a pool of one connection, each request leaves it for the next one.

    A 2xx read in full, a 500, an answer over the size cap (declared; streamed, the rest
    of it held back by the server), a body the codec cannot read and a request cancelled
    while the server holds it: each is followed by a request that needs the connection
    (a response left unreleased would hold it for good).
    """
    hold = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        kind = request.match_info["kind"]
        if kind == "stream":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b" " * 400)
            await hold.wait()
            return response
        if kind == "hang":
            await hold.wait()
        if kind == "error":
            return web.Response(status=500, text="boom")
        if kind == "big":
            return web.json_response({"predictions": ["x" * 400]})
        if kind == "bad":
            return web.Response(body=b"not json", content_type="application/json")
        return web.json_response({"predictions": [1]})

    app = web.Application()
    app.router.add_post("/{kind}", handle)
    async with serving(app, host="127.0.0.1", port=0) as url:
        settings = settings_for(
            url, max_in_flight=1, max_response_bytes=300, max_attempts=1, max_same_error=1
        )
        dispatcher = Dispatcher(settings)
        await dispatcher.start()
        try:

            async def send(kind: str) -> Outcome:
                endpoint = Endpoint(DEFAULT_TARGET, f"{url}/{kind}", "v1")
                return await asyncio.wait_for(dispatcher.run(endpoint, [b"1"]), 5)

            kinds = []
            for kind in ("ok", "error", "big", "stream", "bad"):
                kinds.append((await send(kind)).error_kind)
                assert (await send("ok")).predictions == [b"1"]
            hanging = asyncio.create_task(send("hang"))
            await asyncio.sleep(0.2)
            hanging.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hanging
            assert (await send("ok")).predictions == [b"1"]
        finally:
            hold.set()
            await dispatcher.close()
    assert kinds == [
        None,
        "http_status",
        "response_too_large",
        "response_too_large",
        "bad_response",
    ]


@pytest.mark.parametrize("held", [True, False], ids=["held-place", "no-place"])
async def test_a_2xx_is_recorded_by_the_breaker_until_a_full_window_is_good(
    held: bool,  # noqa: FBT001 - a parameter of the case
) -> None:
    """A 2xx answer passes the breaker by only while its last 20 answers were all good.

    Until then each one is recorded: the 20th good answer in a row (from the start, and
    again after a refused one) makes the window all good, not an answer sooner. Units
    sent on a place the limiter gave them (the intake's; the shared ticket under a fixed
    limit) and units that take one themselves alike; every place is given back.
    """
    app = web.Application()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if request.match_info["kind"] == "busy":
            return web.Response(status=503, text="busy")
        return web.json_response({"predictions": [1]})

    app.router.add_post("/{kind}", handle)
    async with serving(app, host="127.0.0.1", port=0) as url:
        settings = settings_for(url, max_attempts=1)
        dispatcher = Dispatcher(settings)
        await dispatcher.start()
        guard = dispatcher.guards[DEFAULT_TARGET]
        try:
            seen = []
            for kind in ["ok"] * 20 + ["busy"] + ["ok"] * 20:
                place = None
                if held:
                    guard.limiter.submit(lambda: True)
                    place = Place(guard.limiter, time.monotonic())
                    place.held = True
                endpoint = Endpoint(DEFAULT_TARGET, f"{url}/{kind}", "v1")
                await dispatcher.run(endpoint, [b"1"], None, None, None, place)
                seen.append(guard.breaker.all_up)
                assert guard.limiter.in_use == 0
        finally:
            await dispatcher.close()
    assert seen == [False] * 19 + [True] + [False] * 20 + [True]
