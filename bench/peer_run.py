"""The peer: Confluent Parallel Consumer (Vert.x module) beside the pipeline, same run.

``bench/peer/`` is a small Maven project (``Peer.java``) built here with ``mvn package``
from Maven Central, like the broker jars. :class:`PeerProcess` starts one JVM and sends it
``RUN`` lines: each runs a fresh parallel consumer over a backlog of one record per item
(produced beforehand by :func:`produce_items`) and answers with its figures. The first run
warms the JVM up; the figures kept are the later runs'.

Without ``java`` or ``mvn`` on the machine (or when the build fails) :func:`peer_available`
says why, and the scenario reports the peer's figures as not measured.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson
from confluent_kafka import Producer

if TYPE_CHECKING:
    from bench.kafka_io import Topics

PEER_DIR = Path(__file__).resolve().parent / "peer"
JAR = PEER_DIR / "target" / "peer-1.jar"
BUILD_TIMEOUT_S = 600.0


def peer_available() -> str | None:
    """Build the peer if its jar is missing or older than its sources; return why not, or None."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        return "java and mvn are needed for the Parallel Consumer peer"
    sources = [PEER_DIR / "pom.xml", *PEER_DIR.glob("src/**/*.java")]
    newest = max(path.stat().st_mtime for path in sources)
    if JAR.exists() and JAR.stat().st_mtime >= newest and (JAR.parent / "lib").is_dir():
        return None
    try:
        done = subprocess.run(
            ["mvn", "-q", "-B", "package", "-DskipTests"],
            cwd=PEER_DIR,
            capture_output=True,
            check=False,
            timeout=BUILD_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the peer's build failed: {exc}"
    if done.returncode != 0:
        return f"the peer's build failed:\n{done.stdout.decode()[-2000:]}"
    return None


def produce_items(bootstrap: str, topic: str, items: int) -> None:
    """Produce ``items`` records ``{"i":n}``, one per item, and wait for the broker."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        },
    )
    for n in range(items):
        while True:
            try:
                producer.produce(topic, value=b'{"i":%d}' % n, key=b"%d" % n)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("the peer's backlog was not acknowledged within 120 s")


class PeerProcess:
    """One JVM running the peer, warm after its first run."""

    def __init__(self) -> None:
        """Start the JVM (build the peer first with :func:`peer_available`)."""
        classpath = f"{JAR}:{JAR.parent / 'lib'}/*"
        self._process = subprocess.Popen(
            ["java", "-cp", classpath, "bench.peer.Peer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    @property
    def pid(self) -> int:
        """The JVM's process id (its CPU is read from ``/proc``)."""
        return self._process.pid

    def start(self, bootstrap: str, topics: Topics, url: str, items: int, per_request: int) -> None:
        """Start a run over ``items`` records of ``topics.requests``; return when it began.

        It has begun when the first batch reached the user function (the peer says
        ``STARTED``): the consumer group is joined, as the pipeline's replicas are when
        its clock starts over a backlog produced beforehand.
        """
        line = f"RUN {bootstrap} {topics.requests} {topics.results} {url} {items} {per_request}\n"
        stdin, _ = self._pipes()
        stdin.write(line.encode())
        stdin.flush()
        if self._line().strip() != b"STARTED":
            raise RuntimeError("the peer did not start its run")

    def finish(self) -> dict[str, float]:
        """Wait for the run's end; return the peer's own figures (``seconds``, ``cpu_s``, RSS)."""
        figures: dict[str, float] = orjson.loads(self._line())
        return figures

    def _line(self) -> bytes:
        _, stdout = self._pipes()
        answer = stdout.readline()
        if not answer:
            self._process.wait(10)
            stderr = self._process.stderr.read().decode() if self._process.stderr else ""
            raise RuntimeError(f"the peer stopped:\n{stderr[-3000:]}")
        return answer

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        stdin, stdout = self._process.stdin, self._process.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("the peer has no pipes")
        return stdin, stdout

    def close(self) -> None:
        """End the JVM (closing its input ends it; killed if it does not)."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
