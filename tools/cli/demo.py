"""``batch-runner demo``: the whole product in one command, against a real model.

With nothing configured it starts a local Kafka broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``,
or Docker where an engine runs), creates the demo's topics, starts the iris model server
and two consumer replicas, submits the original three iris rows and a 10,000-row batch,
follows the results live, prints a summary (items, errors, items/s, latency, accuracy of
the predictions against the iris labels), then stops everything it started. Ctrl-C stops
it cleanly at any point.

``--model-server mlserver`` or ``kserve`` runs the same flow against a real MLServer or
KServe (installed once into the project's cache, see ``tools/testservers/real_servers.py``) in
``--protocol`` v1 or v2, with the codec options that server needs (shown at start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaException

from consumer.launch import replica_env, start_replica
from consumer.protocols import PROTOCOLS
from producer.results import BatchState, TopicReader, decode_record, percentiles
from producer.submit import submit
from producer.topics import admin_client, create_topics, service_topics
from schemas import Result, TopicNames
from schemas.errors import KafkaUnavailableError, ToolError
from tools.localkafka.broker import free_port
from tools.localkafka.cluster import kafka_cluster
from tools.localkafka.processes import terminate
from tools.modelserver.iris_data import sample

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

    from consumer.protocols import ProtocolName

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris.json"
ORIGINAL_ROWS = [
    {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.5, "petal_width": 0.3},
    {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5},
]
# What the original example's classifier answers for its three rows.
ORIGINAL_LABELS = ["setosa", "virginica", "versicolor"]
# serve-model is the product's; the real servers (tools.testservers.real_servers.SERVERS) run
# from a source checkout only.
DEFAULT_PROTOCOL: dict[str, ProtocolName] = {"serve-model": "v1", "mlserver": "v2", "kserve": "v1"}
MODEL_SERVERS = tuple(DEFAULT_PROTOCOL)
# Codec options the iris objects need per real server and protocol (the README's items
# are objects; KServe's sklearn handling wants v1 instances as rows).
CODEC: dict[tuple[str, str], str] = {("kserve", "v1"): "rows=true"}


class DemoError(ToolError):
    """The demo could not run; the message says why."""


@contextlib.contextmanager
def child(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a child process for the duration of the block; SIGTERM it (then kill) afterwards."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(  # noqa: S603 - our own commands, fixed argv
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        yield process
    finally:
        terminate(process, grace_s=20)


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    """Wait until ``url`` answers 200, failing early if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"the model server exited:\n{log.read_text(errors='replace')[-2000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as answer,  # noqa: S310 - loopback URL
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise DemoError(f"the model server did not become ready at {url} in {timeout_s:.0f}s")


def delete_topics(bootstrap: str, names: TopicNames) -> None:
    """Remove the demo's topics from a cluster the demo did not start."""
    admin = admin_client(bootstrap)
    doomed = [names.requests, names.results, names.dlq, names.status]
    for future in admin.delete_topics(doomed).values():
        with contextlib.suppress(KafkaException):
            future.result(timeout=30)


class Display:
    """Live progress: rich bars on a terminal, a line a second otherwise."""

    def __init__(self, batches: dict[str, int], *, quiet: bool) -> None:
        """Prepare one bar per batch (``batches``: id -> item count)."""
        self._batches = batches
        self._quiet = quiet
        self._last = 0.0
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if not quiet and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[errors]} errors"),
            )
            self._progress.start()
            for batch_id, total in batches.items():
                self._tasks[batch_id] = self._progress.add_task(batch_id, total=total, errors=0)

    def update(self, states: dict[str, BatchState]) -> None:
        """Show the current counts."""
        if self._progress is not None:
            for batch_id, state in states.items():
                self._progress.update(
                    self._tasks[batch_id],
                    completed=len(state.results),
                    errors=state.errors,
                )
            return
        now = time.monotonic()
        if self._quiet or now - self._last < 1.0:
            return
        self._last = now
        parts = [f"{b}: {len(s.results)}/{self._batches[b]}" for b, s in states.items()]
        print("  " + ", ".join(parts), flush=True)

    def close(self) -> None:
        """Stop the live display."""
        if self._progress is not None:
            self._progress.stop()


def follow(
    bootstrap: str,
    topic: str,
    batches: dict[str, int],
    display: Display,
    timeout_s: float,
) -> dict[str, BatchState]:
    """Read results until every batch is complete (or the timeout); return the states."""
    states = {batch_id: BatchState(batch_id) for batch_id in batches}
    reader = TopicReader(bootstrap, topic, OFFSET_BEGINNING)
    deadline = time.monotonic() + timeout_s
    try:
        while not all(state.complete for state in states.values()):
            if time.monotonic() > deadline:
                raise DemoError(f"results did not complete within {timeout_s:.0f}s")
            for msg in reader.poll(0.1):
                record = decode_record(msg)
                if record is not None and record.batch_id in states:
                    states[record.batch_id].add(record)
            display.update(states)
    finally:
        reader.close()
        display.close()
    return states


def accuracy(states: dict[str, BatchState], labels: dict[str, list[str]]) -> tuple[float, int]:
    """Return the share of ok predictions equal to the true label, and how many were scored."""
    right = scored = 0
    for batch_id, truth in labels.items():
        for index, result in states[batch_id].results.items():
            if isinstance(result, Result) and result.status == "ok":
                scored += 1
                right += result.prediction == truth[index]
    return (right / scored if scored else 0.0), scored


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; return the exit code."""

    def say(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="batch-runner-demo-"))
    code = 1
    try:
        code = _run_in(workdir, args, say)
    finally:
        if code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"the demo's process logs are in {workdir}", file=sys.stderr)
    return code


@contextlib.contextmanager
def model_endpoint(
    workdir: Path, server: str, protocol: ProtocolName, say: Callable[[str], None]
) -> Iterator[str]:
    """Start the chosen model server; yield the URL the consumers post to in ``protocol``."""
    if server == "serve-model":
        port = free_port()
        model_log = workdir / "model.log"
        with child(
            [sys.executable, "-m", "tools.cli", "serve-model", "--port", str(port)],
            model_log,
        ) as model:
            wait_http(f"http://127.0.0.1:{port}/v2/health/ready", model, model_log)
            say(f"  iris model server at http://127.0.0.1:{port} (scikit-learn, trained now)")
            paths = {
                "raw": "/predict",
                "v1": "/v1/models/iris:predict",
                "v2": "/v2/models/iris/infer",
            }
            yield f"http://127.0.0.1:{port}{paths[protocol]}"
        return
    try:
        from tools.testservers.real_servers import SERVERS, RealServerError, running  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name != "tools.testservers":
            raise
        raise DemoError(
            f"--model-server {server} runs from a source checkout: the tools.testservers package "
            "is not part of the installed wheel"
        ) from None
    kind = SERVERS[server]
    if protocol not in kind.protocols:
        raise DemoError(f"{kind.title} serves {', '.join(kind.protocols)}, not {protocol}")
    started = time.monotonic()
    try:
        with running(kind, workdir / kind.name) as real:
            say(
                f"  {kind.title} {kind.version} at {real.url} "
                f"(ready in {time.monotonic() - started:.1f}s)",
            )
            yield real.endpoint(protocol)
    except RealServerError as exc:
        raise DemoError(str(exc)) from None


def _run_in(workdir: Path, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    run_id = uuid.uuid4().hex[:8]
    topics = TopicNames(
        f"demo-{run_id}-requests",
        f"demo-{run_id}-results",
        f"demo-{run_id}-dlq",
        f"demo-{run_id}-status",
    )
    external = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    protocol: ProtocolName = args.protocol or DEFAULT_PROTOCOL[args.model_server]
    codec = CODEC.get((args.model_server, protocol), "")
    say("kafka-batch-runner demo")
    started = time.monotonic()
    with kafka_cluster() as bootstrap:
        say(f"  Kafka at {bootstrap} ({time.monotonic() - started:.1f}s)")
        try:
            create_topics(admin_client(bootstrap), service_topics(topics, args.partitions)).check()
        except KafkaUnavailableError as exc:
            raise DemoError(str(exc)) from None
        try:
            with model_endpoint(workdir, args.model_server, protocol, say) as endpoint:
                env = {
                    **os.environ,
                    **replica_env(
                        bootstrap,
                        topics,
                        endpoint=endpoint,
                        protocol=protocol,
                        codec=codec,
                        group_id=f"demo-{run_id}",
                        max_in_flight=16,
                        log_format="json",
                        metrics_port=0,
                    ),
                }
                with contextlib.ExitStack() as replicas:
                    for number in range(args.replicas):
                        log = workdir / f"consumer-{number}.log"
                        replica = start_replica(env, log, new_session=True)
                        replicas.callback(terminate, replica, grace_s=20)
                    options = f", codec {codec}" if codec else ""
                    say(
                        f"  {args.replicas} consumer replicas in group demo-{run_id} "
                        f"({protocol} to {endpoint}{options})",
                    )
                    return _submit_and_follow(args, bootstrap, topics, say)
        finally:
            if external:
                delete_topics(bootstrap, topics)


def _submit_and_follow(
    args: argparse.Namespace,
    bootstrap: str,
    topics: TopicNames,
    say: Callable[[str], None],
) -> int:
    big_items, big_labels = sample(args.items)
    original = [orjson.dumps(row) for row in ORIGINAL_ROWS]
    first = submit(
        original,
        bootstrap_servers=bootstrap,
        topic=topics.requests,
        batch_id="iris-original",
        status_topic=topics.status,
    )
    second = submit(
        [orjson.dumps(row) for row in big_items],
        bootstrap_servers=bootstrap,
        topic=topics.requests,
        batch_id=f"iris-{args.items}",
        chunk_size=500,
        items_per_request=args.items_per_request,
        status_topic=topics.status,
    )
    submitted_at = time.monotonic()
    say(
        f"  submitted {first.batch_id} ({first.items} items) and {second.batch_id} "
        f"({second.items} items in {second.chunks} chunks, {args.items_per_request} per request)",
    )
    batches = {first.batch_id: first.items, second.batch_id: second.items}
    states = follow(
        bootstrap, topics.results, batches, Display(batches, quiet=args.quiet), args.timeout
    )
    elapsed = time.monotonic() - submitted_at
    items = sum(len(s.results) for s in states.values())
    errors = sum(s.errors for s in states.values())
    results = [r for s in states.values() for r in s.results.values()]
    p50, p99 = percentiles([r.latency_ms for r in results])
    queue_p50, queue_p99 = percentiles([r.queue_ms or 0.0 for r in results])
    score, scored = accuracy(
        states,
        {first.batch_id: ORIGINAL_LABELS, second.batch_id: big_labels},
    )
    original_answers = [states[first.batch_id].results[i].prediction for i in range(3)]
    summary = {
        "items": items,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "items_per_s": round(items / elapsed, 1),
        "p50_latency_ms": round(p50, 2),
        "p99_latency_ms": round(p99, 2),
        "p50_queue_ms": round(queue_p50, 2),
        "p99_queue_ms": round(queue_p99, 2),
        "accuracy": round(score, 4),
        "scored": scored,
        "original_predictions": original_answers,
    }
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        print("summary")
        print(f"  items        {items}")
        print(f"  errors       {errors}")
        print(
            f"  items/s      {summary['items_per_s']} ({elapsed:.1f}s from submit to last result)"
        )
        print(
            f"  latency      p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            "(per work unit: first attempt to answer, retries included)",
        )
        print(
            f"  queue        p50 {queue_p50:.1f} ms, p99 {queue_p99:.1f} ms "
            "(waiting for a free request slot, --max-in-flight)",
        )
        print(f"  accuracy     {score:.3f} against the iris labels ({scored} items)")
        print(f"  original 3   {', '.join(str(a) for a in original_answers)}")
    return 0 if errors == 0 else 1


def _run(args: argparse.Namespace) -> int:
    try:
        return run_demo(args)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started was stopped", file=sys.stderr)
        return 130


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the ``batch-runner`` parser."""
    parser = subparsers.add_parser("demo", help="run the whole pipeline once, end to end")
    parser.add_argument("--items", type=int, default=10_000, help="size of the big batch")
    parser.add_argument("--items-per-request", type=int, default=20, help="for the big batch")
    parser.add_argument(
        "--model-server",
        choices=MODEL_SERVERS,
        default="serve-model",
        help="the project's iris server, or a real MLServer or KServe (installed once)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="default: v1 (serve-model, kserve), v2 (mlserver)",
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for results")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    parser.set_defaults(handler=_run)
