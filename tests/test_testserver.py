"""The test inference server: identity answers, each scripted misbehaviour, its counters."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import orjson
import pytest
import requests

from consumer.protocols import DEFAULT_OPTIONS, BadResponse, CodecOptions, get_codec
from tools.testservers.inference import ServerConfig, TestInferenceServer, item_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from consumer.protocols import ProtocolName


@pytest.fixture
async def server() -> AsyncIterator[TestInferenceServer]:
    """Yield a well-behaved test server running on the test's event loop."""
    async with TestInferenceServer() as running:
        yield running


class Answer(msgspec.Struct):
    """One HTTP answer as read by the client."""

    status: int
    headers: dict[str, str]
    body: bytes


async def send(
    http: aiohttp.ClientSession,
    server: TestInferenceServer,
    items: list[Any],
    protocol: ProtocolName = "v1",
    *,
    timeout_s: float = 10.0,
    options: CodecOptions = DEFAULT_OPTIONS,
) -> Answer:
    """POST ``items`` encoded by the consumer's codec for ``protocol`` (with ``options``)."""
    body = get_codec(protocol, options).encode([orjson.dumps(item) for item in items])
    async with http.post(
        server.endpoint(protocol),
        data=body,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as response:
        return Answer(response.status, dict(response.headers), await response.read())


async def predictions(
    http: aiohttp.ClientSession,
    server: TestInferenceServer,
    items: list[Any],
    protocol: ProtocolName = "v1",
    options: CodecOptions = DEFAULT_OPTIONS,
) -> list[Any]:
    """Send ``items`` and return the decoded predictions of a 200 answer."""
    answer = await send(http, server, items, protocol, options=options)
    assert answer.status == 200, answer
    codec = get_codec(protocol, options)
    return [orjson.loads(p) for p in codec.decode(answer.body, len(items))]


async def until(probe: Any, *, timeout_s: float = 10.0) -> None:
    """Await until ``probe()`` is truthy, failing at the deadline (no blocking sleep)."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


# --- identity answers and counters -------------------------------------------------------

COLUMNS = CodecOptions(inputs="columns")
IDENTITY_CASES = [
    pytest.param("raw", [{"i": 0, "x": "a"}], DEFAULT_OPTIONS, id="raw-one"),
    pytest.param("raw", [{"i": 0}, {"i": 1}, 7, "s"], DEFAULT_OPTIONS, id="raw-several"),
    pytest.param("v1", [{"i": 0}, [1, 2], None, "s"], DEFAULT_OPTIONS, id="v1-mixed"),
    pytest.param("v2", [[1, 2.5], [3, 4]], DEFAULT_OPTIONS, id="v2-rows"),
    pytest.param("v2", [{"a": 1, "b": 2.5}, {"a": 3, "b": 4}], COLUMNS, id="v2-records-one-item"),
    pytest.param("v2", [{"i": 0, "x": "a"}, [1, "b"]], DEFAULT_OPTIONS, id="v2-bytes"),
]


@pytest.mark.parametrize(("protocol", "items", "options"), IDENTITY_CASES)
async def test_identity_answers_and_item_counts(
    server: TestInferenceServer,
    http: aiohttp.ClientSession,
    protocol: ProtocolName,
    items: list[Any],
    options: CodecOptions,
) -> None:
    """Each protocol's request is answered with the items back, and every item is counted."""
    got = await predictions(http, server, items, protocol, options)
    stats = server.stats()
    assert (stats.requests, stats.items, stats.answers) == (1, len(items), {"200": 1})
    assert stats.protocols == {protocol: 1}
    assert stats.request_sizes == {len(items): 1}
    assert stats.attempts == {item_key(item): 1 for item in items}
    if options is COLUMNS:
        # One tensor per key: the first output (key "a") is echoed, item by item.
        assert got == [item["a"] for item in items]
    elif protocol == "v2" and "x" in str(items):
        assert got == [orjson.dumps(item).decode() for item in items]
    else:
        assert got == items


async def test_attempts_accumulate_per_item_key(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """An item sent three times in different requests is counted three times under its key."""
    for others in ([], [{"b": 1}], [{"c": 2}]):
        await predictions(http, server, [{"a": 1}, *others])
    stats = server.stats()
    assert stats.attempts[item_key({"a": 1})] == 3
    assert stats.request_sizes == {1: 1, 2: 2}
    assert (stats.requests, stats.items) == (3, 5)


async def test_track_items_off_skips_attempt_counts(http: aiohttp.ClientSession) -> None:
    """With ``track_items`` off requests and items are counted, per-item attempts are not."""
    async with TestInferenceServer(ServerConfig(track_items=False)) as server:
        await predictions(http, server, [1, 2])
        stats = server.stats()
    assert (stats.requests, stats.items, stats.attempts) == (1, 2, {})


async def test_v2_health_routes_answer(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """The v2 liveness and readiness routes answer 200 and are not counted as requests."""
    for path in ("/v2/health/live", "/v2/health/ready"):
        async with http.get(server.url + path) as response:
            assert response.status == 200
    assert server.stats().requests == 0


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        ("raw", b"{not json"),
        ("v1", b'{"inputs": [1]}'),
        ("v2", b'{"instances": [1]}'),
        ("v2", b'{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1]}]}'),
    ],
)
async def test_unreadable_requests_get_400(
    server: TestInferenceServer, http: aiohttp.ClientSession, protocol: ProtocolName, body: bytes
) -> None:
    """Non-JSON or protocol-less bodies answer 400 with a JSON error and count as 400s."""
    async with http.post(server.endpoint(protocol), data=body) as response:
        assert response.status == 400
        assert "error" in await response.json()
    assert server.stats().answers == {"400": 1}


# --- latency and concurrency -------------------------------------------------------------


async def test_fixed_latency_delays_every_answer(http: aiohttp.ClientSession) -> None:
    """``latency_ms`` holds each answer back at least that long."""
    async with TestInferenceServer(ServerConfig(latency_ms=150)) as server:
        start = time.monotonic()
        await predictions(http, server, [1])
        assert time.monotonic() - start >= 0.15


async def test_random_latency_stays_in_its_range(http: aiohttp.ClientSession) -> None:
    """With ``latency_max_ms`` each answer waits between the two bounds."""
    async with TestInferenceServer(ServerConfig(latency_ms=50, latency_max_ms=120)) as server:
        for _ in range(3):
            start = time.monotonic()
            await predictions(http, server, [1])
            assert 0.05 <= time.monotonic() - start < 1.0


async def test_over_the_concurrency_cap_answers_429_with_retry_after(
    http: aiohttp.ClientSession,
) -> None:
    """Beyond ``max_concurrency`` in flight, requests get 429 + Retry-After at once."""
    config = ServerConfig(max_concurrency=2, latency_ms=300, retry_after_s=0.25)
    async with TestInferenceServer(config) as server:
        answers = await asyncio.gather(*(send(http, server, [i]) for i in range(5)))
        stats = server.stats()
    statuses = sorted(a.status for a in answers)
    assert statuses == [200, 200, 429, 429, 429]
    assert all(a.headers["Retry-After"] == "0.25" for a in answers if a.status == 429)
    assert stats.rejected == 3
    assert stats.answers == {"200": 2, "429": 3}
    assert stats.max_in_flight >= 3  # a rejected request leaves at once, so 3 to 5 meet
    assert stats.in_flight == 0


async def wait_stats(server: TestInferenceServer, what: str, check: Any) -> None:
    """Poll the server's stats until ``check(stats)`` holds (deadline 10 s)."""
    deadline = time.monotonic() + 10
    while not check(server.stats()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {server.stats()}")
        await asyncio.sleep(0.01)


async def test_queue_mode_serves_k_at_once_and_queues_the_rest(
    http: aiohttp.ClientSession,
) -> None:
    """With ``overload="queue"`` beyond K requests wait their turn: all succeed, K at a time.

    A queued request spends at least one latency waiting (bound by construction), which
    the latency histogram of the 200 answers shows.
    """
    config = ServerConfig(max_concurrency=2, overload="queue", latency_ms=200)
    async with TestInferenceServer(config) as server:
        answers = await asyncio.gather(*(send(http, server, [i]) for i in range(5)))
        stats = server.stats()
    assert [a.status for a in answers] == [200] * 5
    assert stats.max_serving == 2
    assert stats.rejected == 0
    assert (stats.serving, stats.queued) == (0, 0)
    assert sum(stats.latency_ms.values()) == 5
    assert max(stats.latency_ms) >= 400  # the last waited for two rounds of two


async def test_capacity_changes_at_run_time_admit_waiters_or_refuse_more(
    http: aiohttp.ClientSession,
) -> None:
    """Raising K admits queued requests at once; lowering it in reject mode refuses more."""
    config = ServerConfig(max_concurrency=1, overload="queue", latency_ms=300)
    async with TestInferenceServer(config) as server:
        sent = [asyncio.create_task(send(http, server, [i])) for i in range(3)]
        await wait_stats(server, "two queued", lambda s: s.queued == 2)
        server.configure(max_concurrency=3)
        await wait_stats(server, "three served", lambda s: s.serving == 3)
        assert [(await a).status for a in sent] == [200] * 3
        server.configure(overload="reject", max_concurrency=1)
        answers = await asyncio.gather(*(send(http, server, [i]) for i in range(3)))
    assert sorted(a.status for a in answers) == [200, 429, 429]


async def test_an_outage_resets_every_model_request_and_counts_it(
    http: aiohttp.ClientSession,
) -> None:
    """``outage`` resets the connection of every model request (counted as ``down``) until off.

    Recorded headers are counted during an outage too (the benchmarks count calls per
    replica that way).
    """
    async with TestInferenceServer(ServerConfig(record_headers=("x-replica",))) as server:
        server.configure(outage=True)
        body = get_codec("v1", DEFAULT_OPTIONS).encode([b"1"])
        with pytest.raises(aiohttp.ClientError):
            await http.post(server.endpoint("v1"), data=body, headers={"X-Replica": "r1"})
        server.configure(outage=False)
        assert (await send(http, server, [1])).status == 200
        stats = server.stats()
    assert stats.answers == {"down": 1, "200": 1}
    assert stats.headers == {"x-replica: r1": 1}


def test_config_refuses_an_unknown_overload_mode() -> None:
    """The overload mode is ``reject`` or ``queue``."""
    with pytest.raises(ValueError, match="overload"):
        ServerConfig(overload="drop")  # type: ignore[arg-type]


# --- scripted failures -------------------------------------------------------------------


async def test_script_503_then_ok(http: aiohttp.ClientSession) -> None:
    """A request script of two 503s fails the first two requests, then serves normally."""
    async with TestInferenceServer(ServerConfig(script=(503, 503))) as server:
        answers = [await send(http, server, [{"n": 1}]) for _ in range(3)]
        stats = server.stats()
    assert [a.status for a in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert orjson.loads(answers[2].body) == {"predictions": [{"n": 1}]}
    assert stats.answers == {"503": 2, "200": 1}
    assert stats.attempts == {item_key({"n": 1}): 3}


async def test_scripted_other_status_has_no_retry_after(http: aiohttp.ClientSession) -> None:
    """A scripted 400 carries a JSON error and no Retry-After."""
    async with TestInferenceServer(ServerConfig(script=(400,))) as server:
        answer = await send(http, server, [1])
    assert answer.status == 400
    assert "Retry-After" not in answer.headers
    assert "error" in orjson.loads(answer.body)


async def test_reset_closes_the_connection_abruptly(http: aiohttp.ClientSession) -> None:
    """``reset`` makes the client see a connection error; the next request is served."""
    async with TestInferenceServer(ServerConfig(script=("reset",))) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await send(http, server, [1])
        assert await predictions(http, server, [1]) == [1]
        assert server.stats().answers == {"reset": 1, "200": 1}


async def test_hang_lasts_until_the_client_gives_up(http: aiohttp.ClientSession) -> None:
    """``hang`` never answers; the client's timeout ends it and the server lets go too."""
    async with TestInferenceServer(ServerConfig(script=("hang",))) as server:
        with pytest.raises(asyncio.TimeoutError):
            await send(http, server, [1], timeout_s=0.3)
        assert server.stats().answers == {"hang": 1}
        await until(lambda: server.stats().in_flight == 0)


async def test_released_hang_answers_503(http: aiohttp.ClientSession) -> None:
    """``release_hangs`` lets a hung request finish with a 503."""
    async with TestInferenceServer(ServerConfig(script=("hang",))) as server:
        pending = asyncio.create_task(send(http, server, [1]))
        await until(lambda: server.stats().answers.get("hang") == 1)
        server.release_hangs()
        assert (await pending).status == 503


async def test_truncated_body_falls_short_of_its_length(http: aiohttp.ClientSession) -> None:
    """``truncated`` sends part of a 200 body and resets: the client sees a payload error."""
    async with TestInferenceServer(ServerConfig(script=("truncated",))) as server:
        with pytest.raises(aiohttp.ClientPayloadError):
            await send(http, server, [{"a": 1}, {"b": 2}])
        assert server.stats().answers == {"truncated": 1}


@pytest.mark.parametrize("protocol", ["raw", "v1", "v2"])
async def test_garbage_is_a_non_json_200(
    http: aiohttp.ClientSession, protocol: ProtocolName
) -> None:
    """``garbage`` answers 200 with HTML, which the consumer's codec rejects as not JSON."""
    async with TestInferenceServer(ServerConfig(script=("garbage",))) as server:
        answer = await send(http, server, [[1, 2], [3, 4]], protocol)
        assert server.stats().answers == {"garbage": 1}
    assert answer.status == 200
    with pytest.raises(BadResponse, match="not valid JSON"):
        get_codec(protocol).decode(answer.body, 2)


@pytest.mark.parametrize("protocol", ["raw", "v1", "v2"])
@pytest.mark.parametrize(("count", "got"), [(3, 2), (1, 2)])
async def test_wrong_count_gives_the_codec_a_wrong_number(
    http: aiohttp.ClientSession, protocol: ProtocolName, count: int, got: int
) -> None:
    """``wrong_count`` drops a prediction (or doubles a single one); v1/v2 codecs notice."""
    items = [{"i": i, "j": i} for i in range(count)]
    async with TestInferenceServer(ServerConfig(script=("wrong_count",))) as server:
        answer = await send(http, server, items, protocol)
        assert server.stats().answers == {"wrong_count": 1}
    assert answer.status == 200
    if protocol == "raw" and count == 1:
        # raw cannot tell: a single item's prediction is the whole body, here a list of two.
        assert orjson.loads(answer.body) == [items[0], items[0]]
        return
    with pytest.raises(BadResponse, match=f"expected {count} predictions, got {got}"):
        get_codec(protocol).decode(answer.body, count)


async def test_delay_action_adds_latency_then_answers(http: aiohttp.ClientSession) -> None:
    """``delay:<ms>`` answers normally after that much extra time."""
    async with TestInferenceServer(ServerConfig(script=("delay:150",))) as server:
        start = time.monotonic()
        assert await predictions(http, server, [1]) == [1]
        assert time.monotonic() - start >= 0.15
        assert server.stats().answers == {"200": 1}


# --- per-item behaviour ------------------------------------------------------------------


async def test_permanent_item_always_fails_its_request(http: aiohttp.ClientSession) -> None:
    """An item with ``"fail": "permanent"`` gets ``poison_status`` on every attempt."""
    poison = {"i": 3, "fail": "permanent"}
    async with TestInferenceServer(ServerConfig(poison_status=400)) as server:
        answers = [await send(http, server, [{"i": 2}, poison]) for _ in range(3)]
        alone = await predictions(http, server, [{"i": 2}])
        stats = server.stats()
    assert [a.status for a in answers] == [400, 400, 400]
    assert alone == [{"i": 2}]
    assert stats.attempts[item_key(poison)] == 3
    assert stats.answers == {"400": 3, "200": 1}


async def test_permanent_item_defaults_to_500(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """Without ``poison_status`` a permanent item answers 500, in every protocol.

    Under v2 the item travels as JSON text (``rows=false``): a row would lose its keys.
    """
    as_json = CodecOptions(rows=False)
    for protocol in ("raw", "v1", "v2"):
        answer = await send(http, server, [{"fail": "permanent"}], protocol, options=as_json)
        assert answer.status == 500


async def test_item_fail_list_scripts_its_attempts(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """``"fail": [503, "reset"]`` fails the item's first two attempts, then it succeeds."""
    item = {"i": 9, "fail": [503, "reset"]}
    assert (await send(http, server, [item])).status == 503
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(http, server, [item])
    assert await predictions(http, server, [item]) == [item]
    stats = server.stats()
    assert stats.attempts == {item_key(item): 3}
    assert stats.answers == {"503": 1, "reset": 1, "200": 1}


async def test_item_fail_list_works_through_v2_bytes(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """In-band directives are read from v2 BYTES tensors too."""
    item = {"i": 1, "fail": [429]}
    answer = await send(http, server, [item, {"i": 2}], "v2")
    assert answer.status == 429
    assert "Retry-After" in answer.headers
    assert (await send(http, server, [item, {"i": 2}], "v2")).status == 200


async def test_item_scripts_by_key(http: aiohttp.ClientSession) -> None:
    """``item_scripts`` fail an item's first attempts by its key, whatever else is sent."""
    config = ServerConfig(item_scripts={item_key({"k": 2}): (502, "garbage")})
    async with TestInferenceServer(config) as server:
        assert await predictions(http, server, [{"k": 1}]) == [{"k": 1}]
        assert (await send(http, server, [{"k": 1}, {"k": 2}])).status == 502
        assert (await send(http, server, [{"k": 2}])).body.startswith(b"<html>")
        assert await predictions(http, server, [{"k": 2}, {"k": 1}]) == [{"k": 2}, {"k": 1}]
        assert server.stats().attempts == {item_key({"k": 1}): 3, item_key({"k": 2}): 3}


async def test_item_delay_ms_slows_its_request_only(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """An item's ``delay_ms`` delays the request that carries it, not the others."""
    start = time.monotonic()
    slow = asyncio.create_task(predictions(http, server, [{"i": 0, "delay_ms": 300}]))
    assert await predictions(http, server, [{"i": 1}]) == [{"i": 1}]
    assert time.monotonic() - start < 0.3
    assert await slow == [{"i": 0, "delay_ms": 300}]
    assert time.monotonic() - start >= 0.3


async def test_unknown_item_directive_is_a_400(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """A misspelt ``fail`` directive answers 400 naming it, rather than being ignored."""
    answer = await send(http, server, [{"fail": "rest"}])
    assert answer.status == 400
    assert "unknown action 'rest'" in orjson.loads(answer.body)["error"]


# --- configuration and reset -------------------------------------------------------------


def test_config_refuses_unknown_actions() -> None:
    """Building a config with an action nobody implements fails at once."""
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        ServerConfig(script=("explode",))
    with pytest.raises(ValueError, match="outside 200-599"):
        ServerConfig(item_scripts={"1": (42,)})
    with pytest.raises(ValueError, match="max_concurrency"):
        ServerConfig(max_concurrency=0)


async def test_configure_changes_behaviour_and_validates(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """``configure`` changes named fields live; bad values are refused, config unchanged."""
    config = server.configure(script=[503], latency_ms=1)
    assert config.script == (503,)
    assert (await send(http, server, [1])).status == 503
    with pytest.raises(msgspec.ValidationError, match="unknown action"):
        server.configure(script=["nope"])
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        server.configure(latency=5)
    assert server.configure().latency_ms == 1


async def test_reset_zeroes_counters_and_restores_config(http: aiohttp.ClientSession) -> None:
    """``reset`` forgets counts, restarts the initial script, and drops later changes."""
    async with TestInferenceServer(ServerConfig(script=(503,))) as server:
        assert (await send(http, server, [1])).status == 503
        server.configure(latency_ms=5000)
        server.reset()
        assert server.stats() == server.stats().__class__(
            requests=0,
            items=0,
            answers={},
            rejected=0,
            in_flight=0,
            max_in_flight=0,
            attempts={},
            request_sizes={},
            protocols={},
        )
        assert (await send(http, server, [1])).status == 503
        assert (await send(http, server, [1], timeout_s=2)).status == 200


async def test_control_routes_in_process(
    server: TestInferenceServer, http: aiohttp.ClientSession
) -> None:
    """``/_control`` reads stats and config, changes config (400 if bad), and resets."""
    await predictions(http, server, [1])
    async with http.get(server.url + "/_control/stats") as response:
        assert (await response.json())["requests"] == 1
    async with http.post(server.url + "/_control/config", json={"script": [504]}) as response:
        assert (await response.json())["script"] == [504]
    async with http.post(server.url + "/_control/config", json={"script": ["x"]}) as response:
        assert response.status == 400
    async with http.post(server.url + "/_control/config", data=b"[]") as response:
        assert response.status == 400
    async with http.get(server.url + "/_control/config") as response:
        assert (await response.json())["script"] == [504]
    assert (await send(http, server, [1])).status == 504
    async with http.post(server.url + "/_control/reset") as response:
        assert response.status == 200
    assert server.stats().requests == 0


# --- in a thread, and as a process -------------------------------------------------------


def test_thread_mode_is_scriptable_from_another_thread() -> None:
    """``with TestInferenceServer()`` serves from its own thread; control calls cross over."""
    with TestInferenceServer(ServerConfig(script=(503,))) as server:
        body = orjson.dumps({"instances": [{"a": 1}]})
        assert requests.post(server.endpoint("v1"), data=body, timeout=5).status_code == 503
        answer = requests.post(server.endpoint("v1"), data=body, timeout=5)
        assert answer.json() == {"predictions": [{"a": 1}]}
        assert server.stats().answers == {"503": 1, "200": 1}
        server.configure(script=["garbage"])
        assert requests.post(server.endpoint("v1"), data=body, timeout=5).text.startswith("<html>")
        server.reset()
        assert server.stats().requests == 0
        url = server.url
    with pytest.raises(requests.ConnectionError):
        requests.post(url + "/predict", data=b"1", timeout=5)


def test_thread_mode_reports_a_port_in_use() -> None:
    """Starting on a port another server holds raises the bind error in the caller."""
    with TestInferenceServer() as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(OSError, match="address already in use"), TestInferenceServer(port=port):
            pass


async def test_thread_mode_from_async_code(http: aiohttp.ClientSession) -> None:
    """A thread-mode server can be used from an async test on another loop."""
    with TestInferenceServer(ServerConfig(script=(429,), retry_after_s=2)) as server:
        answer = await send(http, server, [1])
        assert (answer.status, answer.headers["Retry-After"]) == (429, "2")
        assert await predictions(http, server, [1]) == [1]


def test_standalone_process_with_control_api() -> None:
    """``python -m tools.testservers.inference``: prints its URL, obeys /_control, ends on TERM."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "tools.testservers.inference", "--port", "0"),
            *("--script", "503,ok", "--capacity", "4", "--overload", "queue"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read() if process.stderr else ""
        body = orjson.dumps({"instances": [1, 2]})
        endpoint = url + "/v1/models/m:predict"
        first = requests.post(endpoint, data=body, timeout=5)
        assert (first.status_code, first.headers["Retry-After"]) == (503, "1")
        assert requests.post(endpoint, data=body, timeout=5).json() == {"predictions": [1, 2]}
        stats = requests.get(url + "/_control/stats", timeout=5).json()
        assert stats["answers"] == {"503": 1, "200": 1}
        assert stats["attempts"] == {"1": 2, "2": 2}
        assert stats["request_sizes"] == {"2": 2}
        config = requests.get(url + "/_control/config", timeout=5).json()
        assert (config["max_concurrency"], config["overload"]) == (4, "queue")
        changed = requests.post(url + "/_control/config", json={"script": ["reset"]}, timeout=5)
        assert changed.json()["script"] == ["reset"]
        with pytest.raises(requests.ConnectionError):
            requests.post(endpoint, data=body, timeout=5)
        assert requests.post(url + "/_control/reset", timeout=5).status_code == 200
        assert requests.get(url + "/_control/stats", timeout=5).json()["requests"] == 0
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
