"""Drive consumer replicas the way a user does: as ``python -m consumer`` processes.

A :class:`Replica` is one subprocess with its environment, log file and exit code. The
helpers submit batch requests with a plain producer and read back what the service wrote
to the results and dead-letter topics.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import orjson
from confluent_kafka import Producer

from consumer.launch import replica_env, start_replica
from producer.topics import create_topics as create_topics_on
from producer.topics import service_topics
from schemas import ChunkSummary, Result, TopicNames, decode_results_record, encode_batch_request
from tests.helpers import committed_offsets, read_all, unique, wait_for

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from confluent_kafka import Message
    from confluent_kafka.admin import AdminClient

    from consumer.protocols import ProtocolName


def create_topics(admin: AdminClient, partitions: int = 1) -> TopicNames:
    """Create fresh requests and results topics of ``partitions`` and a one-partition DLQ."""
    names = TopicNames(unique("requests"), unique("results"), unique("dlq"), unique("status"))
    create_topics_on(admin, service_topics(names, partitions)).check()
    return names


@dataclass
class Replica:
    """One consumer replica process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    name: str

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the replica."""
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = 60.0) -> int:
        """Wait for the replica to exit; return its exit code."""
        return self.process.wait(timeout=timeout_s)

    def log(self) -> str:
        """Return what the replica logged so far."""
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, object]]:
        """Return the replica's JSON log events."""
        return [orjson.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        """Kill the replica if it still runs (test clean-up)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@dataclass
class Service:
    """Factory of replicas sharing one configuration (topics, group, endpoint)."""

    bootstrap: str
    topics: TopicNames
    endpoint: str
    workdir: Path
    group: str = field(default_factory=lambda: unique("service"))
    env: dict[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)

    def start(self, **extra_env: str) -> Replica:
        """Start one more replica; ``extra_env`` adds or overrides variables."""
        name = f"replica-{len(self.replicas)}"
        log_path = self.workdir / f"{name}.log"
        env = {
            **os.environ,
            **replica_env(
                self.bootstrap,
                self.topics,
                group_id=self.group,
                endpoint=self.endpoint,
                commit_interval_s="0.2",
                log_format="json",
                log_level="INFO",
                metrics_port="0",
            ),
            **self.env,
            **extra_env,
        }
        process = start_replica(env, log_path)
        replica = Replica(process, log_path, name)
        self.replicas.append(replica)
        return replica

    def stop_all(self) -> None:
        """Kill every replica still running."""
        for replica in self.replicas:
            replica.stop()


class MakeService(Protocol):
    """The ``make_service`` fixture's factory (see ``tests/conftest.py``)."""

    def __call__(
        self, *, partitions: int = 1, protocol: ProtocolName = "v1", **env: str
    ) -> Service:
        """Return a service on fresh topics calling the test's server in ``protocol``."""
        ...


def submit(
    bootstrap: str,
    topic: str,
    batch_id: str,
    items: Sequence[object],
    *,
    chunk_size: int,
    target: str | None = None,
    items_per_request: int | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> int:
    """Produce ``items`` as BatchRequest chunks keyed by ``batch_id``; return the chunk count."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    chunks = max(1, -(-len(items) // chunk_size))
    for number in range(chunks):
        start = number * chunk_size
        value = encode_batch_request(
            batch_id=batch_id,
            items=[orjson.dumps(item) for item in items[start : start + chunk_size]],
            start=start,
            total=len(items),
            chunk=number,
            chunks=chunks,
            target=target,
            items_per_request=items_per_request,
        )
        producer.produce(topic, key=batch_id, value=value, headers=headers)
    assert producer.flush(30) == 0
    return chunks


def produce_raw(bootstrap: str, topic: str, values: Iterable[bytes], key: str = "raw") -> None:
    """Produce arbitrary bytes (for poison tests)."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def read_results(
    bootstrap: str,
    topic: str,
    *,
    expected_records: int,
    timeout_s: float = 90.0,
) -> tuple[list[Result], list[ChunkSummary], list[Message]]:
    """Read at least ``expected_records`` records and split them into results and summaries."""
    messages = read_all(bootstrap, topic, expected=expected_records, timeout_s=timeout_s)
    results: list[Result] = []
    summaries: list[ChunkSummary] = []
    for msg in messages:
        record = decode_results_record(msg.value() or b"")
        if isinstance(record, ChunkSummary):
            summaries.append(record)
        else:
            results.append(record)
    return results, summaries, messages


def wait_exit(replica: Replica, timeout_s: float) -> int:
    """Wait for ``replica`` to exit, failing with its log if it does not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = replica.process.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    raise AssertionError(f"{replica.name} did not exit in {timeout_s}s:\n{replica.log()[-3000:]}")


def committed_total(svc: Service, partitions: int = 1) -> int:
    """Sum of the group's committed offsets (0 for partitions without a commit)."""
    offsets = committed_offsets(svc.bootstrap, svc.group, svc.topics.requests, partitions)
    return sum(max(o, 0) for o in offsets.values())


def stop_after_commit(svc: Service, replica: Replica, total: int, *, what: str) -> None:
    """Wait until the group's commits on one partition reach ``total``; then SIGTERM, exit 0."""
    wait_for(lambda: committed_total(svc) == total, what=what)
    replica.signal(signal.SIGTERM)
    assert wait_exit(replica, 30) == 0
