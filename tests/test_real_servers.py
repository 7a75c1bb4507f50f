"""The consumer against real model servers: MLServer 1.7.1 and KServe 0.21.0.

Each server is installed from PyPI into its own cached environment by
``tools.testservers.real_servers`` (the first run installs, later runs start it in seconds) and
serves a scikit-learn iris model trained the way ``serve-model`` trains it. If a server
cannot be installed or started, its tests FAIL with the reason: they never skip.

The items are the README's: iris objects. Predictions must equal ``serve-model``'s.
Per server: the consumer's dispatcher with default options (and the documented ones),
the shapes that real servers refuse (named errors, not sixty retries), and once the
whole pipeline: broker, a consumer replica process, the real server.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from consumer.dispatcher import Dispatcher
from consumer.endpoints import DEFAULT_TARGET, Endpoint
from consumer.protocols import CodecOptions, codec_options
from consumer.settings import Settings
from tests.consumer_harness import Service, create_topics, read_results, submit
from tools.cli.demo import ORIGINAL_LABELS, ORIGINAL_ROWS
from tools.modelserver.iris_data import FEATURES, sample
from tools.modelserver.server import IrisModel
from tools.testservers.real_servers import (
    KSERVE,
    MLSERVER,
    RealServer,
    RealServerError,
    ServerKind,
    environment,
    running,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from confluent_kafka.admin import AdminClient

    from consumer.outcome import Outcome
    from consumer.protocols import ProtocolName

pytestmark = pytest.mark.servers

UNIT = 50  # items per request, as in the runs of docs/real-servers.md
ROWS_V1 = CodecOptions(rows=True)  # KServe's sklearn handling wants v1 instances as rows


def start(kind: ServerKind, workdir: Path) -> Iterator[RealServer]:
    """Yield ``kind`` running; fail (never skip) the tests that need it if it cannot run."""
    try:
        with running(kind, workdir) as server:
            yield server
    except RealServerError as exc:
        pytest.fail(
            f"{kind.title} {kind.version} could not be installed or started, so the "
            f"real-server tests cannot run: {exc}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """Yield a real MLServer serving the iris model (v2), shared by the module's tests."""
    yield from start(MLSERVER, tmp_path_factory.mktemp("mlserver"))


@pytest.fixture(scope="module")
def kserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """Yield a real KServe model server serving the iris model (v1 and v2)."""
    yield from start(KSERVE, tmp_path_factory.mktemp("kserve"))


@pytest.fixture(scope="module")
def items_and_labels() -> tuple[list[dict[str, float]], list[str]]:
    """Return the original three rows and 300 sampled ones, and serve-model's predictions."""
    sampled, _ = sample(300, seed=14)
    items = [*ORIGINAL_ROWS, *sampled]
    rows = [[item[name] for name in FEATURES] for item in items]
    labels, _ = IrisModel.train().predict(rows)
    assert labels[:3] == ORIGINAL_LABELS
    return items, labels


def settings_for(url: str, protocol: ProtocolName, codec: CodecOptions, **values: Any) -> Settings:
    """Return settings with one default endpoint and quick retries."""
    endpoint = Endpoint(DEFAULT_TARGET, url, protocol, codec=codec)
    quick = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, **values}
    return Settings(bootstrap_servers="unused:9092", endpoints={DEFAULT_TARGET: endpoint}, **quick)


async def predict_all(settings: Settings, items: list[dict[str, float]]) -> list[Outcome]:
    """Send ``items`` in units of ``UNIT`` through one dispatcher; return each unit's outcome."""
    dispatcher = Dispatcher(settings)
    await dispatcher.start()
    try:
        endpoint = settings.endpoints[DEFAULT_TARGET]
        texts = [orjson.dumps(item) for item in items]
        return [
            await dispatcher.run(endpoint, texts[i : i + UNIT]) for i in range(0, len(texts), UNIT)
        ]
    finally:
        await dispatcher.close()


def predictions(outcomes: list[Outcome]) -> list[object]:
    """Return every item's prediction, failing with the first unit's error if there is one."""
    out: list[object] = []
    for outcome in outcomes:
        assert outcome.predictions is not None, outcome
        out.extend(orjson.loads(p) for p in outcome.predictions)
    return out


# --- the dispatcher against each server -------------------------------------------------------


async def test_mlserver_v2_objects_with_default_options_match_serve_model(
    mlserver: RealServer, items_and_labels: tuple[list[dict[str, float]], list[str]]
) -> None:
    """Iris objects go as one [n, 4] tensor; MLServer's [n, 1] answer reads as one label each."""
    items, labels = items_and_labels
    outcomes = await predict_all(settings_for(mlserver.endpoint("v2"), "v2", CodecOptions()), items)
    assert predictions(outcomes) == labels
    assert all(o.attempts == 1 for o in outcomes)


async def test_mlserver_pd_codec_takes_one_tensor_per_column(
    mlserver: RealServer, items_and_labels: tuple[list[dict[str, float]], list[str]]
) -> None:
    """``inputs=columns content_type=pd`` (the documented MLServer example) also matches."""
    items, labels = items_and_labels
    codec = codec_options("v2", {"inputs": "columns", "content_type": "pd"})
    outcomes = await predict_all(settings_for(mlserver.endpoint("v2"), "v2", codec), items[:UNIT])
    assert predictions(outcomes) == labels[:UNIT]


async def test_mlserver_refuses_columns_without_the_pd_codec_with_a_named_400(
    mlserver: RealServer,
) -> None:
    """One tensor per key without ``pd`` (the encoding of old): MLServer answers 400, final."""
    codec = CodecOptions(inputs="columns")
    (outcome,) = await predict_all(
        settings_for(mlserver.endpoint("v2"), "v2", codec), ORIGINAL_ROWS
    )
    assert (outcome.error_kind, outcome.http_status, outcome.attempts) == ("http_status", 400, 1)
    assert outcome.error_message is not None
    assert "codec only supports a single input tensor (4 were received)" in outcome.error_message


async def test_mlserver_model_error_is_final_after_three_equal_500s(mlserver: RealServer) -> None:
    """Three features for a four-feature model: MLServer's 500 repeats, so it is final at 3."""
    codec = CodecOptions(columns=("sepal_length", "sepal_width", "petal_length"))
    (outcome,) = await predict_all(
        settings_for(mlserver.endpoint("v2"), "v2", codec), ORIGINAL_ROWS
    )
    assert (outcome.error_kind, outcome.http_status, outcome.attempts) == ("http_status", 500, 3)
    assert outcome.error_message is not None
    assert "X has 3 features, but LogisticRegression is expecting 4" in outcome.error_message
    assert "the same answer 3 times" in outcome.error_message


@pytest.mark.parametrize(
    ("protocol", "codec"),
    [("v1", ROWS_V1), ("v2", CodecOptions())],
    ids=["v1-rows", "v2"],
)
async def test_kserve_objects_match_serve_model(
    kserve: RealServer,
    items_and_labels: tuple[list[dict[str, float]], list[str]],
    protocol: ProtocolName,
    codec: CodecOptions,
) -> None:
    """KServe's sklearn handling gets rows: v1 with ``rows=true``, v2 with the defaults."""
    items, labels = items_and_labels
    outcomes = await predict_all(settings_for(kserve.endpoint(protocol), protocol, codec), items)
    assert predictions(outcomes) == labels
    assert all(o.attempts == 1 for o in outcomes)


async def test_kserve_v1_objects_as_written_fail_finally_with_kserves_message(
    kserve: RealServer,
) -> None:
    """Without ``rows`` each v1 object becomes a pandas frame and KServe answers 500, thrice."""
    settings = settings_for(kserve.endpoint("v1"), "v1", CodecOptions())
    (outcome,) = await predict_all(settings, ORIGINAL_ROWS)
    assert (outcome.error_kind, outcome.http_status, outcome.attempts) == ("http_status", 500, 3)
    assert outcome.error_message is not None
    assert "If using all scalar values, you must pass an index" in outcome.error_message


async def test_kserve_v2_pd_content_type_reads_the_column_tensors(
    kserve: RealServer, items_and_labels: tuple[list[dict[str, float]], list[str]]
) -> None:
    """KServe reads every input as a frame column only with ``content_type=pd``."""
    items, labels = items_and_labels
    codec = CodecOptions(inputs="columns", content_type="pd")
    outcomes = await predict_all(settings_for(kserve.endpoint("v2"), "v2", codec), items[:UNIT])
    assert predictions(outcomes) == labels[:UNIT]


# --- installing -------------------------------------------------------------------------------


def test_an_install_that_fails_says_what_failed_and_leaves_nothing_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A requirement uv cannot install raises RealServerError quoting uv; a retry retries.

    (The requirement is malformed, so uv refuses it before asking PyPI anything.)
    """
    monkeypatch.setenv("BATCH_RUNNER_CACHE_DIR", str(tmp_path))
    broken = ServerKind("broken", "Broken", "0", ("kserve===",), ("v1",))
    for _ in range(2):
        with pytest.raises(RealServerError) as failed:
            environment(broken)
        message = str(failed.value)
        assert message.startswith("could not install kserve=== from PyPI for Broken 0 in ")
        assert "its output ends with:" in message
        assert not (tmp_path / "model-servers" / broken.key() / "ready.json").exists()


def test_real_server_command_serves_until_sigterm_and_leaves_no_process(tmp_path: Path) -> None:
    """``batch-runner real-server kserve`` prints its endpoints, answers, and stops cleanly."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "real-server", "kserve", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("KServe 0.21.0 serving 'iris' at http://127.0.0.1:"), first
        v1 = process.stdout.readline().split(": ", 1)[1].strip()
        v2 = process.stdout.readline().split(": ", 1)[1].strip()
        assert v2.endswith("/v2/models/iris/infer")
        body = orjson.dumps({"instances": [[5.2, 3.6, 1.5, 0.3]]})
        request = urllib.request.Request(v1, body, {"Content-Type": "application/json"})  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            assert orjson.loads(answer.read()) == {"predictions": ["setosa"]}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    port = first.rsplit(":", 1)[1].strip()
    assert servers_on(port) == [], "the KServe process outlived the command"


def servers_on(port: str) -> list[int]:
    """Return the pids of KServe iris servers started with ``--http_port port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"kserve_iris.py") for a in args) and port.encode() in args:
                found.append(int(entry.name))
    return found


# --- the whole pipeline -------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("server_name", "protocol", "codec"),
    [("mlserver", "v2", ""), ("kserve", "v1", "rows=true")],
)
def test_the_pipeline_scores_a_batch_on_a_real_server(  # noqa: PLR0917 - fixtures and parameters
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    tmp_path: Path,
    items_and_labels: tuple[list[dict[str, float]], list[str]],
    server_name: str,
    protocol: ProtocolName,
    codec: str,
) -> None:
    """Broker, a consumer replica process and a real server: every item ok, as serve-model.

    The 303 README-style objects go in two chunks at 50 items per request; every result
    is ok with serve-model's prediction and a ``queue_ms``, and both summaries count 0
    errors.
    """
    server: RealServer = request.getfixturevalue(server_name)
    items, labels = items_and_labels
    svc = Service(
        bootstrap=kafka_bootstrap,
        topics=create_topics(kafka_admin, 2),
        endpoint=server.endpoint(protocol),
        workdir=tmp_path,
        env={"BATCH_RUNNER_PROTOCOL": protocol, "BATCH_RUNNER_CODEC": codec},
    )
    try:
        chunks = submit(
            kafka_bootstrap,
            svc.topics.requests,
            f"iris-{server_name}",
            items,
            chunk_size=200,
            items_per_request=UNIT,
        )
        replica = svc.start()
        results, summaries, _ = read_results(
            kafka_bootstrap, svc.topics.results, expected_records=len(items) + chunks
        )
        assert replica.process.poll() is None, replica.log()[-3000:]
    finally:
        svc.stop_all()
    by_index = {r.index: r for r in results}
    assert sorted(by_index) == list(range(len(items)))
    errors = [r for r in results if r.status != "ok"]
    assert errors == []
    assert [by_index[i].prediction for i in range(len(items))] == labels
    assert all(r.queue_ms is not None for r in results)
    assert sorted((s.chunk, s.error) for s in summaries) == [(0, 0), (1, 0)]
