"""``batch-runner wait | cancel``, and ``status``/``collect`` from a batch's status record.

Exit codes of ``wait``: 0 completed; 1 completed with errors, or failed (a request message
of the batch was dead-lettered); 3 cancelled or
expired; 4 Kafka unreachable or the status topic missing; 5 no final state within
``--timeout``. ``cancel``: 0 the cancel is written (the batch's state then goes
``cancelling`` → ``cancelled``); 1 the batch is already final; 4 as above.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from consumer.kafka_config import kafka_options
from producer.jobs import cancel_batch, read_results_range, read_status
from schemas import RESULTS_TOPIC, STATUS_TOPIC, BatchStatus
from schemas.errors import BadInputError, BatchRunnerError, ConfigError, KafkaUnavailableError

if TYPE_CHECKING:
    import argparse

    from producer.results import BatchState

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]  # noqa: SLF001

EXIT_COMPLETED = 0
EXIT_WITH_ERRORS = 1
EXIT_CANCELLED = 3
EXIT_UNREACHABLE = 4
EXIT_TIMEOUT = 5
_WAIT_EXITS = {
    "completed": EXIT_COMPLETED,
    "completed_with_errors": EXIT_WITH_ERRORS,
    "failed": EXIT_WITH_ERRORS,
    "cancelled": EXIT_CANCELLED,
    "expired": EXIT_CANCELLED,
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Turn ``90s``, ``30m``, ``24h``, ``2d`` (or plain seconds) into seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise BadInputError(f"duration {text!r}: use a positive number with s, m, h or d (24h)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--bootstrap-servers`` and the repeatable ``-X KEY=VALUE`` librdkafka option."""
    parser.add_argument("--bootstrap-servers", help="default: KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument(
        "-X",
        dest="kafka_option",
        action="append",
        metavar="KEY=VALUE",
        help="librdkafka option (like KAFKA_* env vars), repeatable",
    )


def bootstrap_of(args: argparse.Namespace) -> str:
    """Return the cluster ``--bootstrap-servers`` or ``KAFKA_BOOTSTRAP_SERVERS`` names."""
    value = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not value:
        raise ConfigError(
            "no Kafka cluster: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap-servers"
        )
    return str(value)


def _options(args: argparse.Namespace) -> dict[str, str]:
    return kafka_options(os.environ, args.kafka_option or ())


def status_report(status: BatchStatus) -> dict[str, Any]:
    """Return the fields ``status --json`` prints for a batch with a status record."""
    report: dict[str, Any] = msgspec.structs.asdict(status)
    report.pop("schema", None)
    report.pop("done", None)
    report["pending"] = status.total - status.ok - status.errors
    report["complete"] = status.final
    return report


def print_status(status: BatchStatus) -> None:
    """Print a batch's status record for a person."""
    print(f"batch {status.batch_id}: {status.state}")
    attempt = f" (attempt {status.attempt})" if status.attempt > 1 else ""
    print(f"  submitted {status.total} items in {status.chunks} chunks{attempt}")
    pending = status.total - status.ok - status.errors
    print(f"  ok {status.ok}, errors {status.errors}, pending {pending}")
    if status.cancelled or status.expired:
        print(f"  of the errors: cancelled {status.cancelled}, expired {status.expired}")
    print(f"  chunks done {status.chunks_done} of {status.chunks}")
    if status.results_partition is not None:
        print(
            f"  results on partition {status.results_partition}, offsets "
            f"{status.first_offset}-{status.last_offset}"
        )


def status_from_record(args: argparse.Namespace) -> int | None:
    """Answer ``status`` from the batch's status record; None when it has none."""
    status, exists = read_status(
        bootstrap_of(args), args.status_topic, args.batch_id, kafka_options=_options(args)
    )
    if status is None:
        where = "no status record" if exists else f"no status topic {args.status_topic}"
        print(f"note: {where} for {args.batch_id}: scanning the topics", file=sys.stderr)
        return None
    if args.json:
        print(orjson.dumps(status_report(status)).decode())
    else:
        print_status(status)
    return 0


def collect_from_record(args: argparse.Namespace) -> BatchState | None:
    """Read a batch's results from the range its status records; None without a record.

    With ``--wait``, waits for the final status first.
    """
    bootstrap, options = bootstrap_of(args), _options(args)
    status, exists = read_status(
        bootstrap,
        args.status_topic,
        args.batch_id,
        kafka_options=options,
        timeout_s=max(15.0, args.wait),
        until=(lambda s: s.final) if args.wait > 0 else None,
    )
    if status is None:
        where = "no status record" if exists else f"no status topic {args.status_topic}"
        print(f"note: {where} for {args.batch_id}: scanning {args.topic}", file=sys.stderr)
        return None
    return read_results_range(bootstrap, args.topic, status, kafka_options=options)


def _wait(args: argparse.Namespace) -> int:
    try:
        timeout = parse_duration(args.timeout) if args.timeout else 365 * 86400.0
        status, exists = read_status(
            bootstrap_of(args),
            args.status_topic,
            args.batch_id,
            kafka_options=_options(args),
            timeout_s=timeout,
            until=lambda s: s.final,
        )
    except KafkaUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BatchRunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not exists:
        print(f"error: no status topic {args.status_topic}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if status is None or not status.final:
        state = "no status record" if status is None else status.state
        print(f"error: {args.batch_id}: not final within {args.timeout} ({state})", file=sys.stderr)
        return EXIT_TIMEOUT
    print(orjson.dumps(status_report(status)).decode())
    return _WAIT_EXITS[status.state]


def _cancel(args: argparse.Namespace) -> int:
    try:
        bootstrap, options = bootstrap_of(args), _options(args)
        status, _ = read_status(bootstrap, args.status_topic, args.batch_id, kafka_options=options)
        if status is not None and status.final:
            print(f"error: {args.batch_id} is already {status.state}", file=sys.stderr)
            return 1
        cancel_batch(bootstrap, args.status_topic, args.batch_id, kafka_options=options)
    except BatchRunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if status is None:
        print(f"note: no status record for {args.batch_id} yet: cancelled anyway", file=sys.stderr)
    print(f"cancel of {args.batch_id} written")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", help="the batch")
    add_kafka_arguments(parser)
    parser.add_argument("--status-topic", default=STATUS_TOPIC)
    parser.add_argument("--results-topic", default=RESULTS_TOPIC)


def register_wait(subparsers: Subparsers) -> None:
    """Add ``wait``."""
    parser = subparsers.add_parser(
        "wait",
        help="wait for a batch's completion event",
        description="Block until the batch's status reaches a final state; print it as "
        "JSON. Exit 0 completed, 1 completed with errors, 3 cancelled or expired, 4 Kafka "
        "unreachable or no status topic, 5 not final within --timeout.",
    )
    _common(parser)
    parser.add_argument("--timeout", help="give up after this long (90s, 30m, 24h)")
    parser.set_defaults(handler=_wait)


def register_cancel(subparsers: Subparsers) -> None:
    """Add ``cancel``."""
    parser = subparsers.add_parser(
        "cancel",
        help="cancel a batch",
        description="Write a cancel record for the batch: no new inference call for it "
        "within seconds; its remaining items get error results of kind cancelled and its "
        "state goes cancelling, then cancelled. Exit 0 written, 1 already final, 4 Kafka "
        "unreachable or no status topic.",
    )
    _common(parser)
    parser.set_defaults(handler=_cancel)
