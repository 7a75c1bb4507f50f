"""Helpers shared by the tests: deadlines, what the broker holds, valid contract documents."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jsonschema
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from producer.topics import TopicSpec, create_topics

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka.admin import AdminClient

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; return it, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


def http_get(url: str) -> tuple[int, bytes]:
    """GET ``url``; return the status and body (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def examples(full: int) -> int:
    """Return how many examples a property test tries: ``full``, or a tenth in quick runs.

    ``make unit`` sets ``BATCH_RUNNER_QUICK_TESTS=1`` for a fast pass; ``make test`` (and
    CI) run every property test with its full count.
    """
    if os.environ.get("BATCH_RUNNER_QUICK_TESTS") == "1":
        return max(20, full // 10)
    return full


def unique(prefix: str) -> str:
    """Return ``prefix`` with a random suffix, for topic and group names of one test."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(admin: AdminClient, name: str, partitions: int = 1, **config: str) -> str:
    """Create ``name`` and wait until the broker reports every partition with a leader."""
    create_topics(admin, [TopicSpec(name, partitions, config)]).check()
    return name


# The group coordinator is still loading or moving (a broker just started or restarted):
# asking again shortly gets the answer.
_COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """Return the group's committed offset per partition as the broker holds it (-1001: none).

    A coordinator not ready yet is asked again for up to 30 s; any other error is raised.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                tps = consumer.committed(
                    [TopicPartition(topic, p) for p in range(partitions)],
                    timeout=10,
                )
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Return the high watermark (next offset to be written) of each partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("watermarks")})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def read_all(
    bootstrap: str,
    topic: str,
    *,
    expected: int,
    timeout_s: float = 60.0,
) -> list[Message]:
    """Read ``topic`` from the beginning (no group commits) until ``expected`` records arrive.

    Fails if fewer arrive before the deadline; returns early as soon as the count is
    reached, so callers that want to prove there are no extra records should compare
    with :func:`end_offsets` too.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        },
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                messages.append(msg)
    finally:
        consumer.close()
    if len(messages) < expected:
        raise AssertionError(f"read {len(messages)} of {expected} records from {topic}")
    return messages


# --- contract documents -------------------------------------------------------------------

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """Return a validator for the contract's schema file ``schemas/<name>.v1.json``."""
    schema = json.loads((SCHEMA_DIR / f"{name}.v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def json_depth(value: object) -> int:
    """Nesting depth of a Python JSON value (a scalar is 0, ``[]`` is 1)."""
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    return 0


IRIS: dict[str, float] = {
    "sepal_length": 5.2,
    "sepal_width": 3.6,
    "petal_length": 1.5,
    "petal_width": 0.3,
}


def _changed(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return ``doc`` with ``changes`` applied: a value replaces or adds, None removes."""
    merged = {**doc, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def request_doc(**changes: Any) -> dict[str, Any]:
    """Return a valid three-item request (one chunk) with ``changes`` applied."""
    doc: dict[str, Any] = {
        "schema": "batch-request/v1",
        "batch_id": "iris-1",
        "chunk": 0,
        "chunks": 1,
        "start": 0,
        "total": 3,
        "items": [IRIS, IRIS, IRIS],
    }
    return _changed(doc, changes)


def result_doc(**changes: Any) -> dict[str, Any]:
    """Return a valid ok result (item 4, chunk 1) with ``changes`` applied."""
    doc: dict[str, Any] = {
        "schema": "result/v1",
        "batch_id": "iris-1",
        "index": 4,
        "chunk": 1,
        "status": "ok",
        "attempts": 1,
        "latency_ms": 3.5,
        "prediction": "setosa",
    }
    return _changed(doc, changes)


def summary_doc(**changes: Any) -> dict[str, Any]:
    """Return a valid summary of chunk 1 of 2 (items 3..5 of 6) with ``changes`` applied."""
    doc: dict[str, Any] = {
        "schema": "chunk-summary/v1",
        "batch_id": "iris-1",
        "chunk": 1,
        "chunks": 2,
        "start": 3,
        "count": 3,
        "total": 6,
        "ok": 2,
        "error": 1,
    }
    return _changed(doc, changes)
