"""The local broker tool: clear errors for a bad environment, clean start and stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.helpers import committed_offsets, create_topic, read_all, unique
from tools.cli.kafka import default_name, state_file, state_root
from tools.localkafka.broker import (
    KAFKA_VERSION,
    LocalKafka,
    LocalKafkaError,
    cache_root,
    ensure_jars,
    pid_alive,
    random_cluster_id,
)


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
def test_broker_restarted_on_its_data_dir_keeps_port_topics_and_offsets(tmp_path: Path) -> None:
    """SIGKILL, then start on the same directory: same address, records and commits survive.

    A SIGSTOPped broker answers nothing until SIGCONT (what the chaos suite relies on).
    """
    kafka = LocalKafka(workdir=tmp_path / "broker", keep_data=True)
    kafka.start()
    try:
        bootstrap = kafka.bootstrap_servers
        topic, group = unique("kept"), unique("group")
        create_topic(AdminClient({"bootstrap.servers": bootstrap}), topic, 2)
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, value=b"survives", partition=1)
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        consumer.commit(offsets=[TopicPartition(topic, 1, 1)], asynchronous=False)
        consumer.close()
        kafka.kill()
        assert not pid_alive(kafka.pid)
        kafka.start()  # reuses the formatted storage and its recorded ports
        assert kafka.bootstrap_servers == bootstrap
        assert committed_offsets(bootstrap, group, topic, 2) == {0: -1001, 1: 1}
        assert [m.value() for m in read_all(bootstrap, topic, expected=1)] == [b"survives"]
        kafka.suspend()
        with pytest.raises(KafkaException):
            AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
        kafka.resume()
        assert topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    finally:
        kafka.stop()
    assert (tmp_path / "broker" / "data" / "meta.properties").exists()  # kept


def test_checkouts_get_brokers_of_their_own() -> None:
    """The default broker name differs between two checkouts with the same directory name."""
    first = default_name(Path("/home/a/kafka-batch-runner"))
    second = default_name(Path("/home/b/kafka-batch-runner"))
    assert first != second
    assert first.startswith("kafka-batch-runner-")
    assert state_file("x/../y").parent == state_root()


@pytest.mark.kafka
def test_cli_start_status_stop(tmp_path: Path) -> None:
    """``kafka start`` prints an address that answers; ``stop`` ends it; names do not collide.

    Two names run two brokers side by side (state under ``$XDG_STATE_HOME``); a broker
    started with ``--data-dir`` keeps its storage on stop and comes back on the same
    address with its topics.
    """
    jars = ensure_jars()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"kafka-{KAFKA_VERSION}").symlink_to(jars.parent)
    state = tmp_path / "state"
    env = {**os.environ, "BATCH_RUNNER_CACHE_DIR": str(cache), "XDG_STATE_HOME": str(state)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the CLI must find the brokers started here
    data = tmp_path / "data"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.cli", "kafka", *args],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    started = cli("start", "--data-dir", str(data))
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    other = ""
    try:
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert len(meta.brokers) == 1
        assert cli("status").stdout.strip() == bootstrap
        assert cli("create-topics", "--partitions", "2").returncode == 0
        second = cli("start", "--name", "other")
        assert second.returncode == 0, second.stderr
        other = second.stdout.strip()
        assert other != bootstrap
        assert cli("status", "--name", "other").stdout.strip() == other
        listed = cli("list").stdout.splitlines()
        assert len(listed) == 2
        assert any(line.startswith("other\t") for line in listed)
        assert sorted(p.name for p in (state / "kafka-batch-runner" / "brokers").iterdir()) == (
            sorted([f"{default_name()}.json", "other.json"])
        )
        assert cli("stop").returncode == 0
        assert (data / "data" / "meta.properties").exists()
        assert cli("status", "--name", "other").returncode == 0  # untouched
        again = cli("start", "--data-dir", str(data))
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == bootstrap
        assert "reused the storage" in again.stderr
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert "batch-requests" in topics
    finally:
        stopped = cli("stop")
        cli("stop", "--name", "other")
    assert stopped.returncode == 0
    after = cli("status")
    assert after.returncode == 1
    assert "not running" in after.stderr
    assert cli("status", "--name", "other").returncode == 1
    assert cache_root() != cache  # the test did not touch the user's cache


@pytest.mark.kafka
def test_cli_create_topics_is_idempotent(kafka_bootstrap: str, kafka_admin: AdminClient) -> None:
    """``kafka create-topics`` creates the four topics once and reports them after."""
    suffix = unique("t")
    names = [f"req-{suffix}", f"res-{suffix}", f"dlq-{suffix}", f"status-{suffix}"]
    cli = [sys.executable, "-m", "tools.cli", "kafka", "create-topics", "--partitions", "3"]
    cli += ["--bootstrap-servers", kafka_bootstrap, "--requests-topic", names[0]]
    cli += ["--results-topic", names[1], "--dlq-topic", names[2], "--status-topic", names[3]]
    first = subprocess.run(cli, check=False, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [word for n in names for word in ("created", n)]
    again = subprocess.run(cli, check=False, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert again.stdout.split() == [word for n in names for word in ("exists", n)]
    topics = kafka_admin.list_topics(timeout=10).topics
    assert [len(topics[n].partitions) for n in names] == [3, 3, 1, 3]
