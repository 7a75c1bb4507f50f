"""Operations: the replica's metrics match what happened, and its health follows its state."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.consumer_harness import Service, Topics, produce_raw, read_results, submit, wait_exit
from tests.helpers import end_offsets, wait_for
from tools.kafka_local import free_port
from tools.testserver import ServerConfig, TestInferenceServer

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.kafka


def get(url: str) -> tuple[int, bytes]:
    """GET ``url``; return the status and body (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of the replica's /metrics, keyed by name and sorted labels."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
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
    make_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    """After a run with known outcomes the counters equal them exactly.

    Items by status, HTTP codes, retries, dead letters, chunks, commits and the committed
    offset are all checked against what the test caused.
    """
    port = free_port()
    with TestInferenceServer(ServerConfig(retry_after_s=0.05)) as server:
        topics = Topics(make_topic("req"), make_topic("res"), make_topic("dlq"))
        svc = Service(kafka_bootstrap, topics, server.endpoint("v1"), tmp_path)
        items: list[object] = [{"id": i} for i in range(30)]
        items += [{"id": "bad-1", "fail": 400}, {"id": "bad-2", "fail": 400}]
        items += [{"id": "flaky", "fail": [503, "ok"]}]
        chunks = submit(kafka_bootstrap, topics.requests, "metrics", items, chunk_size=11)
        produce_raw(kafka_bootstrap, topics.requests, [b"not json"])
        replica = svc.start(
            BATCH_RUNNER_METRICS_PORT=str(port),
            BATCH_RUNNER_BACKOFF_BASE_S="0.01",
        )
        try:
            read_results(kafka_bootstrap, topics.results, expected_records=len(items) + chunks)
            end = end_offsets(kafka_bootstrap, topics.requests, 1)[0]
            wait_for(
                lambda: (
                    value(
                        scrape(port),
                        "batch_runner_committed_offset",
                        topic=topics.requests,
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
            assert value(samples, "batch_runner_in_flight_limit") == 64
            assert value(samples, "batch_runner_assigned_partitions") == 1
            replica.signal(signal.SIGTERM)
            assert wait_exit(replica, 30) == 0
        finally:
            svc.stop_all()


def test_health_and_readiness_follow_the_replica(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    """Ready once joined; not ready while the model does not answer; ready again after.

    /healthz stays 200 throughout: an unreachable model is not a reason to restart.
    """
    port = free_port()
    with TestInferenceServer(ServerConfig()) as server:
        topics = Topics(make_topic("req"), make_topic("res"), make_topic("dlq"))
        svc = Service(kafka_bootstrap, topics, server.endpoint("v1"), tmp_path)
        replica = svc.start(
            BATCH_RUNNER_METRICS_PORT=str(port),
            BATCH_RUNNER_BACKOFF_BASE_S="0.01",
            BATCH_RUNNER_BACKOFF_MAX_S="0.05",
        )
        try:
            wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="readiness")
            assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            down = {"id": "down", "fail": ["reset"] * 12 + ["ok"]}
            submit(kafka_bootstrap, topics.requests, "outage", [down], chunk_size=1)

            def not_ready() -> bytes | None:
                status, body = get(f"http://127.0.0.1:{port}/readyz")
                return body if status == 503 else None

            body = wait_for(not_ready, what="readiness to drop while the model resets connections")
            assert orjson.loads(body)["status"] == "the inference endpoint does not answer"
            assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            wait_for(
                lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200,
                what="readiness to return once the model answers",
            )
            results, _, _ = read_results(kafka_bootstrap, topics.results, expected_records=2)
            assert results[0].status == "ok"
            assert results[0].attempts == 13
            replica.signal(signal.SIGTERM)
            assert wait_exit(replica, 30) == 0
        finally:
            svc.stop_all()
