"""A real single-node Apache Kafka broker (KRaft, combined mode) started with ``java``.

For machines without a Docker engine: the broker's jars are assembled from Maven Central
with Maven into a cache directory (once), then each :class:`LocalKafka` formats a fresh
storage directory with a new cluster id, starts ``kafka.Kafka`` on 127.0.0.1 on free
ports, waits until a metadata request is answered, and on exit stops the JVM (SIGTERM,
then SIGKILL after a grace period) and removes its directory. With ``keep_data`` the
directory stays, and a broker started again on it reuses its storage and ports (the
chaos suite kills and restarts brokers this way).

Usage::

    with LocalKafka() as kafka:
        print(kafka.bootstrap_servers)

Errors are :class:`LocalKafkaError` with a message that says what to do: a missing
``java`` or ``mvn``, a failed download, or a broker that did not start (with the tail of
its log).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import orjson
from confluent_kafka.admin import AdminClient

from schemas.errors import ToolError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
# The broker's pom omits an SLF4J binding (the release tarball adds one by hand). Kafka
# 4.x logs through slf4j-api 1.7, so the binding is log4j's slf4j *1.x* one.
LOG4J_VERSION = "2.25.4"
# Maven 3.8 resolves an old dependency plugin by default; pin one that knows includeScope.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0
# Beside formatted storage: the ports it was formatted with (the KRaft quorum records the
# controller's address, and clients expect the broker where it was).
RECORD = "local-broker.json"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kafka-batch-runner</groupId>
  <artifactId>local-kafka-broker</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class LocalKafkaError(ToolError):
    """The local broker could not be assembled, started or stopped; the message says why."""


def cache_root() -> Path:
    """Return the directory that holds the broker's jars between runs.

    ``BATCH_RUNNER_CACHE_DIR`` overrides it; otherwise ``$XDG_CACHE_HOME`` or
    ``~/.cache``, under ``kafka-batch-runner``.
    """
    explicit = os.environ.get("BATCH_RUNNER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kafka-batch-runner"


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LocalKafkaError(f"`{tool}` was not found on PATH: {hint}")
    return path


def _java() -> str:
    return _require(
        "java",
        "install a Java runtime, version 17 or newer "
        "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless), "
        "or set KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka cluster",
    )


def ensure_jars(cache: Path | None = None) -> Path:
    """Return a directory holding the broker's runtime classpath, downloading it once.

    The jars land in ``<cache>/kafka-<version>/libs``; a marker file written last makes
    an interrupted download start over instead of leaving a half-filled classpath.
    """
    root = (cache or cache_root()) / f"kafka-{KAFKA_VERSION}"
    libs = root / "libs"
    marker = root / ".complete"
    if marker.exists() and libs.is_dir():
        return libs
    mvn = _require(
        "mvn",
        "install Apache Maven (Debian/Ubuntu: apt-get install maven); it fetches the "
        f"Kafka {KAFKA_VERSION} broker jars from Maven Central once, into {root}",
    )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(
            _POM.format(kafka=KAFKA_VERSION, scala=SCALA_VERSION, log4j=LOG4J_VERSION),
        )
        staged = Path(tmp) / "libs"
        cmd = [
            mvn,
            "--batch-mode",
            "--quiet",
            "--file",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staged}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0 or not any(staged.glob(f"kafka_{SCALA_VERSION}-*.jar")):
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise LocalKafkaError(
                f"Maven could not fetch the Kafka {KAFKA_VERSION} jars "
                f"(exit {proc.returncode}):\n{tail}",
            )
        if libs.exists():
            shutil.rmtree(libs)
        staged.rename(libs)
    marker.write_text(KAFKA_VERSION + "\n")
    return libs


def random_cluster_id() -> str:
    """Return a KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka rejects ids that read like a flag
            return text


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Return the ``server.properties`` of a single combined broker+controller node.

    Tuned for tests and the demo: internal topics with one replica and one partition,
    no initial rebalance delay, no automatic topic creation (the project creates its
    topics explicitly, as a production cluster usually requires).
    """
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": (
            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        # A killed transactional producer's open transaction is aborted within a second
        # of its timeout (10 s by default), not ten: read_committed readers wait less.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.streams.initial.rebalance.delay.ms": "0",
        # Small segments and no fsync: test data is thrown away with the directory.
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.flush.interval.messages": str(2**62),
    }
    props.update(extra or {})
    return props


def _write_properties(path: Path, props: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no broker log was written)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ready(
    bootstrap: str,
    *,
    timeout_s: float = READY_TIMEOUT_S,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until ``bootstrap`` answers a metadata request listing at least one broker.

    Raises :class:`TimeoutError` after ``timeout_s``, or :class:`LocalKafkaError` as
    soon as ``alive()`` says the broker process has gone.
    """
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise LocalKafkaError("the broker process exited while starting")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.1)
            continue
        # The port is open; now ask for metadata (quietly: no librdkafka log noise).
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - any KafkaException here means "not yet"
            time.sleep(0.2)
            continue
        if metadata.brokers:
            return
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s")


@dataclass
class LocalKafka:
    """A broker process of its own, on free ports, in a directory of its own.

    ``extra_properties`` adds or overrides broker settings (listeners for TLS or SASL,
    say). ``workdir`` defaults to a new temporary directory that :meth:`stop` removes.

    With ``keep_data`` the directory outlives the broker: :meth:`stop` and :meth:`kill`
    leave it, and a later :meth:`start` on the same ``workdir`` (in this process or
    another) reuses the formatted storage, the cluster id and the recorded ports, so
    clients that knew the old broker reconnect to the new one (topics, committed offsets
    and records survive; a broker killed without a clean shutdown recovers its logs).
    """

    extra_properties: dict[str, str] = field(default_factory=dict)
    # Extra arguments for `StorageTool format`, e.g. ["--add-scram", "SCRAM-SHA-512=[...]"].
    format_args: list[str] = field(default_factory=list)
    heap: str = "512m"
    cache: Path | None = None
    workdir: Path | None = None
    port: int = 0
    controller_port: int = 0
    keep_data: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    pid: int = field(default=0, init=False)

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's own log (server.log)."""
        if self.workdir is None:
            raise LocalKafkaError("the broker has not been started")
        return self.workdir / "server.log"

    @property
    def formatted(self) -> bool:
        """Whether ``workdir`` holds formatted storage a start can reuse."""
        return self.workdir is not None and (self.workdir / "data" / "meta.properties").exists()

    def _reuse_record(self) -> None:
        """Take the ports recorded with formatted storage (the quorum knows its address)."""
        if self.workdir is None or not self.formatted:
            return
        try:
            recorded = orjson.loads((self.workdir / RECORD).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise LocalKafkaError(
                f"{self.workdir} holds formatted Kafka storage but no readable {RECORD} "
                f"(the ports it was formatted with): {exc}",
            ) from None
        self.port = self.port or int(recorded["port"])
        self.controller_port = int(recorded["controller_port"])

    def start(self, *, detach: bool = False) -> Self:
        """Assemble the classpath if needed, format storage, start and wait until ready.

        Storage already formatted in ``workdir`` is reused (with its recorded ports)
        instead of formatted again. ``detach`` leaves the JVM running after this Python
        process exits (for ``batch-runner kafka start``); it is still in a process group
        of its own.
        """
        java = _java()
        libs = ensure_jars(self.cache)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kafka-batch-runner-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        reuse = self.formatted
        self._reuse_record()
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        data_dir = self.workdir / "data"
        props_file = self.workdir / "server.properties"
        log4j_file = self.workdir / "log4j2.properties"
        _write_properties(
            props_file,
            broker_properties(
                port=self.port,
                controller_port=self.controller_port,
                data_dir=data_dir,
                extra=self.extra_properties,
            ),
        )
        log4j_file.write_text(_LOG4J2.format(log=self.log_file))
        classpath = f"{libs}{os.sep}*"
        if not reuse:
            self._format(java, classpath, props_file)
        stdout_log = (self.workdir / "stdout.log").open("ab")
        with stdout_log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv
                [
                    java,
                    f"-Xmx{self.heap}",
                    "-Xss1m",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={log4j_file}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(props_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=stdout_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        proc = self.process
        self.pid = proc.pid
        try:
            wait_until_ready(self.bootstrap_servers, alive=lambda: proc.poll() is None)
        except (TimeoutError, LocalKafkaError) as exc:
            tail = _log_tail(self.log_file)
            out = _log_tail(self.workdir / "stdout.log", 15)
            self.stop()
            raise LocalKafkaError(
                f"Kafka {KAFKA_VERSION} did not start: {exc}\n"
                f"--- broker log (last lines) ---\n{tail}\n--- stdout ---\n{out}",
            ) from exc
        if detach:
            # The caller records the pid and stops it later with stop_process_group();
            # forgetting the Popen keeps this object's stop() from touching it.
            self.process = None
        return self

    def _format(self, java: str, classpath: str, props_file: Path) -> None:
        """Format fresh storage with a new cluster id; record the ports beside it."""
        if self.workdir is None:
            raise LocalKafkaError("the broker has no directory")
        fmt = subprocess.run(  # noqa: S603 - fixed argv, java found on PATH
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--cluster-id",
                random_cluster_id(),
                "--config",
                str(props_file),
                *self.format_args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            self._cleanup_dir()
            raise LocalKafkaError(
                f"formatting the broker's storage failed (exit {fmt.returncode}):\n"
                f"{fmt.stdout}{fmt.stderr}",
            )
        record = {"port": self.port, "controller_port": self.controller_port}
        (self.workdir / RECORD).write_bytes(orjson.dumps(record))

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after a grace period).

        Its directory is removed too, unless ``keep_data``.
        """
        if self.process is not None:
            stop_process_group(self.process.pid, wait=self.process.wait)
            self.process = None
        self._cleanup_dir()

    def kill(self) -> None:
        """SIGKILL the broker this object started, at once (no clean shutdown).

        Its directory stays (with ``keep_data``, :meth:`start` brings it back).
        """
        if self.process is None:
            raise LocalKafkaError("no broker process of this object to kill")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def suspend(self) -> None:
        """SIGSTOP the broker: it keeps its sockets open and answers nothing."""
        if self.process is None:
            raise LocalKafkaError("no broker process of this object to suspend")
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a suspended broker."""
        if self.process is None:
            raise LocalKafkaError("no broker process of this object to resume")
        os.killpg(self.process.pid, signal.SIGCONT)

    def _cleanup_dir(self) -> None:
        if self.workdir is not None and not self.keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start the broker."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the broker and remove its directory (unless ``keep_data``)."""
        self.stop()


def pid_alive(pid: int) -> bool:
    """Return whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_process_group(
    pid: int,
    *,
    grace_s: float = STOP_GRACE_S,
    wait: Callable[..., object] | None = None,
) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it if still alive after ``grace_s``.

    ``wait`` is the ``Popen.wait`` of a child (to reap it); for a process started by
    another Python process (a detached broker), liveness is polled instead.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    if wait is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            wait(timeout=grace_s)
    else:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if wait is not None:
        wait()
