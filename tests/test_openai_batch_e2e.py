"""An OpenAI Batch file through Kafka end to end, the way a user runs it: the real CLI.

``batch-runner submit --format openai-batch`` reads a 1,000-line chat-completions file
with 1% malformed lines, a consumer replica (``python -m consumer``, protocol ``openai``)
calls the test server's ``/v1/chat/completions``, which answers 5% of the requests 429
with ``retry-after-ms`` first, and ``batch-runner collect --format openai-batch`` writes
the output file; ``status`` and ``tail`` add up the tokens, as does the replica's metric.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from tests.helpers import schema_validator, unique, wait_for
from tests.test_consumer_ops import scrape, value
from tests.test_producer_cli import cli
from tools.localkafka.broker import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from tests.consumer_harness import MakeService, Service
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka

OUTPUT_SCHEMA = schema_validator("openai-batch-output")
LINES = 1000
RATE_LIMITED = 0.05

# One malformed line in a hundred, each wrong in its own way (line number: how).
MALFORMED: dict[int, str] = {
    37: '{"custom_id": "broken-37", "method": "POST", "url": "/v1/chat/completions", "body": {',
    137: '{"custom_id": "no-body-137", "method": "POST", "url": "/v1/chat/completions"}',
    237: '{"custom_id": "get-237", "method": "GET", "url": "/v1/chat/completions", '
    '"body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}',
    337: '{"custom_id": "files-337", "method": "POST", "url": "/v1/files", '
    '"body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}',
    437: '{"custom_id": "line-1", "method": "POST", "url": "/v1/chat/completions", '
    '"body": {"model": "m", "messages": [{"role": "user", "content": "again"}]}}',
    537: '{"custom_id": "empty-537", "method": "POST", "url": "/v1/chat/completions", '
    '"body": {"model": "m", "messages": []}}',
    637: '{"custom_id": "model-637", "method": "POST", "url": "/v1/chat/completions", '
    '"body": {"model": 7, "messages": [{"role": "user", "content": "hi"}]}}',
    737: '["custom_id", "array-737"]',
    837: '{"custom_id": "extra-837", "method": "POST", "url": "/v1/chat/completions", '
    '"body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "priority": 1}',
    937: '{"custom_id": "", "method": "POST", "url": "/v1/chat/completions", '
    '"body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}',
}


def valid_line(number: int) -> str:
    """Return input line ``number``: a chat completion with a question of its own."""
    body = {
        "model": "test-chat",
        "messages": [
            {"role": "system", "content": "You answer in one line."},
            {"role": "user", "content": f"what is {number} plus {number} in words"},
        ],
        "max_tokens": 20,
    }
    return json.dumps(
        {
            "custom_id": f"line-{number}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        }
    )


def chosen_for_429(body_text: str) -> bool:
    """Whether the test server answers this body 429 first (its rule: a hash of the body)."""
    digest = hashlib.sha256(body_text.encode()).hexdigest()
    return int(digest[:8], 16) < RATE_LIMITED * 0x1_0000_0000


def configure_openai(url: str, **changes: Any) -> None:
    """Set the test server's OpenAI routes' behaviour through its control route."""
    request = urllib.request.Request(  # noqa: S310 - the test's own loopback server
        f"{url}/_control/openai/config",
        data=orjson.dumps(changes),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
        assert answer.status == 200


def openai_stats(url: str) -> dict[str, Any]:
    """Return the test server's OpenAI counters."""
    with urllib.request.urlopen(f"{url}/_control/openai/stats", timeout=5) as answer:  # noqa: S310
        stats: dict[str, Any] = orjson.loads(answer.read())
        return stats


def submit_file(bootstrap: str, svc: Service, source: Path, batch_id: str) -> None:
    """Submit ``source`` with the CLI; check every malformed line is named at submit."""
    submitted = cli(
        "submit",
        str(source),
        "--format",
        "openai-batch",
        "--skip-invalid",
        "--batch-id",
        batch_id,
        "--topic",
        svc.topics.requests,
        "--chunk-size",
        "100",
        "--json",
        bootstrap=bootstrap,
    )
    assert submitted.returncode == 0, submitted.stderr
    report = orjson.loads(submitted.stdout)
    assert report["items"] == LINES - len(MALFORMED)
    reported = [p.split(":")[1] for p in report["invalid_lines"]]
    assert reported == [str(n) for n in sorted(MALFORMED)]
    for number in MALFORMED:
        assert f"{source}:{number}: " in submitted.stderr
    assert "custom_id 'line-1' is on line 1 already" in submitted.stderr


def check_status_and_tail(
    bootstrap: str, svc: Service, batch_id: str, answers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``status`` and ``tail`` add up to the answers' usage; return the tailed results."""
    prompt = sum(a["usage"]["prompt_tokens"] for a in answers)
    completion = sum(a["usage"]["completion_tokens"] for a in answers)
    total = prompt + completion
    status = cli(
        "status",
        batch_id,
        "--json",
        "--group",
        svc.group,
        "--requests-topic",
        svc.topics.requests,
        "--results-topic",
        svc.topics.results,
        "--dlq-topic",
        svc.topics.dlq,
        bootstrap=bootstrap,
    )
    assert status.returncode == 0, status.stderr
    counts = orjson.loads(status.stdout)
    assert (counts["ok"], counts["errors"], counts["complete"]) == (len(answers), 0, True)
    assert (counts["prompt_tokens"], counts["completion_tokens"]) == (prompt, completion)
    assert counts["total_tokens"] == total

    tailed = cli(
        "tail",
        "--until-complete",
        batch_id,
        "--topic",
        svc.topics.results,
        "--json",
        "--timeout",
        "60",
        bootstrap=bootstrap,
    )
    assert tailed.returncode == 0, tailed.stderr
    tail_summary = orjson.loads(tailed.stderr.strip().splitlines()[-1])
    assert tail_summary["total_tokens"] == total
    records = [orjson.loads(text) for text in tailed.stdout.splitlines()]
    assert len(records) == len(answers)
    assert sum(r["usage"]["total_tokens"] for r in records) == total
    return records


def test_an_openai_batch_file_round_trips_through_kafka(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
    tmp_path: Path,
) -> None:
    """Every valid line gets exactly one schema-valid output line, in input order.

    The malformed lines are each named at submit, the 429s (with ``retry-after-ms``) are
    retried into answers, and the token totals of ``collect``, ``tail``, ``status`` and the
    replica's metric all equal the sum of the answers' ``usage``.
    """
    server.configure(latency_ms=2.0)
    configure_openai(server.url, rate_limited_fraction=RATE_LIMITED, retry_after_ms=25)
    lines = [MALFORMED.get(n) or valid_line(n) for n in range(1, LINES + 1)]
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(lines) + "\n")
    expected_ids = [f"line-{n}" for n in range(1, LINES + 1) if n not in MALFORMED]
    expected_429 = sum(
        chosen_for_429(json.dumps(json.loads(lines[n - 1])["body"]))
        for n in range(1, LINES + 1)
        if n not in MALFORMED
    )
    assert expected_429 >= 30  # about 5% of 990 bodies

    port = free_port()
    svc = make_service(protocol="openai", BATCH_RUNNER_METRICS_PORT=str(port))
    svc.start()
    batch_id = unique("chat")

    submit_file(kafka_bootstrap, svc, source, batch_id)

    # collect: one output line per valid input line, in input order, valid against the schema
    output = tmp_path / "output.jsonl"
    collected = cli(
        "collect",
        batch_id,
        "--format",
        "openai-batch",
        "--topic",
        svc.topics.results,
        "--wait",
        "240",
        "-o",
        str(output),
        bootstrap=kafka_bootstrap,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stderr
    out_lines = [orjson.loads(text) for text in output.read_text().splitlines()]
    assert len(out_lines) == len(expected_ids)
    for line in out_lines:
        OUTPUT_SCHEMA.validate(line)
    assert [line["custom_id"] for line in out_lines] == expected_ids
    assert all(line["error"] is None for line in out_lines)
    assert {line["response"]["status_code"] for line in out_lines} == {200}
    answers = [line["response"]["body"] for line in out_lines]
    number_of = {custom_id: custom_id.removeprefix("line-") for custom_id in expected_ids}
    for custom_id, answer in zip(expected_ids, answers, strict=True):
        number = number_of[custom_id]
        content = answer["choices"][0]["message"]["content"]
        assert content == f"echo: what is {number} plus {number} in words"

    # the 429s: each chosen body was refused once, then answered
    stats = openai_stats(server.url)
    assert stats["rate_limited"] == expected_429
    assert stats["answers"] == {"200": len(expected_ids), "429": expected_429}

    # tokens: every total equals the sum of the answers' usage
    prompt = sum(a["usage"]["prompt_tokens"] for a in answers)
    completion = sum(a["usage"]["completion_tokens"] for a in answers)
    total = sum(a["usage"]["total_tokens"] for a in answers)
    assert total == prompt + completion == stats["total_tokens"]
    summary = orjson.loads(collected.stderr.strip().splitlines()[-1])
    assert (summary["prompt_tokens"], summary["completion_tokens"]) == (prompt, completion)
    assert summary["total_tokens"] == total

    records = check_status_and_tail(kafka_bootstrap, svc, batch_id, answers)
    assert sum(1 for r in records if r["attempts"] == 2) == expected_429
    assert {r["custom_id"] for r in records} == set(expected_ids)

    samples = wait_for(
        lambda: (
            (s := scrape(port))
            and value(s, "batch_runner_tokens_total", kind="prompt") == prompt
            and s
        ),
        what="the replica's token metric to count every answer",
    )
    assert value(samples, "batch_runner_tokens_total", kind="completion") == completion
