"""The local broker tool: clear errors for a bad environment, clean start and stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.admin import AdminClient

from tests.helpers import unique
from tools.kafka_local import (
    KAFKA_VERSION,
    LocalKafka,
    LocalKafkaError,
    cache_root,
    ensure_jars,
    pid_alive,
    random_cluster_id,
)

if TYPE_CHECKING:
    from pathlib import Path


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no ``java`` on PATH the error names the tool and how to get it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError, match=r"`java` was not found on PATH: install a Java"):
        LocalKafka().start()


def test_missing_maven_with_empty_cache_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An empty jar cache and no ``mvn`` gives an error that says to install Maven."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError, match=r"`mvn` was not found on PATH: install Apache Maven"):
        ensure_jars(tmp_path / "cache")


def test_cluster_ids_are_kraft_shaped() -> None:
    """Cluster ids are 22 URL-safe base64 characters and never start with a dash."""
    for _ in range(500):
        cid = random_cluster_id()
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.kafka
def test_broker_that_cannot_bind_reports_its_log_tail() -> None:
    """A broker whose port is taken fails fast with the tail of its own log in the error."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        kafka = LocalKafka(port=port)
        with pytest.raises(LocalKafkaError) as info:
            kafka.start()
    message = str(info.value)
    assert f"Kafka {KAFKA_VERSION} did not start" in message
    assert "broker log (last lines)" in message
    assert "Address already in use" in message or "BindException" in message
    assert kafka.workdir is not None
    assert not kafka.workdir.exists()


@pytest.mark.kafka
def test_context_manager_stops_the_jvm_and_removes_its_directory() -> None:
    """After the ``with`` block the JVM is gone and its data directory removed."""
    with LocalKafka() as kafka:
        meta = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10)
        assert len(meta.brokers) == 1
        pid = kafka.pid
        workdir = kafka.workdir
        assert workdir is not None
        assert (workdir / "server.log").exists()
    assert not pid_alive(pid)
    assert not workdir.exists()


@pytest.mark.kafka
def test_cli_start_status_stop(tmp_path: Path) -> None:
    """``batch-runner kafka start`` prints an address that answers; ``stop`` ends the process."""
    jars = ensure_jars()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"kafka-{KAFKA_VERSION}").symlink_to(jars.parent)
    env = {**os.environ, "BATCH_RUNNER_CACHE_DIR": str(cache)}
    cli = [sys.executable, "-m", "tools.cli", "kafka"]

    started = subprocess.run(
        [*cli, "start"], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    try:
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert len(meta.brokers) == 1
        status = subprocess.run(
            [*cli, "status"], check=False, env=env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0
        assert status.stdout.strip() == bootstrap
    finally:
        stopped = subprocess.run(
            [*cli, "stop"], check=False, env=env, capture_output=True, text=True, timeout=60
        )
    assert stopped.returncode == 0
    after = subprocess.run(
        [*cli, "status"], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert after.returncode == 1
    assert "not running" in after.stderr
    assert cache_root() != cache  # the test did not touch the user's state file


@pytest.mark.kafka
def test_cli_create_topics_is_idempotent(kafka_bootstrap: str, kafka_admin: AdminClient) -> None:
    """``kafka create-topics`` creates the three topics once and reports them after."""
    suffix = unique("t")
    names = [f"req-{suffix}", f"res-{suffix}", f"dlq-{suffix}"]
    cli = [sys.executable, "-m", "tools.cli", "kafka", "create-topics", "--partitions", "3"]
    cli += ["--bootstrap-servers", kafka_bootstrap, "--requests-topic", names[0]]
    cli += ["--results-topic", names[1], "--dlq-topic", names[2]]
    first = subprocess.run(cli, check=False, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [word for n in names for word in ("created", n)]
    again = subprocess.run(cli, check=False, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert again.stdout.split() == [word for n in names for word in ("exists", n)]
    topics = kafka_admin.list_topics(timeout=10).topics
    assert [len(topics[n].partitions) for n in names] == [3, 3, 1]
