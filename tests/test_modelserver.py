"""The reference iris model server: its three protocols, health routes and 4xx answers."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import requests

from consumer.protocols import DEFAULT_OPTIONS, CodecOptions, get_codec
from tools.localkafka.broker import free_port
from tools.modelserver.server import FEATURES, IrisModel, register, running_model_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp

    from consumer.protocols import ProtocolName

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VERSICOLOR = {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5}
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
THREE = [SETOSA, VERSICOLOR, VIRGINICA]
LABELS = ["setosa", "versicolor", "virginica"]
PATHS: dict[str, str] = {
    "raw": "/predict",
    "v1": "/v1/models/iris:predict",
    "v2": "/v2/models/iris/infer",
}


def as_array(item: dict[str, float]) -> list[float]:
    """Return an iris object as the equivalent array of four numbers."""
    return [item[name] for name in FEATURES]


@pytest.fixture(scope="module")
def iris_model() -> IrisModel:
    """One trained classifier shared by the module's servers."""
    return IrisModel.train()


@pytest.fixture
async def base_url(iris_model: IrisModel) -> AsyncIterator[str]:
    """Yield the base URL of an iris server running on the test's event loop."""
    async with running_model_server(iris_model) as url:
        yield url


async def call(
    http: aiohttp.ClientSession,
    protocol: ProtocolName,
    url: str,
    items: list[Any],
    options: CodecOptions = DEFAULT_OPTIONS,
) -> list[Any]:
    """Send ``items`` with the consumer's codec for ``protocol``; return decoded predictions."""
    codec = get_codec(protocol, options)
    body = codec.encode([orjson.dumps(item) for item in items])
    headers = {"Content-Type": codec.content_type}
    async with http.post(url + PATHS[protocol], data=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        answer = await response.read()
    return [orjson.loads(p) for p in codec.decode(answer, len(items))]


# --- the protocols through the consumer's codecs ----------------------------------------


@pytest.mark.parametrize("protocol", ["raw", "v1", "v2"])
@pytest.mark.parametrize("count", [1, 3])
async def test_codecs_get_species_names_for_object_items(
    base_url: str, http: aiohttp.ClientSession, protocol: ProtocolName, count: int
) -> None:
    """Iris objects sent with each codec come back as the right species, one per item."""
    items = THREE[:count]
    assert await call(http, protocol, base_url, items) == LABELS[:count]


@pytest.mark.parametrize("protocol", ["raw", "v1", "v2"])
@pytest.mark.parametrize("count", [1, 3])
async def test_codecs_get_species_names_for_array_items(
    base_url: str, http: aiohttp.ClientSession, protocol: ProtocolName, count: int
) -> None:
    """Arrays of four numbers (a [n, 4] tensor for v2) are classified like objects."""
    items = [as_array(item) for item in THREE[:count]]
    assert await call(http, protocol, base_url, items) == LABELS[:count]


@pytest.mark.parametrize("protocol", ["raw", "v1", "v2"])
async def test_extra_keys_are_ignored(
    base_url: str, http: aiohttp.ClientSession, protocol: ProtocolName
) -> None:
    """Objects carrying an id (a BYTES tensor under v2) still get their species."""
    items = [{**item, "id": f"row-{i}", "weight": 1} for i, item in enumerate(THREE)]
    assert await call(http, protocol, base_url, items) == LABELS


async def test_v2_probabilities_output_by_name(base_url: str, http: aiohttp.ClientSession) -> None:
    """The v2 ``probabilities`` output gives each item three probabilities summing to one."""
    rows = await call(http, "v2", base_url, THREE, CodecOptions(output="probabilities"))
    assert len(rows) == 3
    for row, label in zip(rows, LABELS, strict=True):
        assert len(row) == 3
        assert sum(row) == pytest.approx(1.0)
        assert LABELS[row.index(max(row))] == label


@pytest.mark.parametrize("protocol", ["raw", "v1", "v2"])
async def test_accuracy_on_the_iris_data_is_high(
    base_url: str, http: aiohttp.ClientSession, protocol: ProtocolName
) -> None:
    """All 150 iris rows in requests of 25 are classified with accuracy above 0.9."""
    from sklearn.datasets import load_iris  # noqa: PLC0415 - heavy import, this test only

    data = load_iris()
    items = [dict(zip(FEATURES, map(float, row), strict=True)) for row in data.data]
    truth = [str(data.target_names[t]) for t in data.target]
    predictions: list[Any] = []
    for start in range(0, len(items), 25):
        predictions += await call(http, protocol, base_url, items[start : start + 25])
    accuracy = sum(p == t for p, t in zip(predictions, truth, strict=True)) / len(truth)
    assert accuracy > 0.9


# --- plain HTTP -------------------------------------------------------------------------


async def post(url: str, body: object | bytes) -> requests.Response:
    """POST with ``requests`` from a worker thread, so the server's loop keeps running."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await asyncio.to_thread(requests.post, url, data=data, timeout=10)


async def get(url: str) -> requests.Response:
    """GET with ``requests`` from a worker thread."""
    return await asyncio.to_thread(requests.get, url, timeout=10)


async def test_plain_raw_one_object_and_a_list(base_url: str) -> None:
    """``POST /predict`` answers a bare label for an object and a list for a list."""
    one = await post(base_url + "/predict", SETOSA)
    assert one.status_code == 200
    assert one.headers["Content-Type"].startswith("application/json")
    assert one.json() == "setosa"
    assert (await post(base_url + "/predict", as_array(VIRGINICA))).json() == "virginica"
    many = await post(base_url + "/predict", [VERSICOLOR, as_array(SETOSA)])
    assert many.json() == ["versicolor", "setosa"]
    assert (await post(base_url + "/predict", [])).json() == []


async def test_plain_v1(base_url: str) -> None:
    """The v1 route answers ``{"predictions": [...]}`` in instance order."""
    answer = await post(base_url + "/v1/models/iris:predict", {"instances": THREE[::-1]})
    assert answer.status_code == 200
    assert answer.json() == {"predictions": LABELS[::-1]}
    status = await get(base_url + "/v1/models/iris")
    assert status.json() == {"name": "iris", "ready": True}


async def test_plain_v2_tensor_request(base_url: str) -> None:
    """A hand-written [n, 4] FP32 request gets both outputs, model name and echoed id."""
    request = {
        "id": "req-1",
        "inputs": [
            {
                "name": "features",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [as_array(SETOSA), as_array(VIRGINICA)],
            }
        ],
    }
    answer = (await post(base_url + "/v2/models/iris/infer", request)).json()
    assert answer["id"] == "req-1"
    assert answer["model_name"] == "iris"
    label, probabilities = answer["outputs"]
    assert label == {"name": "label", "shape": [2], "datatype": "BYTES", "data": LABELS[::2]}
    assert probabilities["name"] == "probabilities"
    assert probabilities["shape"] == [2, 3]
    assert len(probabilities["data"]) == 6


async def test_plain_v2_requested_outputs_only(base_url: str) -> None:
    """Naming outputs in the request returns just those, in the order asked."""
    request = {
        "inputs": [
            {"name": n, "shape": [1], "datatype": "FP64", "data": [SETOSA[n]]} for n in FEATURES
        ],
        "outputs": [{"name": "probabilities"}],
    }
    answer = (await post(base_url + "/v2/models/iris/infer", request)).json()
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]


async def test_v2_health_and_metadata(base_url: str) -> None:
    """Live, ready, server and model metadata, and model readiness answer 200 with JSON."""
    assert (await get(base_url + "/v2/health/live")).json() == {"live": True}
    assert (await get(base_url + "/v2/health/ready")).json() == {"ready": True}
    assert (await get(base_url + "/v2/models/iris/ready")).json() == {"name": "iris", "ready": True}
    assert (await get(base_url + "/v2")).json()["extensions"] == []
    metadata = (await get(base_url + "/v2/models/iris")).json()
    assert metadata["name"] == "iris"
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]
    assert {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]} in metadata["inputs"]


# --- malformed input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/predict", b"{not json", "not valid JSON"),
        ("/predict", {"sepal_length": 1}, "item: missing sepal_width, petal_length, petal_width"),
        ("/predict", {**SETOSA, "petal_width": "wide"}, "petal_width must be numbers"),
        ("/predict", {**SETOSA, "petal_width": True}, "petal_width must be numbers"),
        ("/predict", [1, 2, 3], "exactly 4 numbers"),
        ("/predict", [SETOSA, "x"], r"item\[1\]: expected an object"),
        ("/predict", "setosa", "got str"),
        ("/v1/models/iris:predict", b"", "not valid JSON"),
        ("/v1/models/iris:predict", [SETOSA], '"instances" array'),
        ("/v1/models/iris:predict", {"instances": SETOSA}, '"instances" array'),
        ("/v1/models/iris:predict", {"instances": [SETOSA, [1]]}, r"instances\[1\]"),
        ("/v2/models/iris/infer", {"inputs": []}, '"inputs" array'),
        ("/v2/models/iris/infer", {"inputs": [1]}, "must be an object"),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            r"expected shape \[n, 4\]",
        ),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2]}]},
            "needs 8 values, data has 2",
        ),
        (
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, "4"]}
                ]
            },
            "data must be numbers",
        ),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP64", "data": []}]},
            "non-negative",
        ),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["{oops"]}]},
            "not valid JSON",
        ),
        (
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                    {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]},
                ]
            },
            "got inputs 'a', 'b'",
        ),
        (
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}
                ],
                "outputs": [{"name": "logits"}],
            },
            "unknown output 'logits'",
        ),
    ],
)
async def test_malformed_input_is_a_400_with_a_json_error(
    base_url: str, path: str, body: object, message: str
) -> None:
    """Each kind of bad request answers 400 with ``{"error": ...}`` saying what is wrong."""
    answer = await post(base_url + path, body)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("application/json")
    error = answer.json()["error"]
    assert re.search(message, error), error


@pytest.mark.parametrize(
    "path", ["/v1/models/lily:predict", "/v2/models/lily/infer", "/nothing-here"]
)
async def test_unknown_model_or_route_is_a_json_404(base_url: str, path: str) -> None:
    """Another model's name or an unknown path answers 404 in the JSON error form."""
    answer = await post(base_url + path, {"instances": [SETOSA]})
    assert answer.status_code == 404
    assert "error" in answer.json()


async def test_wrong_method_is_a_json_405(base_url: str) -> None:
    """GET on an inference route answers 405 in the JSON error form."""
    answer = await get(base_url + "/predict")
    assert answer.status_code == 405
    assert "error" in answer.json()


# --- the command ------------------------------------------------------------------------


def test_register_adds_serve_model_with_defaults() -> None:
    """``serve-model`` parses with host 127.0.0.1, port 8080 and sets a handler."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve-model"])
    assert (args.host, args.port, args.access_log) == ("127.0.0.1", 8080, False)
    assert callable(args.handler)
    assert parser.parse_args(["serve-model", "--port", "9001"]).port == 9001


SERVE = """
import argparse, sys
from tools.modelserver.server import register
parser = argparse.ArgumentParser()
register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


@pytest.mark.servers
def test_serve_model_process_serves_and_stops_on_sigterm() -> None:
    """The command's handler trains, serves /predict, logs, and exits 0 on SIGTERM."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve-model", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.post(
                    f"http://127.0.0.1:{port}/predict", data=orjson.dumps(SETOSA), timeout=5
                )
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the model server never answered"
                time.sleep(0.1)
        assert answer.json() == "setosa"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert b"trained LogisticRegression on 150 iris samples" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
