"""``batch-runner kafka start|stop|status|run``: a local broker for people without Docker.

``start`` leaves a broker running in the background and records it in a state file in
the cache directory, so ``status`` and ``stop`` find it from any shell. ``run`` keeps it
in the foreground until Ctrl-C. Scripts read the bootstrap address from ``start``'s
standard output (one line) or from ``status``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from typing import TYPE_CHECKING

import orjson

from tools.kafka_local import (
    KAFKA_VERSION,
    LocalKafka,
    LocalKafkaError,
    cache_root,
    ensure_jars,
    pid_alive,
    stop_process_group,
    wait_until_ready,
)

if TYPE_CHECKING:
    import argparse
    from pathlib import Path
    from typing import Any


def state_file() -> Path:
    """Where a detached broker started by ``kafka start`` is recorded."""
    return cache_root() / "broker.json"


def read_state() -> dict[str, Any] | None:
    """Return the recorded broker if its process is still alive, else ``None``."""
    path = state_file()
    try:
        state: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not pid_alive(int(state["pid"])):
        return None
    return state


def _start(args: argparse.Namespace) -> int:
    current = read_state()
    if current is not None:
        print(current["bootstrap_servers"])
        print(f"a broker is already running (pid {current['pid']})", file=sys.stderr)
        return 0
    kafka = LocalKafka(port=args.port)
    try:
        kafka.start(detach=True)
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assert kafka.workdir is not None  # noqa: S101 - set by start()
    state = {
        "pid": kafka.pid,
        "bootstrap_servers": kafka.bootstrap_servers,
        "workdir": str(kafka.workdir),
        "version": KAFKA_VERSION,
    }
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_bytes(orjson.dumps(state))
    print(kafka.bootstrap_servers)
    print(
        f"Kafka {KAFKA_VERSION} is running (pid {kafka.pid}); log: {kafka.log_file}\n"
        f"  export KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}\n"
        "  stop it with: batch-runner kafka stop",
        file=sys.stderr,
    )
    return 0


def _fetch(_: argparse.Namespace) -> int:
    try:
        libs = ensure_jars()
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(libs)
    return 0


def _create_topics(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError, KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415
    from confluent_kafka.cimpl import NewTopic  # noqa: PLC0415

    bootstrap = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        state = read_state()
        bootstrap = state["bootstrap_servers"] if state else None
    if not bootstrap:
        print("error: no cluster: set KAFKA_BOOTSTRAP_SERVERS or start one", file=sys.stderr)
        return 2
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [
        NewTopic(args.requests_topic, num_partitions=args.partitions, replication_factor=-1),
        NewTopic(args.results_topic, num_partitions=args.partitions, replication_factor=-1),
        NewTopic(args.dlq_topic, num_partitions=1, replication_factor=-1),
    ]
    failed = False
    for name, future in admin.create_topics(wanted, request_timeout=15).items():
        try:
            future.result(timeout=30)
            print(f"created {name}")
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                print(f"exists  {name}")
            else:
                print(f"error: {name}: {exc}", file=sys.stderr)
                failed = True
    return 1 if failed else 0


def _stop(_: argparse.Namespace) -> int:
    path = state_file()
    try:
        state: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        print("no local broker is recorded as running", file=sys.stderr)
        return 0
    stop_process_group(int(state["pid"]))
    shutil.rmtree(state["workdir"], ignore_errors=True)
    path.unlink(missing_ok=True)
    print(f"stopped the broker at {state['bootstrap_servers']}", file=sys.stderr)
    return 0


def _status(_: argparse.Namespace) -> int:
    state = read_state()
    if state is None:
        print("not running", file=sys.stderr)
        return 1
    try:
        wait_until_ready(state["bootstrap_servers"], timeout_s=5)
    except TimeoutError:
        print(f"process {state['pid']} is alive but the broker does not answer", file=sys.stderr)
        return 1
    print(state["bootstrap_servers"])
    return 0


def _run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with LocalKafka(port=args.port) as kafka:
            print(kafka.bootstrap_servers, flush=True)
            print(f"Kafka {KAFKA_VERSION} is running; Ctrl-C stops it", file=sys.stderr)
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``kafka`` and its actions to the ``batch-runner`` parser."""
    parser = subparsers.add_parser(
        "kafka",
        help="start, stop or inspect a local single-node Kafka broker",
        description=f"A real Apache Kafka {KAFKA_VERSION} broker (KRaft, single node) "
        "run with java from jars fetched once from Maven Central.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start in the background; print the address")
    start.add_argument("--port", type=int, default=0, help="listener port (default: free)")
    start.set_defaults(handler=_start)
    run = actions.add_parser("run", help="run in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=0, help="listener port (default: free)")
    run.set_defaults(handler=_run)
    actions.add_parser(
        "fetch",
        help="download the broker jars into the cache (once) and print their directory",
    ).set_defaults(handler=_fetch)
    topics = actions.add_parser(
        "create-topics",
        help="create the service's topics (requests and results partitioned, plus the DLQ)",
    )
    topics.add_argument(
        "--bootstrap-servers", help="default: KAFKA_BOOTSTRAP_SERVERS or the local broker"
    )
    topics.add_argument("--partitions", type=int, default=4, help="for requests and results (4)")
    topics.add_argument("--requests-topic", default="batch-requests")
    topics.add_argument("--results-topic", default="batch-results")
    topics.add_argument("--dlq-topic", default="batch-requests.dlq")
    topics.set_defaults(handler=_create_topics)
    actions.add_parser("stop", help="stop the background broker").set_defaults(handler=_stop)
    actions.add_parser("status", help="print the address if running").set_defaults(
        handler=_status,
    )
