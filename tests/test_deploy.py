"""Deployment files: the compose file is valid and scalable, the image is non-root and pinned.

The files are checked as data here: what `docker-compose config` accepts and resolves,
and the properties scaling relies on. `make docker-check` (tools/ci_checks/docker/) builds the
image and runs the compose file for real.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The variables docker-compose.yml reads (CI sets them to substitute local images).
COMPOSE_VARIABLES = (
    "BATCH_RUNNER_KAFKA_IMAGE",
    "BATCH_RUNNER_PYTHON_IMAGE",
    "BATCH_RUNNER_BUILD_NETWORK",
    "BATCH_RUNNER_KAFKA_PORT",
    "BATCH_RUNNER_MODEL_PORT",
)


def resolved_compose(**variables: str) -> dict[str, Any]:
    """Return the compose file as ``docker-compose config`` resolves it.

    Only ``variables`` of the compose file's own are set, so the defaults users get are
    what the tests see unless a test sets one. ``docker-compose`` runs once per set of
    variables (half a second each); each caller gets a copy of its own.
    """
    return copy.deepcopy(_resolved_compose(tuple(sorted(variables.items()))))


@functools.cache
def _resolved_compose(variables: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    tool = shutil.which("docker-compose")
    assert tool is not None, "docker-compose is needed (Debian: apt-get install docker-compose)"
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    done = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **dict(variables)},
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def seconds(text: str) -> float:
    """Parse a compose duration such as ``45s`` or ``1m30s``."""
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def test_compose_runs_kafka_model_and_a_scalable_consumer() -> None:
    """The consumer can be scaled (no fixed name or host port) and drains within its grace."""
    services = resolved_compose()["services"]
    assert set(services) >= {"kafka", "topics", "model", "consumer"}
    consumer = services["consumer"]
    assert "container_name" not in consumer
    assert "ports" not in consumer
    env = consumer["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert (
        "INTERNAL://kafka:19092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert env["BATCH_RUNNER_ENDPOINT"].startswith("http://model:8080/")
    assert seconds(consumer["stop_grace_period"]) > float(env["BATCH_RUNNER_DRAIN_TIMEOUT_S"])
    assert consumer["depends_on"]["model"]["condition"] == "service_healthy"
    assert consumer["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["model"]["command"][0] == "serve-model"
    assert services["kafka"]["image"] == services["topics"]["image"]


@pytest.mark.parametrize("service", ["model", "consumer"])
def test_compose_services_run_read_only_with_init(service: str) -> None:
    """The image's services write nothing but /tmp (a tmpfs) and run under an init process."""
    config = resolved_compose()["services"][service]
    assert config["read_only"] is True
    assert config["init"] is True
    assert [entry.partition(":")[0] for entry in config["tmpfs"]] == ["/tmp"]  # noqa: S108
    assert "volumes" not in config


def test_image_writes_no_bytecode_at_run_time() -> None:
    """Bytecode is compiled at build time, so a read-only root never needs __pycache__."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    build, _, runtime = dockerfile.rpartition("\nFROM ")
    assert "UV_COMPILE_BYTECODE=1" in build
    assert re.search(r"^ENV .*PYTHONDONTWRITEBYTECODE=1", runtime, flags=re.MULTILINE)


def test_compose_kafka_matches_the_local_broker_version() -> None:
    """Docker users and the local java broker run the same Kafka release."""
    from tools.localkafka.broker import KAFKA_VERSION  # noqa: PLC0415

    image = resolved_compose()["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{KAFKA_VERSION}"


def test_compose_takes_the_images_ports_and_build_network_from_variables() -> None:
    """CI substitutes its own base images, host ports and build network; users get defaults."""
    default = resolved_compose()["services"]
    assert default["model"]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim"
    assert default["model"]["build"]["network"] == "default"
    assert default["kafka"]["ports"][0]["published"] in {9092, "9092"}
    local = resolved_compose(
        BATCH_RUNNER_KAFKA_IMAGE="local/kafka:1",
        BATCH_RUNNER_PYTHON_IMAGE="local/python:1",
        BATCH_RUNNER_BUILD_NETWORK="host",
        BATCH_RUNNER_KAFKA_PORT="29092",
        BATCH_RUNNER_MODEL_PORT="28080",
    )["services"]
    assert local["kafka"]["image"] == local["topics"]["image"] == "local/kafka:1"
    assert local["model"]["build"] == {
        "context": str(ROOT),
        "network": "host",
        "args": {"PYTHON_IMAGE": "local/python:1"},
    }
    assert local["kafka"]["ports"][0]["published"] in {29092, "29092"}
    assert local["kafka"]["ports"][0]["target"] == 9092
    # The host's listener is advertised on the port the host connects to.
    advertised = local["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "EXTERNAL://localhost:29092" in advertised
    assert local["model"]["ports"][0]["published"] in {28080, "28080"}


def test_dockerfile_and_compose_default_to_the_same_python_image() -> None:
    """The Dockerfile's base-image argument and the compose file's default agree."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, flags=re.MULTILINE)
    assert default is not None
    froms = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    compose = resolved_compose()["services"]["model"]["build"]["args"]["PYTHON_IMAGE"]
    assert default.group(1) == compose


def test_image_is_pinned_and_runs_as_a_non_root_user() -> None:
    """The Dockerfile installs from the lock file and switches to a numeric non-root user."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv sync --locked" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users, "no USER line"
    assert users[-1].isdigit()
    assert int(users[-1]) != 0
    assert re.search(r'^ENTRYPOINT \["batch-runner"\]', dockerfile, flags=re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored
    assert ".git" in ignored


def _broken_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """Copy deploy/ into ``tmp_path`` with one text replacement in ``name``."""
    target = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", target)
    path = target / name
    text = path.read_text()
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1))
    return target


def test_kubernetes_manifests_validate_offline() -> None:
    """Every manifest in deploy/ passes the schemas and the project's rules."""
    from tools.ci_checks.validate_deploy import validate  # noqa: PLC0415

    assert validate() == []


@pytest.mark.parametrize(
    ("name", "old", "new", "problem"),
    [
        ("consumer-deployment.yaml", "readinessProbe:", "readinesProbe:", "readinesProbe"),
        ("consumer-deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 20", "must exceed BATCH_RUNNER_DRAIN_TIMEOUT_S"),
        ("keda-scaledobject.yaml", "maxReplicaCount: 12", "maxReplicaCount: 40", "exceeds the 12 partitions"),
        ("keda-scaledobject.yaml", 'lagThreshold: "20"', "lagThreshold: 20", "is not of type 'string'"),
        ("consumer-deployment.yaml", "path: /healthz", "path: /health", "livenessProbe must GET /healthz"),
        ("model.yaml", "containerPort: 8080", "containerPort: eighty", "eighty"),
        ("consumer-deployment.yaml", "  selector:", "  replicas: 2\n  selector:", "Deployment batch-runner-consumer is scaled by ScaledObject batch-runner-consumer, so it must not set replicas"),
        ("configmap.yaml", 'MAX_IN_FLIGHT: "32"', 'MAX_IN_FLIGHT: "thirty-two"', "consumer settings: BATCH_RUNNER_MAX_IN_FLIGHT='thirty-two' is not a number"),
        ("configmap.yaml", 'MAX_IN_FLIGHT: "32"', 'MAX_IN_FLIGHT: "0"', "consumer settings: max_in_flight must be > 0 (got 0)"),
        ("configmap.yaml", 'PROTOCOL: "v1"', 'PROTOCOL: "v3"', "consumer settings: endpoint 'default': protocol 'v3' is not one of raw, v1, v2"),
        ("configmap.yaml", '"http://iris-model:8080', '"iris-model:8080', "is not an http:// or https:// URL"),
        ("configmap.yaml", 'LOG_FORMAT: "json"', 'LOG_FORMAT: "yaml"', "consumer settings: log_format 'yaml': use json or text"),
        ("configmap.yaml", "BATCH_RUNNER_MAX_IN_FLIGHT:", "BATCH_RUNNER_MAX_INFLIGHT:", "configmap.yaml: ConfigMap/batch-runner-consumer: BATCH_RUNNER_MAX_INFLIGHT is not a setting the consumer reads (did you mean BATCH_RUNNER_MAX_IN_FLIGHT?)"),
        ("configmap.yaml", 'KAFKA_SASL_MECHANISMS: "SCRAM-SHA-512"', 'KAFKA_SASL_MECHANISMS: "SCRAM-SHA-512"\n  KAFKA_ENABLE_AUTO_COMMIT: "true"', "consumer settings: Kafka option 'enable.auto.commit' is set by the service"),
        ("configmap.yaml", "model-auth/headers.json", "headers.json", "/etc/batch-runner/headers.json is on no volume mounted in container consumer"),
        ("configmap.yaml", "kafka-ca/ca.crt", "ca.crt", "KAFKA_SSL_CA_LOCATION: /etc/batch-runner/ca.crt is on no volume mounted in container consumer"),
        ("consumer-deployment.yaml", "path: headers.json", "path: auth.json", "headers.json is not among the items of volume model-auth"),
        ("secret.example.yaml", '{"default"', '{"iris"', "consumer settings: headers are configured for target 'iris', which does not exist"),
        ("configmap.yaml", 'DRAIN_TIMEOUT_S: "30"', 'DRAIN_TIMEOUT_S: "44"', "terminationGracePeriodSeconds 45 must exceed BATCH_RUNNER_DRAIN_TIMEOUT_S 44"),
        ("configmap.yaml", 'METRICS_PORT: "9100"', 'METRICS_PORT: "-1"', "BATCH_RUNNER_METRICS_PORT -1: the probes need a fixed port"),
        ("configmap.yaml", 'REQUESTS_TOPIC: "batch-requests"', 'REQUESTS_TOPIC: "requests"', "the Kafka trigger must watch the requests topic requests"),
        ("configmap.yaml", 'GROUP_ID: "batch-runner"', 'GROUP_ID: "runners"', "the Kafka trigger must watch the consumers' group runners"),
    ],
    ids=["typo-in-field", "grace-too-short", "more-replicas-than-partitions", "keda-wrong-type", "wrong-probe", "bad-port",
         "replicas-beside-keda", "setting-not-a-number", "setting-out-of-range", "unknown-protocol", "endpoint-not-a-url",
         "unknown-log-format", "unknown-setting-name", "reserved-kafka-option", "headers-file-not-mounted",
         "ca-file-not-mounted", "headers-file-not-an-item", "headers-for-unknown-target", "drain-longer-than-grace",
         "metrics-off", "trigger-watches-another-topic", "trigger-watches-another-group"],
)  # fmt: skip
def test_the_validator_catches_broken_manifests(
    tmp_path: Path,
    name: str,
    old: str,
    new: str,
    problem: str,
) -> None:
    """A typo, a schema violation or a broken invariant is reported, naming the cause."""
    from tools.ci_checks.validate_deploy import validate  # noqa: PLC0415

    problems = validate(_broken_copy(tmp_path, name, old, new))
    assert any(problem in p for p in problems), problems


def test_the_validator_builds_the_consumers_real_settings() -> None:
    """The ConfigMap, the container's env and the example Secret make valid Settings."""
    from tools.ci_checks.validate_deploy import DEFAULT_DIR, PLACEHOLDER, consumer_settings, load  # noqa: PLC0415

    docs = load(DEFAULT_DIR)
    consumer = next(
        d
        for _, d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "batch-runner-consumer"
    )
    settings, problems = consumer_settings(docs, consumer["spec"]["template"]["spec"])
    assert problems == []
    assert settings is not None
    assert settings.max_in_flight == 32
    assert settings.endpoints["default"].protocol == "v1"
    assert settings.endpoints["default"].headers == {"Authorization": "Bearer change-me"}
    assert settings.kafka_options["sasl.password"] == PLACEHOLDER


def test_the_validator_knows_every_variable_the_settings_read() -> None:
    """Unknown BATCH_RUNNER_* names are found against what Settings.from_env looks up."""
    import dataclasses  # noqa: PLC0415

    from consumer.env_names import known_variables  # noqa: PLC0415
    from consumer.settings import Settings  # noqa: PLC0415

    names = known_variables()
    fields = {f.name for f in dataclasses.fields(Settings)}
    fields -= {"bootstrap_servers", "endpoints", "kafka_options"}
    assert {f"BATCH_RUNNER_{name.upper()}" for name in fields} <= names
    assert {"BATCH_RUNNER_ENDPOINT", "BATCH_RUNNER_TARGETS", "BATCH_RUNNER_HEADERS_FILE"} <= names
    assert "BATCH_RUNNER_CACHE_DIR" not in names  # the local broker's, not the consumer's
