"""``batch-runner submit | tail | collect | status``: the user's side of the service.

Exit codes (all four commands): 0 success; 1 not everything was delivered (submit) or
the batch is incomplete (collect, tail --until-complete on timeout); 2 bad input or
usage; 4 Kafka unreachable or a topic missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.kafka_config import kafka_options
from producer.inputs import FORMATS, read_items
from producer.jobs_cli import (
    add_kafka_arguments,
    bootstrap_of,
    collect_from_record,
    parse_duration,
    status_from_record,
)
from producer.openai_batch import output_line, read_batch_file
from producer.results import (
    BatchState,
    ReaderError,
    TopicReader,
    decode_record,
    parse_start,
    read_batch,
)
from producer.submit import submit
from schemas import (
    DLQ_REASON,
    DLQ_TOPIC,
    REQUESTS_TOPIC,
    RESULTS_TOPIC,
    STATUS_TOPIC,
    ChunkSummary,
    InvalidMessage,
    Result,
    decode_batch_request,
    parse_dead_letter_headers,
)
from schemas.errors import (
    EXIT_FAILED,
    EXIT_OK,
    BadInputError,
    BatchRunnerError,
    exit_code_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from confluent_kafka import Message

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]  # noqa: SLF001


OPENAI_BATCH = "openai-batch"


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _kafka_options(args: argparse.Namespace) -> dict[str, str]:
    return kafka_options(os.environ, args.kafka_option or ())


def _metadata(pairs: Sequence[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInputError(f"--metadata {pair!r}: expected key=value")
        out[key] = value
    return out


def _guard(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the commands' expected errors into a message and an exit code."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except BatchRunnerError as exc:  # the tree in schemas.errors: each knows its code
            _err(str(exc))
            return exc.exit_code
        except KeyboardInterrupt as exc:
            return exit_code_for(exc)

    return wrapped


# --- submit -----------------------------------------------------------------------------


def _batch_file_items(args: argparse.Namespace) -> tuple[list[bytes], list[str]]:
    """Read an OpenAI Batch file; say what is wrong with each bad line (on stderr).

    Bad lines stop the submit (exit 2) unless ``--skip-invalid`` submits the good ones.
    """
    found = read_batch_file(args.input)
    for problem in found.problems:
        _err(problem)
    bad = len(found.problems)
    if bad and not args.skip_invalid:
        raise BadInputError(
            f"{bad} invalid lines in {args.input} (--skip-invalid submits the other "
            f"{len(found.items)})",
        )
    if not found.items:
        raise BadInputError(f"{args.input}: no valid request lines")
    if bad:
        _err(f"skipped {bad} invalid lines; submitting {len(found.items)}")
    return found.items, found.problems


def _submit(args: argparse.Namespace) -> int:  # noqa: C901 - progress display, then submit
    problems: list[str] = []
    if args.format == OPENAI_BATCH:
        items, problems = _batch_file_items(args)
    else:
        items = read_items(args.input, args.format)
    show = not args.quiet
    progress: Callable[[int, int], None] | None = None
    bar: Any = None
    if show and sys.stderr.isatty():
        from rich.progress import Progress  # noqa: PLC0415 - only on a terminal

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("submitting", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

    elif show:
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] >= 1.0:
                last[0] = now
                print(f"delivered {done}/{total} chunks", file=sys.stderr)

    try:
        report = submit(
            items,
            bootstrap_servers=bootstrap_of(args),
            topic=args.topic,
            batch_id=args.batch_id,
            chunk_size=args.chunk_size,
            max_message_bytes=args.max_message_bytes,
            target=args.target,
            items_per_request=args.items_per_request,
            priority=args.priority,
            metadata=_metadata(args.metadata),
            create_topic=args.create_topic,
            partitions=args.partitions,
            timeout_s=args.timeout,
            kafka_options=_kafka_options(args),
            on_progress=progress,
            status_topic=args.status_topic,
            deadline=time.time() + parse_duration(args.deadline) if args.deadline else None,
        )
    finally:
        if bar is not None:
            bar.stop()
    if args.json:
        line = {
            "batch_id": report.batch_id,
            "items": report.items,
            "chunks": report.chunks,
            "topic": report.topic,
            "bytes": report.bytes,
        }
        if args.format == OPENAI_BATCH:
            line["invalid_lines"] = problems
        print(orjson.dumps(line).decode())
    else:
        print(report.batch_id)
        if show:
            print(
                f"submitted {report.items} items in {report.chunks} chunks "
                f"({report.bytes} bytes) to {report.topic} in {report.seconds:.2f}s",
                file=sys.stderr,
            )
    return EXIT_OK


# --- tail -------------------------------------------------------------------------------


def _pretty(record: Result | ChunkSummary) -> str:
    if isinstance(record, ChunkSummary):
        return (
            f"{record.batch_id} chunk {record.chunk + 1}/{record.chunks} done: "
            f"{record.ok} ok, {record.error} errors"
        )
    item = f"#{record.index}" if record.custom_id is None else f"#{record.index} {record.custom_id}"
    if record.status == "ok":
        answer = orjson.dumps(record.prediction).decode()
        queued = "" if record.queue_ms is None else f", queued {record.queue_ms:.1f} ms"
        tokens = "" if record.usage is None else f", {record.usage.total_tokens} tokens"
        return f"{record.batch_id} {item} ok {answer} ({record.latency_ms:.1f} ms{queued}{tokens})"
    error = record.error
    detail = f"{error.kind}: {error.message}" if error else "error"
    return f"{record.batch_id} {item} ERROR {detail} (attempts {record.attempts})"


def _tail(args: argparse.Namespace) -> int:
    batch_filter = args.until_complete or args.batch_id
    start = parse_start(args.from_ or ("beginning" if args.until_complete else "now"))
    reader = TopicReader(bootstrap_of(args), args.topic, start, kafka_options=_kafka_options(args))
    state = BatchState(args.until_complete) if args.until_complete else None
    deadline = time.monotonic() + args.timeout if args.timeout else None
    as_json = args.json or not sys.stdout.isatty()
    try:
        while True:
            for msg in reader.poll():
                record = decode_record(msg)
                if record is None or (batch_filter and record.batch_id != batch_filter):
                    continue
                if state is not None:
                    state.add(record)
                if args.status and (not isinstance(record, Result) or record.status != args.status):
                    continue
                if args.summaries or isinstance(record, Result):
                    line = (msg.value() or b"").decode() if as_json else _pretty(record)
                    print(line, flush=True)
            if state is not None and state.complete:
                print(orjson.dumps(state.summary()).decode(), file=sys.stderr)
                return EXIT_OK if state.errors == 0 or not args.fail_on_error else EXIT_FAILED
            if deadline is not None and time.monotonic() >= deadline:
                if state is not None:
                    print(orjson.dumps(state.summary()).decode(), file=sys.stderr)
                    _err(f"batch {state.batch_id} incomplete after {args.timeout:g}s")
                    return EXIT_FAILED
                return EXIT_OK
    finally:
        reader.close()


# --- collect ----------------------------------------------------------------------------


def _joined(item: bytes, result: Result) -> dict[str, Any]:
    value = orjson.loads(item)
    out: dict[str, Any] = dict(value) if isinstance(value, dict) else {"input": value}
    out.update(_result_line(result))
    return out


def _result_line(result: Result) -> dict[str, Any]:
    line: dict[str, Any] = {"index": result.index, "status": result.status}
    if result.status == "ok":
        line["prediction"] = result.prediction
    elif result.error is not None:
        line["error"] = {
            "kind": result.error.kind,
            "message": result.error.message,
            "http_status": result.error.http_status,
        }
    line["attempts"] = result.attempts
    line["latency_ms"] = result.latency_ms
    if result.queue_ms is not None:
        line["queue_ms"] = result.queue_ms
    return line


def _collect_read(args: argparse.Namespace) -> BatchState:
    """Read the batch's results: from its status record's range, or by scanning the topic."""
    state = None if args.scan else collect_from_record(args)
    if state is None:
        state = read_batch(
            bootstrap_of(args),
            args.topic,
            args.batch_id,
            wait_s=args.wait,
            kafka_options=_kafka_options(args),
        )
    return state


def _collect(args: argparse.Namespace) -> int:
    if args.join_input and args.format == OPENAI_BATCH:
        raise BadInputError("--join-input does not apply to --format openai-batch")
    inputs = read_items(args.join_input) if args.join_input else None
    state = _collect_read(args)
    if not state.results:
        _err(f"no results for batch {args.batch_id!r} on {args.topic}")
        return EXIT_FAILED
    total = state.total or (max(state.results) + 1)
    if inputs is not None and len(inputs) != total:
        raise BadInputError(f"--join-input has {len(inputs)} items but the batch has {total}")
    out = sys.stdout.buffer if args.output in {None, "-"} else open(args.output, "wb")  # noqa: SIM115, PTH123
    missing = 0
    try:
        for index in range(total):
            result = state.results.get(index)
            if result is None:
                missing += 1
                continue
            if args.format == OPENAI_BATCH:
                line = output_line(result)
            elif inputs is not None:
                line = _joined(inputs[index], result)
            else:
                line = _result_line(result)
            out.write(orjson.dumps(line) + b"\n")
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    summary = state.summary() | {"missing": missing}
    print(orjson.dumps(summary).decode(), file=sys.stderr)
    if missing:
        _err(f"batch {args.batch_id}: {missing} of {total} items have no result yet")
        return EXIT_FAILED
    return EXIT_OK


# --- status -----------------------------------------------------------------------------


def _submitted(bootstrap: str, topic: str, batch_id: str, options: dict[str, str]) -> int | None:
    """Return the batch's item count from its request chunks, or None if none are found."""
    key = batch_id.encode()
    reader = TopicReader(bootstrap, topic, OFFSET_BEGINNING, kafka_options=options)
    try:
        targets = reader.high_watermarks()
        if not any(targets.values()):
            return None
        seen = dict.fromkeys(reader.partitions, -1)
        total: int | None = None
        while not reader.at_end() and not all(seen[p] + 1 >= targets[p] for p in seen):
            for msg in reader.poll():
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None:
                    seen[partition] = offset
                if msg.key() == key:
                    try:
                        total = decode_batch_request(msg.value() or b"").total
                    except InvalidMessage:
                        continue
        return total
    finally:
        reader.close()


def _header_pairs(msg: Message) -> list[tuple[str, bytes | None]]:
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]


def _dead_letters(
    bootstrap: str, topic: str, batch_id: str, options: dict[str, str]
) -> list[dict[str, str]] | None:
    """Return the dead-letter headers of each of the batch's dead letters (None: no topic).

    A dead letter keeps the original key, the batch id: those are the batch's.
    """
    key = batch_id.encode()
    try:
        reader = TopicReader(bootstrap, topic, OFFSET_BEGINNING, kafka_options=options)
    except ReaderError:
        return None
    found: list[dict[str, str]] = []
    try:
        targets = reader.high_watermarks()
        seen = dict.fromkeys(reader.partitions, -1)
        while any(targets.values()) and not reader.at_end():
            for msg in reader.poll():
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None:
                    seen[partition] = offset
                if msg.key() == key:
                    found.append(parse_dead_letter_headers(_header_pairs(msg)))
            if all(seen[p] + 1 >= targets[p] for p in seen):
                break
        return found
    finally:
        reader.close()


def _group(admin: AdminClient, group: str) -> tuple[str, int]:
    """Return the group's state (lower case; ``dead`` when the cluster does not know it).

    And its member count. A group the coordinator cannot describe right now (it is still
    loading, say) is ``unknown``.
    """
    for _ in range(10):
        try:
            found = admin.describe_consumer_groups([group])[group].result(timeout=15)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.retriable():
                time.sleep(0.5)
                continue
            return "unknown", 0
        return found.state.name.lower(), len(found.members)
    return "unknown", 0


def _lag(
    bootstrap: str, group: str, topic: str, options: dict[str, str]
) -> list[dict[str, int | None]]:
    """Return each partition's committed offset, end offset and lag for ``group``.

    The committed offsets are read by a consumer of the group that never joins it (an
    OffsetFetch), not by ``AdminClient.list_consumer_group_offsets``: librdkafka's admin
    client can crash the process when that request meets a coordinator that is moving or
    still loading, as just after a broker restart.
    """
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            **options,
        }
    )
    try:
        metadata = probe.list_topics(topic, timeout=15).topics.get(topic)
        partitions = sorted(metadata.partitions) if metadata and metadata.partitions else []
        try:
            answer = probe.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        except KafkaException as exc:
            raise ReaderError(f"cannot read the offsets of group {group!r}: {exc}") from None
        committed = {
            tp.partition: tp.offset for tp in answer if tp.error is None and tp.offset >= 0
        }
        rows: list[dict[str, int | None]] = []
        for p in partitions:
            low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            position = committed.get(p)
            lag = high - (position if position is not None else low)
            rows.append({"partition": p, "committed": position, "end": high, "lag": lag})
        return rows
    finally:
        probe.close()


def _group_note(group: str, state: str, members: int, topic: str, committed: bool) -> str | None:  # noqa: FBT001
    """Say why the group's offsets tell nothing, or None when they do."""
    if state == "dead" and not committed:
        return (
            f"group {group!r} is unknown to the cluster: no consumer has joined it and it has "
            f"committed nothing (is --group the consumers' group id, BATCH_RUNNER_GROUP_ID?)"
        )
    if not committed:
        return f"group {group!r} ({state}, {members} members) has committed nothing on {topic} yet"
    return None


def _status(args: argparse.Namespace) -> int:
    answered = None if args.scan else status_from_record(args)
    if answered is not None:
        return answered
    bootstrap = bootstrap_of(args)
    options = _kafka_options(args)
    total = _submitted(bootstrap, args.requests_topic, args.batch_id, options)
    state = read_batch(bootstrap, args.results_topic, args.batch_id, kafka_options=options)
    total = total if total is not None else state.total
    admin = AdminClient({"bootstrap.servers": bootstrap, **options})
    group_state, members = _group(admin, args.group)
    lag = _lag(bootstrap, args.group, args.requests_topic, options)
    note = _group_note(
        args.group,
        group_state,
        members,
        args.requests_topic,
        any(row["committed"] is not None for row in lag),
    )
    dead = _dead_letters(bootstrap, args.dlq_topic, args.batch_id, options)
    done = len(state.results)
    report = {
        "batch_id": args.batch_id,
        "submitted": total,
        "ok": state.ok,
        "errors": state.errors,
        "pending": None if total is None else total - done,
        **state.tokens(),
        "complete": total is not None and done >= total,
        "dead_letters": len(dead) if dead is not None else None,
        "dead_letter_reasons": sorted({d.get(DLQ_REASON, "") for d in dead or []}),
        "group": args.group,
        "group_state": group_state,
        "group_members": members,
        "group_note": note,
        "lag": lag,
    }
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        _print_status(args, report)
    return EXIT_OK if total is not None else EXIT_FAILED


def _print_status(args: argparse.Namespace, report: dict[str, Any]) -> None:
    total, dead = report["submitted"], report["dead_letters"]
    state_word = "complete" if report["complete"] else "in progress"
    if total is None:
        state_word = "not found among valid requests" if dead else "not found"
    print(f"batch {args.batch_id}: {state_word}")
    print(f"  submitted {total if total is not None else '?'} items")
    pending = report["pending"] if report["pending"] is not None else "?"
    print(f"  ok {report['ok']}, errors {report['errors']}, pending {pending}")
    if report["total_tokens"]:
        print(
            f"  tokens {report['total_tokens']} (prompt {report['prompt_tokens']}, "
            f"completion {report['completion_tokens']})",
        )
    if dead:
        print(f"  dead letters {dead} on {args.dlq_topic}: request messages of this batch were")
        print("    invalid; fix and re-submit them (README: Reprocessing dead letters). Reasons:")
        for reason in report["dead_letter_reasons"][:5]:
            print(f"    - {reason}")
    elif dead is None:
        print(f"  dead letters: topic {args.dlq_topic} not found")
    if report["group_note"]:
        print(f"  note: {report['group_note']}")
    print(
        f"  group {args.group} ({report['group_state']}, {report['group_members']} members) "
        f"lag on {args.requests_topic}:",
    )
    for row in report["lag"]:
        committed = row["committed"] if row["committed"] is not None else "none"
        print(
            f"    partition {row['partition']}: committed {committed}, "
            f"end {row['end']}, lag {row['lag']}",
        )


# --- parsers ----------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    add_kafka_arguments(parser)


def register_submit(subparsers: Subparsers) -> None:
    """Add ``submit``."""
    parser = subparsers.add_parser(
        "submit",
        help="submit a batch from a JSON array, JSONL or CSV file (or - for stdin)",
        description="Split the items into chunks that fit a Kafka message, publish them "
        "with an idempotent producer, and wait until every chunk is acknowledged. Prints "
        "the batch id on stdout. Exit 0: all delivered; 1: some chunks not delivered "
        "(re-run with the same --batch-id); 2: bad input; 4: Kafka unreachable or topic "
        "missing.",
    )
    parser.add_argument("input", help="file with the items, or - for stdin")
    parser.add_argument(
        "--format",
        choices=(*FORMATS, OPENAI_BATCH),
        help="default: from the file name; openai-batch: an OpenAI Batch input file (JSONL "
        "of custom_id, method, url, body), every line checked",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="openai-batch: submit the valid lines when some are invalid (each is reported)",
    )
    parser.add_argument("--batch-id", help="default: a new id")
    parser.add_argument("--topic", default=REQUESTS_TOPIC)
    parser.add_argument("--target", help="endpoint name configured on the consumer")
    parser.add_argument("--items-per-request", type=int, help="items per inference call")
    parser.add_argument(
        "--priority",
        type=int,
        help="1-100 (default 1): the batch's share of a busy consumer's calls, by weight",
    )
    parser.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="repeatable")
    parser.add_argument("--chunk-size", type=int, default=500, help="items per message (500)")
    parser.add_argument("--max-message-bytes", type=int, default=1_000_000)
    parser.add_argument("--create-topic", action="store_true", help="create the topic if missing")
    parser.add_argument("--partitions", type=int, default=4, help="for --create-topic (4)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (30)")
    parser.add_argument(
        "--deadline", help="items not sent to the model within this (90s, 30m, 24h) expire"
    )
    parser.add_argument("--status-topic", default=STATUS_TOPIC)
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the batch id")
    parser.add_argument("--json", action="store_true", help="print a JSON line")
    _common(parser)
    parser.set_defaults(handler=_guard(_submit))


def register_tail(subparsers: Subparsers) -> None:
    """Add ``tail``."""
    parser = subparsers.add_parser(
        "tail",
        help="follow the results topic (without joining a consumer group)",
    )
    parser.add_argument("--topic", default=RESULTS_TOPIC)
    parser.add_argument("--from", dest="from_", help="beginning, now (default) or an ISO time")
    parser.add_argument("--batch-id", help="only this batch")
    parser.add_argument("--status", choices=("ok", "error"), help="only these results")
    parser.add_argument("--summaries", action="store_true", help="show chunk summaries too")
    parser.add_argument("--json", action="store_true", help="JSON lines (default when piped)")
    parser.add_argument(
        "--until-complete",
        metavar="BATCH_ID",
        help="exit when every item of this batch has a result; print a summary",
    )
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    parser.add_argument("--fail-on-error", action="store_true", help="exit 1 if any item failed")
    _common(parser)
    parser.set_defaults(handler=_guard(_tail))


def register_collect(subparsers: Subparsers) -> None:
    """Add ``collect``."""
    parser = subparsers.add_parser(
        "collect",
        help="write one line per item of a batch, in input order, duplicates removed",
    )
    parser.add_argument("batch_id")
    parser.add_argument("-o", "--output", help="file (default stdout)")
    parser.add_argument("--join-input", metavar="FILE", help="merge each input item's fields")
    parser.add_argument(
        "--format",
        choices=("results", OPENAI_BATCH),
        default="results",
        help="results (default): index, status, prediction or error; openai-batch: OpenAI "
        "Batch output lines (id, custom_id, response, error)",
    )
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the rest")
    parser.add_argument("--topic", default=RESULTS_TOPIC)
    parser.add_argument("--status-topic", default=STATUS_TOPIC)
    parser.add_argument(
        "--scan", action="store_true", help="scan the results topic, ignoring the status record"
    )
    _common(parser)
    parser.set_defaults(handler=_guard(_collect))


def register_status(subparsers: Subparsers) -> None:
    """Add ``status``."""
    parser = subparsers.add_parser("status", help="counts of a batch and the group's lag")
    parser.add_argument("batch_id")
    parser.add_argument("--group", default="batch-runner", help="the consumers' group")
    parser.add_argument("--requests-topic", default=REQUESTS_TOPIC)
    parser.add_argument("--results-topic", default=RESULTS_TOPIC)
    parser.add_argument("--dlq-topic", default=DLQ_TOPIC, help="where invalid requests go")
    parser.add_argument("--status-topic", default=STATUS_TOPIC)
    parser.add_argument(
        "--scan",
        action="store_true",
        help="count from the topics (and show the group's lag and dead letters) instead of "
        "the batch's status record",
    )
    parser.add_argument("--json", action="store_true")
    _common(parser)
    parser.set_defaults(handler=_guard(_status))


def register(subparsers: Subparsers) -> None:
    """Add all four commands (for ``python -m producer``)."""
    register_submit(subparsers)
    register_tail(subparsers)
    register_collect(subparsers)
    register_status(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m producer COMMAND``."""
    parser = argparse.ArgumentParser(prog="python -m producer", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(subparsers)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
