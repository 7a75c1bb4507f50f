"""``make docker-check``: the README's Docker path, built and run end to end.

1. a Docker engine: the one that answers, or a private ``dockerd`` (``engine.py``);
2. the local base images, reused when up to date (``images.py``);
3. the project's image, built by ``docker-compose build`` from the ``Dockerfile``;
4. ``docker-compose up --scale consumer=3``: Kafka, the topics, the iris model, three
   replicas; the group must give every replica partitions;
5. the demo's input, submitted from the host (``examples/iris.json`` and
   ``examples/iris-10k.jsonl``, 10,003 items): every item answered, no error;
6. the drain: one more batch per replica (on a partition it owns), and
   ``docker-compose stop consumer`` while they are being answered; every replica must
   exit 0; after ``start`` the batches complete, nothing answered before the stop is
   answered again (the drain committed it), nothing is lost, no dead letter, and the
   group has committed everything (items answered twice while the restarted replicas
   rebalance are reported, not failed: that is the rebalance's business, not the drain's);
7. the tests' testcontainers path (``tools/localkafka/cluster.py``) on the local Kafka image:
   a few test files run with the engine answering, and the engine must have started
   a container of that image;
8. everything torn down: the compose project, its volumes and network, and the daemon
   if this check started it.

It prints the figures (times, image sizes) as it goes and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from producer.results import BatchState, TopicReader, decode_record
from producer.topics import TopicSpec, admin_client, create_topics
from schemas import DLQ_TOPIC, REQUESTS_TOPIC, RESULTS_TOPIC, Result
from tools.ci_checks.docker.engine import Engine, EngineError, docker_cli, docker_engine
from tools.ci_checks.docker.images import (
    ImageError,
    ensure_kafka_image,
    ensure_python_base,
    prune_old,
    remove_containers,
    size_bytes,
)
from tools.localkafka.broker import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

ROOT = Path(__file__).resolve().parents[3]
PROJECT_IMAGE = "kafka-batch-runner:local"
# What docker-compose.yml configures.
GROUP = "batch-runner"
REQUESTS, RESULTS, DLQ = REQUESTS_TOPIC, RESULTS_TOPIC, DLQ_TOPIC
PARTITIONS = 12
# The tests run on the testcontainers path: the session's broker is the local image.
CONTAINER_TESTS = ("tests/test_kafka_foundation.py", "tests/test_producer_cli.py")
# Small requests, so the stop lands while the drain batches are being answered.
DRAIN_ITEMS_PER_REQUEST = "2"
T = TypeVar("T")


class CheckError(RuntimeError):
    """The Docker path does not do what the README says; the message says what."""


def say(text: str) -> None:
    """Print a progress line at once (CI shows it as it happens)."""
    print(text, flush=True)  # noqa: T201 - the check talks to the person or CI log


@dataclass
class Figures:
    """What the check measured, printed as it goes and as one JSON line at the end."""

    values: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the seconds the block took under ``name``."""
        began = time.monotonic()
        yield
        self.values[name] = round(time.monotonic() - began, 1)

    def __setitem__(self, name: str, value: object) -> None:
        """Record one figure."""
        self.values[name] = value


@dataclass
class Compose:
    """``docker-compose`` on the project's file, as one project with its own variables."""

    env: dict[str, str]
    project: str

    def run(self, *args: str, timeout_s: float = 600) -> str:
        """Run ``docker-compose ARGS``; return its output, or raise with it."""
        argv = [
            self.tool(),
            "--file",
            str(ROOT / "docker-compose.yml"),
            "--project-name",
            self.project,
            *args,
        ]
        try:
            done = subprocess.run(  # noqa: S603 - docker-compose from PATH, fixed arguments
                argv,
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=self.env,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CheckError(
                f"docker-compose {' '.join(args)}: no answer in {timeout_s:.0f}s"
            ) from exc
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise CheckError(f"docker-compose {' '.join(args)} failed:\n{output[-4000:]}")
        return output

    @staticmethod
    def tool() -> str:
        """Return ``docker-compose`` (v1, as Debian ships it), or say how to get it."""
        path = shutil.which("docker-compose")
        if path is None:
            raise CheckError("docker-compose is needed (Debian: apt-get install docker-compose)")
        return path

    def containers(self, service: str) -> list[str]:
        """Return the ids of ``service``'s containers, running or stopped."""
        return self.run("ps", "--all", "--quiet", service).split()

    def docker(self, *args: str, timeout_s: float = 60) -> str:
        """Run the ``docker`` client on the same engine; return its output."""
        done = subprocess.run(  # noqa: S603 - the docker client, fixed arguments
            [docker_cli(), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise CheckError(f"docker {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout


def cli(*args: str, bootstrap: str) -> str:
    """Run ``batch-runner ARGS`` from the host, as a user would; return its stdout."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "tools.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise CheckError(f"batch-runner {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Call ``probe`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise CheckError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def group_assignment(bootstrap: str) -> dict[str, list[int]]:
    """Return each member of the service's group and its partitions of the requests topic."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    description = admin.describe_consumer_groups([GROUP], request_timeout=10)[GROUP].result()
    return {
        member.client_id + "/" + member.member_id[-6:]: sorted(
            tp.partition for tp in member.assignment.topic_partitions if tp.topic == REQUESTS
        )
        for member in description.members
    }


def wait_for_replicas(bootstrap: str, replicas: int) -> dict[str, list[int]]:
    """Wait until ``replicas`` members share every partition, each holding some."""

    def probe() -> dict[str, list[int]] | None:
        try:
            members = group_assignment(bootstrap)
        except Exception:  # noqa: BLE001 - the group may not exist yet
            return None
        partitions = sorted(p for owned in members.values() for p in owned)
        every_one_works = len(members) == replicas and all(members.values())
        return members if every_one_works and partitions == list(range(PARTITIONS)) else None

    return wait_for(probe, 180, f"{replicas} replicas sharing the {PARTITIONS} partitions")


@dataclass
class Audit:
    """What the results topic holds for some batches: their states and each item's records."""

    states: dict[str, BatchState]
    # (batch, index) -> (how many result records, the chunk of the item)
    records: dict[tuple[str, int], tuple[int, int]]

    def answered(self) -> set[tuple[str, int]]:
        """Return the items that have a result."""
        return set(self.records)

    def repeated(self) -> dict[tuple[str, int], int]:
        """Return the items with more than one result record, and their chunks."""
        return {item: chunk for item, (count, chunk) in self.records.items() if count > 1}


def read_results(bootstrap: str, batches: Mapping[str, int]) -> Audit:
    """Read the whole results topic up to its current end; audit ``batches``."""
    audit = Audit({batch: BatchState(batch) for batch in batches}, {})
    reader = TopicReader(bootstrap, RESULTS, OFFSET_BEGINNING)
    try:
        targets = reader.high_watermarks()
        positions = dict.fromkeys(targets, 0)
        deadline = time.monotonic() + 120
        while any(positions[p] < end for p, end in targets.items()):
            if time.monotonic() > deadline:
                raise CheckError(f"could not read {RESULTS} to its end within 120s")
            for msg in reader.poll(0.5):
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None:
                    positions[partition] = offset + 1
                record = decode_record(msg)
                if record is None or record.batch_id not in audit.states:
                    continue
                audit.states[record.batch_id].add(record)
                if isinstance(record, Result):
                    count, _ = audit.records.get((record.batch_id, record.index), (0, 0))
                    audit.records[record.batch_id, record.index] = (count + 1, record.chunk)
            if reader.at_end():
                break
    finally:
        reader.close()
    return audit


def wait_complete(
    bootstrap: str, batches: Mapping[str, int], timeout_s: float
) -> dict[str, BatchState]:
    """Wait until every batch has a result for each of its items; return the states."""

    def probe() -> dict[str, BatchState] | None:
        states = read_results(bootstrap, batches).states
        done = all(len(states[b].results) >= total for b, total in batches.items())
        return states if done else None

    return wait_for(probe, timeout_s, f"results for {', '.join(batches)}")


def batch_ids_per_replica(bootstrap: str, assignment: Mapping[str, list[int]]) -> list[str]:
    """Return one drain batch id per replica, each landing on a partition that replica owns.

    A batch's chunks share its id as key, so they land on one partition; which one is
    found by producing candidate keys (with the producer's default partitioner, as
    ``submit`` uses) to a scratch topic with as many partitions as the requests topic.
    """
    scratch = "docker-check-keys"
    create_topics(admin_client(bootstrap), [TopicSpec(scratch, PARTITIONS)]).check()
    owner = {p: member for member, owned in assignment.items() for p in owned}
    landed: dict[str, int] = {}

    def report(err: object, msg: Any) -> None:  # noqa: ANN401 - confluent_kafka's Message
        if err is None:
            landed[msg.key().decode()] = msg.partition()

    producer = Producer({"bootstrap.servers": bootstrap})
    candidates = [f"docker-drain-{n}" for n in range(1, 200)]
    for key in candidates:
        producer.produce(scratch, key=key.encode(), value=b"", on_delivery=report)
    if producer.flush(30) != 0:
        raise CheckError("could not place the drain batches' keys")
    chosen: dict[str, str] = {}
    for key in candidates:
        member = owner.get(landed.get(key, -1))
        if member is not None and member not in chosen:
            chosen[member] = key
    if len(chosen) != len(assignment):
        raise CheckError(f"no drain batch id lands on every replica: {chosen}")
    return sorted(chosen.values())


def first_result(reader: TopicReader, batches: Mapping[str, int]) -> bool:
    """Return whether ``reader`` brought a result of one of ``batches``."""
    for msg in reader.poll(0.2):
        record = decode_record(msg)
        if record is not None and record.batch_id in batches:
            return True
    return False


def lag(bootstrap: str) -> int:
    """Return the messages of the requests topic the group has not committed yet."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        partitions = [TopicPartition(REQUESTS, p) for p in range(PARTITIONS)]
        committed = consumer.committed(partitions, timeout=10)
        total = 0
        for tp in committed:
            end = consumer.get_watermark_offsets(
                TopicPartition(REQUESTS, tp.partition), timeout=10
            )[1]
            total += end - max(tp.offset, 0)
        return total
    finally:
        consumer.close()


def dead_letters(bootstrap: str) -> int:
    """Return how many records the dead-letter topic holds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "docker-check-dlq"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(DLQ, 0), timeout=10)
        return high - low
    finally:
        consumer.close()


def replica_items(compose: Compose) -> dict[str, int]:
    """Return the items each replica answered, from its own /metrics."""
    script = (
        "import urllib.request as u; "
        "print(u.urlopen('http://127.0.0.1:9100/metrics', timeout=5).read().decode())"
    )
    counts: dict[str, int] = {}
    for container in compose.containers("consumer"):
        text = compose.docker("exec", container, "python", "-c", script)
        found = re.findall(
            r'^batch_runner_items_total\{status="\w+"\} ([0-9.e+]+)$', text, re.MULTILINE
        )
        counts[container[:12]] = int(sum(float(v) for v in found))
    return counts


def check_batches(states: Mapping[str, BatchState], batches: Mapping[str, int]) -> None:
    """Every item answered, ok."""
    for batch, total in batches.items():
        state = states[batch]
        if len(state.results) != total:
            raise CheckError(f"{batch}: {len(state.results)} of {total} items have a result")
        if state.errors:
            raise CheckError(f"{batch}: {state.errors} items failed")


def describe(repeated: Mapping[tuple[str, int], int]) -> str:
    """Return ``batch chunk N: K items`` lines for repeated items."""
    chunks: dict[tuple[str, int], int] = {}
    for (batch, _), chunk in repeated.items():
        chunks[batch, chunk] = chunks.get((batch, chunk), 0) + 1
    return ", ".join(f"{b} chunk {c}: {n} items" for (b, c), n in sorted(chunks.items()))


def submit(path: Path, batch: str, bootstrap: str, *extra: str) -> None:
    """Submit ``path`` as ``batch`` with the CLI."""
    cli("submit", str(path), "--batch-id", batch, "--quiet", *extra, bootstrap=bootstrap)


def run_compose(compose: Compose, replicas: int, bootstrap: str, figures: Figures) -> None:
    """Run steps 4 to 6: up, the demo's input, the drain; the caller tears down."""
    with figures.timed("compose_up_s"):
        compose.run("up", "--detach", "--scale", f"consumer={replicas}", timeout_s=600)
    say(f"  up: Kafka, topics, model and {replicas} replicas ({figures.values['compose_up_s']}s)")
    members = wait_for_replicas(bootstrap, replicas)
    figures["partitions_per_replica"] = sorted(len(p) for p in members.values())
    say(f"  the group gave every replica partitions: {figures.values['partitions_per_replica']}")

    demo = {"docker-iris-3": 3, "docker-iris-10k": 10_000}
    with figures.timed("demo_submit_to_last_result_s"):
        submit(ROOT / "examples" / "iris.json", "docker-iris-3", bootstrap)
        submit(
            ROOT / "examples" / "iris-10k.jsonl",
            "docker-iris-10k",
            bootstrap,
            "--items-per-request",
            "20",
        )
        states = wait_complete(bootstrap, demo, 300)
    check_batches(states, demo)
    figures["replica_items_after_demo"] = sorted(replica_items(compose).values())
    per_replica = figures.values["replica_items_after_demo"]
    say(
        f"  10,003 items answered, 0 errors ({figures.values['demo_submit_to_last_result_s']}s "
        f"from submit to last result; items per replica {per_replica})",
    )

    drain_and_restart(compose, replicas, bootstrap, figures, demo)


def drain_and_restart(
    compose: Compose,
    replicas: int,
    bootstrap: str,
    figures: Figures,
    demo: Mapping[str, int],
) -> None:
    """Run step 6: stop the replicas while they answer, start them, audit the results."""
    # One batch per replica, so that every replica has work to drain when it is stopped.
    drain = dict.fromkeys(batch_ids_per_replica(bootstrap, group_assignment(bootstrap)), 10_000)
    watcher = TopicReader(bootstrap, RESULTS, OFFSET_END)
    try:
        watcher.poll(1.0)  # positions the reader at the end before anything is submitted
        for batch in drain:
            submit(
                ROOT / "examples" / "iris-10k.jsonl",
                batch,
                bootstrap,
                "--items-per-request",
                DRAIN_ITEMS_PER_REQUEST,
            )
        wait_for(lambda: first_result(watcher, drain), 120, "the first result of a drain batch")
    finally:
        watcher.close()
    with figures.timed("compose_stop_s"):
        compose.run("stop", "consumer", timeout_s=300)
    exits = [
        int(compose.docker("inspect", "--format", "{{.State.ExitCode}}", c).strip())
        for c in compose.containers("consumer")
    ]
    figures["drain_exit_codes"] = exits
    answered_at_stop = read_results(bootstrap, {**demo, **drain}).answered()
    figures["drain_answered_at_stop"] = sum(1 for batch, _ in answered_at_stop if batch in drain)
    logs = compose.run("logs", "--no-color", "consumer")
    draining = re.findall(r'"buffered_items":(\d+),"handed_back_items":(\d+)', logs)
    figures["drain_handed_back_items"] = [int(back) for _, back in draining]
    figures["drain_finished_items"] = [int(kept) for kept, _ in draining]
    say(
        f"  stopped under load with {figures.values['drain_answered_at_stop']} of "
        f"{sum(drain.values())} items answered: exit codes {exits}; per replica, items "
        f"finished in the drain {figures.values['drain_finished_items']}, handed back "
        f"{figures.values['drain_handed_back_items']} ({figures.values['compose_stop_s']}s)",
    )
    if sum(1 for kept, back in draining if int(kept) + int(back) > 0) < replicas:
        say("  note: a replica had no work left when it was stopped")
    if len(exits) != replicas or any(exits):
        raise CheckError(f"every replica must drain and exit 0 on docker-compose stop: {exits}")

    with figures.timed("restart_to_complete_s"):
        compose.run("start", "consumer")
        wait_complete(bootstrap, drain, 300)
    batches = {**demo, **drain}
    wait_for(lambda: lag(bootstrap) == 0, 60, "the group to commit every request")
    audit = read_results(bootstrap, batches)
    check_batches(audit.states, batches)
    repeated = audit.repeated()
    redone = {item: chunk for item, chunk in repeated.items() if item in answered_at_stop}
    figures["items_redone_after_restart"] = len(redone)
    figures["items_repeated_during_restart"] = len(repeated) - len(redone)
    if redone:
        raise CheckError(
            "work answered before docker-compose stop was done again after start (the drain "
            f"did not commit it): {describe(redone)}",
        )
    if repeated:
        # Not what this step checks (the drain), but worth seeing: at-least-once duplicates
        # from the restarted replicas' rebalances (the first to join takes every partition,
        # then gives most of them back).
        say(
            "  WARNING: answered twice while the restarted replicas rebalanced: "
            f"{describe(repeated)}",
        )
    if (letters := dead_letters(bootstrap)) != 0:
        raise CheckError(f"{letters} dead letters: the demo's input is valid")
    once = "each item answered exactly once" if not repeated else "nothing redone"
    say(
        f"  after start: every batch complete, {once}, no dead letter, lag 0 "
        f"({figures.values['restart_to_complete_s']}s)",
    )


def run_container_tests(engine: Engine, kafka_image: str, figures: Figures) -> None:
    """Step 7: the tests' testcontainers path, on the local Kafka image."""
    env = {
        **engine.env,
        "BATCH_RUNNER_KAFKA_IMAGE": kafka_image,
        # Ryuk (testcontainers' reaper) is an image from Docker Hub; the tests stop theirs.
        "TESTCONTAINERS_RYUK_DISABLED": "true",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    since = str(int(time.time()) - 1)
    with figures.timed("container_tests_s"):
        done = subprocess.run(  # noqa: S603 - pytest of this environment, fixed arguments
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CONTAINER_TESTS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    say("\n".join("    " + line for line in done.stdout.strip().splitlines()[-3:]))
    if done.returncode != 0:
        raise CheckError(f"the tests failed on the testcontainers path:\n{done.stdout[-6000:]}")
    until = str(int(time.time()) + 1)
    started = subprocess.run(  # noqa: S603 - the docker client, fixed arguments
        [
            docker_cli(),
            "events",
            "--since",
            since,
            "--until",
            until,
            "--filter",
            f"image={kafka_image}",
            "--filter",
            "event=start",
            "--format",
            "{{.ID}}",
        ],
        capture_output=True,
        text=True,
        env=engine.env,
        timeout=60,
        check=True,
    ).stdout.split()
    if not started:
        raise CheckError(f"the tests passed without starting {kafka_image}: not the Docker path")
    left = subprocess.run(  # noqa: S603 - the docker client, fixed arguments
        [docker_cli(), "ps", "--all", "--quiet", "--filter", f"ancestor={kafka_image}"],
        capture_output=True,
        text=True,
        env=engine.env,
        timeout=60,
        check=True,
    ).stdout.split()
    if left:
        raise CheckError(f"testcontainers left {len(left)} broker containers behind")
    figures["container_tests_brokers_started"] = len(started)
    say(
        f"  the tests ran on {kafka_image} through testcontainers "
        f"({figures.values['container_tests_s']}s, {len(started)} broker container)",
    )


def run(args: argparse.Namespace, workdir: Path, figures: Figures) -> None:
    """Run steps 1 to 8."""
    say("docker check")
    with docker_engine(workdir / "dockerd.log", say) as engine:
        if engine.started and (stale := remove_containers(engine.env)):
            say(f"  removed {stale} containers an interrupted earlier check left")
        base = ensure_python_base(engine.env, workdir, say)
        figures["python_base_build_s"] = "cached" if base.cached else round(base.seconds, 1)
        kafka = ensure_kafka_image(engine.env, base.tag, workdir, say)
        figures["kafka_image_build_s"] = "cached" if kafka.cached else round(kafka.seconds, 1)
        say(f"  base images: {base.tag} {figures.values['python_base_build_s']}")
        say(f"               {kafka.tag} {figures.values['kafka_image_build_s']}")
        kafka_port, model_port = free_port(), free_port()
        compose = Compose(
            env={
                **engine.env,
                "BATCH_RUNNER_PYTHON_IMAGE": base.tag,
                "BATCH_RUNNER_KAFKA_IMAGE": kafka.tag,
                "BATCH_RUNNER_BUILD_NETWORK": "host",
                "BATCH_RUNNER_KAFKA_PORT": str(kafka_port),
                "BATCH_RUNNER_MODEL_PORT": str(model_port),
            },
            project=f"kbr-check-{os.getpid()}",
        )
        with figures.timed("project_image_build_s"):
            output = compose.run("build", timeout_s=1800)
        steps = len(re.findall(r"^Step \d+/\d+ :", output, re.MULTILINE))
        cached = output.count("Using cache")
        figures["project_image_cached_steps"] = f"{cached}/{steps}"
        for name, tag in (
            ("project", PROJECT_IMAGE),
            ("python_base", base.tag),
            ("kafka", kafka.tag),
        ):
            figures[f"{name}_image_mb"] = round(size_bytes(engine.env, tag) / 1e6)
        say(
            f"  {PROJECT_IMAGE}: {figures.values['project_image_mb']} MB, built in "
            f"{figures.values['project_image_build_s']}s ({cached} of {steps} steps from cache)",
        )
        bootstrap = f"127.0.0.1:{kafka_port}"
        try:
            with figures.timed("compose_end_to_end_s"):
                run_compose(compose, args.replicas, bootstrap, figures)
        except BaseException:
            with contextlib.suppress(CheckError, OSError):
                logs = compose.run("logs", "--no-color", "--timestamps")
                kept = Path(tempfile.gettempdir()) / f"{compose.project}.log"
                kept.write_text(logs)
                say(f"  the services' logs are kept in {kept}")
            raise
        finally:
            with figures.timed("compose_down_s"):
                compose.run("down", "--volumes", "--remove-orphans", timeout_s=300)
        if not args.no_tests:
            run_container_tests(engine, kafka.tag, figures)
        if engine.started:
            prune_old(engine.env)


def main(argv: list[str] | None = None) -> int:
    """Run the check; print the figures; exit 0 only if every step held."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.ci_checks.docker.check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--replicas", type=int, default=3, help="consumer replicas (3)")
    parser.add_argument("--no-tests", action="store_true", help="skip the testcontainers step")
    args = parser.parse_args(argv)
    figures = Figures()
    status = 0
    with tempfile.TemporaryDirectory(prefix="docker-check-") as tmp:
        try:
            run(args, Path(tmp), figures)
        except (CheckError, EngineError, ImageError) as exc:
            say(f"docker check FAILED: {exc}")
            status = 1
        except KeyboardInterrupt:
            say("docker check interrupted (everything it started was stopped)")
            status = 130
    figures["total_s"] = round(time.monotonic() - figures.started, 1)
    say("docker check figures: " + json.dumps(figures.values))
    if status == 0:
        say(f"docker check passed ({figures.values['total_s']}s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
