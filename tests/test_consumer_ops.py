"""Operations: the replica's metrics match what happened, and its health follows its state."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.consumer_harness import produce_raw, read_results, submit, wait_exit
from tests.helpers import end_offsets, http_get, wait_for
from tools.localkafka.broker import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from tests.consumer_harness import MakeService
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of the replica's /metrics, keyed by name and sorted labels."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Return one sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_exactly_what_happened(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """After a run with known outcomes the counters equal them exactly.

    Items by status, HTTP codes, retries, dead letters, chunks, commits and the committed
    offset are all checked against what the test caused.
    """
    port = free_port()
    server.configure(retry_after_s=0.05)
    svc = make_service()
    items: list[object] = [{"id": i} for i in range(30)]
    items += [{"id": "bad-1", "fail": 400}, {"id": "bad-2", "fail": 400}]
    items += [{"id": "flaky", "fail": [503, "ok"]}]
    chunks = submit(kafka_bootstrap, svc.topics.requests, "metrics", items, chunk_size=11)
    produce_raw(kafka_bootstrap, svc.topics.requests, [b"not json"])
    replica = svc.start(
        BATCH_RUNNER_METRICS_PORT=str(port),
        BATCH_RUNNER_BACKOFF_BASE_S="0.01",
        BATCH_RUNNER_CONCURRENCY="fixed",  # the limit gauge below is the fixed 64
    )
    read_results(kafka_bootstrap, svc.topics.results, expected_records=len(items) + chunks)
    end = end_offsets(kafka_bootstrap, svc.topics.requests, 1)[0]
    wait_for(
        lambda: (
            value(
                scrape(port),
                "batch_runner_committed_offset",
                topic=svc.topics.requests,
                partition="0",
            )
            == end
        ),
        what="the committed offset gauge to reach the end",
    )
    samples = scrape(port)
    assert value(samples, "batch_runner_items_total", status="ok") == 31
    assert value(samples, "batch_runner_items_total", status="error") == 2
    assert value(samples, "batch_runner_http_requests_total", code="200") == 31
    assert value(samples, "batch_runner_http_requests_total", code="400") == 2
    assert value(samples, "batch_runner_http_requests_total", code="503") == 1
    assert value(samples, "batch_runner_retries_total") == 1
    assert value(samples, "batch_runner_dead_letters_total", kind="not_json") == 1
    assert value(samples, "batch_runner_chunks_total", outcome="done") == chunks
    assert value(samples, "batch_runner_chunks_total", outcome="dead_letter") == 1
    assert value(samples, "batch_runner_commits_total") >= 1
    assert value(samples, "batch_runner_inference_latency_seconds_count") == 34
    assert value(samples, "batch_runner_buffered_items") == 0
    assert value(samples, "batch_runner_in_flight_limit", endpoint="default") == 64
    assert value(samples, "batch_runner_circuit_state", endpoint="default") == 0
    assert value(samples, "batch_runner_assigned_partitions") == 1
    replica.signal(signal.SIGTERM)
    assert wait_exit(replica, 30) == 0


def test_health_and_readiness_follow_the_replica(
    kafka_bootstrap: str,
    make_service: MakeService,
) -> None:
    """Ready once joined; not ready while the model's circuit is open; ready again after.

    /healthz stays 200 throughout: an unreachable model is not a reason to restart. The
    failed probes of the open circuit are requests too (13 attempts in all).
    """
    port = free_port()
    svc = make_service()
    replica = svc.start(
        BATCH_RUNNER_METRICS_PORT=str(port),
        BATCH_RUNNER_BACKOFF_BASE_S="0.01",
        BATCH_RUNNER_BACKOFF_MAX_S="0.05",
        BATCH_RUNNER_CIRCUIT_PROBE_INTERVAL_S="0.2",
    )
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="readiness")
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    down = {"id": "down", "fail": ["reset"] * 12 + ["ok"]}
    submit(kafka_bootstrap, svc.topics.requests, "outage", [down], chunk_size=1)

    def not_ready() -> bytes | None:
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        return body if status == 503 else None

    body = orjson.loads(
        wait_for(not_ready, what="readiness to drop while the model resets connections")
    )
    assert body["status"].startswith("circuit open to endpoint 'default'")
    assert list(body["open_circuits"]) == ["default"]
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert value(scrape(port), "batch_runner_circuit_state", endpoint="default") > 0
    wait_for(
        lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200,
        what="readiness to return once the model answers",
    )
    results, _, _ = read_results(kafka_bootstrap, svc.topics.results, expected_records=2)
    assert results[0].status == "ok"
    assert results[0].attempts == 13
    replica.signal(signal.SIGTERM)
    assert wait_exit(replica, 30) == 0


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_auth_headers_and_trace_context_reach_the_model_but_not_the_logs(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
    tmp_path: Path,
) -> None:
    """Static auth headers and the request's traceparent reach the model; secrets stay out of logs.

    Per-target headers come from a file and the environment; results carry the traceparent.
    """
    headers_file = tmp_path / "headers.json"
    headers_file.write_text(orjson.dumps({"iris": {"X-Api-Key": "key-from-file-77"}}).decode())
    svc = make_service()
    replica = svc.start(
        BATCH_RUNNER_ENDPOINT_HEADERS='{"Authorization": "Bearer token-from-env-42"}',
        BATCH_RUNNER_TARGETS=f"iris=v1:{server.endpoint('v1', 'iris')}",
        BATCH_RUNNER_HEADERS_FILE=str(headers_file),
        BATCH_RUNNER_LOG_LEVEL="DEBUG",
    )
    traced: list[tuple[str, str | bytes | None]] = [("traceparent", TRACEPARENT.encode())]
    submit(
        kafka_bootstrap,
        svc.topics.requests,
        "traced",
        [{"i": 1}, {"i": 2}],
        chunk_size=2,
        headers=traced,
    )
    submit(kafka_bootstrap, svc.topics.requests, "keyed", [{"i": 3}], chunk_size=1, target="iris")
    _, _, messages = read_results(kafka_bootstrap, svc.topics.results, expected_records=5)
    seen = server.stats().headers
    assert seen["authorization: Bearer token-from-env-42"] == 2
    assert seen["x-api-key: key-from-file-77"] == 1
    assert seen[f"traceparent: {TRACEPARENT}"] == 2
    for msg in messages:
        record_headers = dict(msg.headers() or [])
        if msg.key() == b"traced":
            assert record_headers["traceparent"] == TRACEPARENT.encode()
        else:
            assert "traceparent" not in record_headers
    replica.signal(signal.SIGTERM)
    assert wait_exit(replica, 30) == 0
    log = replica.log()
    assert "librdkafka" in log or "consuming" in log
    assert "token-from-env-42" not in log
    assert "key-from-file-77" not in log


def test_kafka_secrets_never_appear_in_logs_or_errors(
    make_service: MakeService,
    tmp_path: Path,
) -> None:
    """A replica whose SASL login cannot work fails at start-up without printing the password.

    A broken headers file is reported without echoing its content.
    """
    svc = make_service()
    replica = svc.start(
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISMS="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="service-user",
        KAFKA_SASL_PASSWORD="pw-very-secret-9",  # noqa: S106 - a fake, to look for in logs
        BATCH_RUNNER_LOG_LEVEL="DEBUG",
    )
    assert wait_exit(replica, 60) == 2
    assert "cannot start" in replica.log()
    assert "pw-very-secret-9" not in replica.log()
    broken = tmp_path / "broken.json"
    broken.write_text('{"default": {"Authorization": "Bearer leaked-if-echoed"')
    second = svc.start(BATCH_RUNNER_HEADERS_FILE=str(broken))
    assert wait_exit(second, 60) == 2
    assert "not valid JSON" in second.log()
    assert "leaked-if-echoed" not in second.log()
