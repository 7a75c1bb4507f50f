"""``batch-runner kafka start|stop|status|list|run``: a local broker for people without Docker.

``start`` leaves a broker running in the background and records it in a state file, so
``status`` and ``stop`` find it from any shell. ``run`` keeps it in the foreground until
Ctrl-C. Scripts read the bootstrap address from ``start``'s standard output (one line)
or from ``status``.

State files live per user (``$XDG_STATE_HOME/kafka-batch-runner/brokers/``, by default
``~/.local/state/...``), one per broker name. The default name is the checkout's (its
directory name and a hash of its path), so two checkouts, or two users, each get a
broker of their own; ``--name`` picks another (two brokers from one checkout).
``--data-dir DIR`` keeps the broker's storage in DIR: ``stop`` leaves it, and a later
``start --data-dir DIR`` reuses it on the same ports.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from schemas import DLQ_TOPIC, REQUESTS_TOPIC, RESULTS_TOPIC, STATUS_TOPIC, TopicNames
from tools.localkafka.broker import (
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
    from typing import Any

CHECKOUT = Path(__file__).resolve().parents[2]


def state_root() -> Path:
    """Return the per-user directory of the state files (``$XDG_STATE_HOME`` or ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kafka-batch-runner" / "brokers"


def default_name(checkout: Path = CHECKOUT) -> str:
    """Return the broker name of a checkout: its directory name and a hash of its path."""
    digest = hashlib.sha256(str(checkout).encode()).hexdigest()[:8]
    return f"{_safe(checkout.name) or 'checkout'}-{digest}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")


def state_file(name: str | None = None) -> Path:
    """Where the detached broker ``name`` (default: this checkout's) is recorded."""
    chosen = _safe(name) if name else default_name()
    if not chosen:
        raise ValueError(f"broker name {name!r} has no usable character")
    return state_root() / f"{chosen}.json"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state


def read_state(name: str | None = None) -> dict[str, Any] | None:
    """Return the recorded broker ``name`` if its process is still alive, else ``None``."""
    state = _load(state_file(name))
    if state is None or not pid_alive(int(state["pid"])):
        return None
    return state


def _legacy_hint() -> str:
    """Point at a broker recorded where versions before per-user state put it."""
    legacy = _load(cache_root() / "broker.json")
    if legacy is None or not pid_alive(int(legacy["pid"])):
        return ""
    return (
        f" (a broker recorded the old way, in {cache_root() / 'broker.json'}, runs at "
        f"{legacy['bootstrap_servers']}, pid {legacy['pid']}: stop it with "
        f"kill -TERM -{legacy['pid']})"
    )


def _start(args: argparse.Namespace) -> int:
    current = read_state(args.name)
    if current is not None:
        print(current["bootstrap_servers"])
        print(f"a broker is already running (pid {current['pid']})", file=sys.stderr)
        return 0
    data_dir = Path(args.data_dir).resolve() if args.data_dir else None
    kafka = LocalKafka(port=args.port, workdir=data_dir, keep_data=data_dir is not None)
    reused = kafka.formatted
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
        "keep_data": kafka.keep_data,
        "version": KAFKA_VERSION,
    }
    path = state_file(args.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(state))
    name = f" --name {args.name}" if args.name else ""
    storage = f"reused the storage in {kafka.workdir}" if reused else f"data in {kafka.workdir}"
    print(kafka.bootstrap_servers)
    print(
        f"Kafka {KAFKA_VERSION} is running (pid {kafka.pid}); {storage}; "
        f"log: {kafka.log_file}\n"
        f"  export KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}\n"
        f"  stop it with: batch-runner kafka stop{name}",
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
    from producer.topics import admin_client, create_topics, service_topics  # noqa: PLC0415

    bootstrap = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        state = read_state(args.name)
        bootstrap = state["bootstrap_servers"] if state else None
    if not bootstrap:
        print("error: no cluster: set KAFKA_BOOTSTRAP_SERVERS or start one", file=sys.stderr)
        return 2
    names = TopicNames(args.requests_topic, args.results_topic, args.dlq_topic, args.status_topic)
    outcome = create_topics(admin_client(bootstrap), service_topics(names, args.partitions))
    for name in outcome.created:
        print(f"created {name}")
    for name in outcome.existed:
        print(f"exists  {name}")
    for name, why in outcome.failed.items():
        print(f"error: {name}: {why}", file=sys.stderr)
    return 1 if outcome.failed else 0


def _stop(args: argparse.Namespace) -> int:
    path = state_file(args.name)
    state = _load(path)
    if state is None:
        print(f"no local broker is recorded as running{_legacy_hint()}", file=sys.stderr)
        return 0
    stop_process_group(int(state["pid"]))
    if not state.get("keep_data"):
        shutil.rmtree(state["workdir"], ignore_errors=True)
    path.unlink(missing_ok=True)
    kept = f"; its data stays in {state['workdir']}" if state.get("keep_data") else ""
    print(f"stopped the broker at {state['bootstrap_servers']}{kept}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    state = read_state(args.name)
    if state is None:
        print(f"not running{_legacy_hint()}", file=sys.stderr)
        return 1
    try:
        wait_until_ready(state["bootstrap_servers"], timeout_s=5)
    except TimeoutError:
        print(f"process {state['pid']} is alive but the broker does not answer", file=sys.stderr)
        return 1
    print(state["bootstrap_servers"])
    return 0


def _list(_: argparse.Namespace) -> int:
    mine = state_file().stem
    for path in sorted(state_root().glob("*.json")):
        state = _load(path)
        if state is None:
            continue
        alive = "running" if pid_alive(int(state["pid"])) else "gone"
        marker = " (this checkout)" if path.stem == mine else ""
        print(f"{path.stem}\t{state['bootstrap_servers']}\t{alive}\t{state['workdir']}{marker}")
    return 0


def _run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    data_dir = Path(args.data_dir).resolve() if args.data_dir else None
    try:
        with LocalKafka(port=args.port, workdir=data_dir, keep_data=data_dir is not None) as kafka:
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
    _name_argument(start)
    _broker_arguments(start)
    start.set_defaults(handler=_start)
    run = actions.add_parser("run", help="run in the foreground until Ctrl-C")
    _broker_arguments(run)
    run.set_defaults(handler=_run)
    actions.add_parser(
        "fetch",
        help="download the broker jars into the cache (once) and print their directory",
    ).set_defaults(handler=_fetch)
    topics = actions.add_parser(
        "create-topics",
        help="create the service's topics (requests, results and the compacted status topic "
        "partitioned alike, plus the DLQ)",
    )
    topics.add_argument(
        "--bootstrap-servers", help="default: KAFKA_BOOTSTRAP_SERVERS or the local broker"
    )
    _name_argument(topics)
    topics.add_argument(
        "--partitions", type=int, default=4, help="for requests, results and status (4)"
    )
    topics.add_argument("--requests-topic", default=REQUESTS_TOPIC)
    topics.add_argument("--results-topic", default=RESULTS_TOPIC)
    topics.add_argument("--dlq-topic", default=DLQ_TOPIC)
    topics.add_argument("--status-topic", default=STATUS_TOPIC)
    topics.set_defaults(handler=_create_topics)
    stop = actions.add_parser("stop", help="stop the background broker")
    _name_argument(stop)
    stop.set_defaults(handler=_stop)
    status = actions.add_parser("status", help="print the address if running")
    _name_argument(status)
    status.set_defaults(handler=_status)
    actions.add_parser(
        "list", help="the brokers recorded for this user: name, address, state, directory"
    ).set_defaults(handler=_list)


def _name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        help="which background broker (default: this checkout's, "
        f"{default_name()}); state in {state_root()}",
    )


def _broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="listener port (default: free)")
    parser.add_argument(
        "--data-dir",
        help="keep the broker's storage here (kept on stop; storage formatted by an earlier "
        "start is reused, on the same ports). Default: a temporary directory, removed on stop",
    )
