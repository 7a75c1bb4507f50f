"""``batch-runner retry | verify``: resubmit a batch's failed items; check each index's outcome.

``retry BATCH`` reads the batch's results (the range its status record names), takes the
indexes whose latest result is an error, reads those items back from the request messages
the chunk summaries name (``source_partition``/``source_offset``), and submits them as
attempt ``n + 1`` of the same batch, each with its original index. ``collect`` then gives,
per index, the latest attempt's result. Exit 0 resubmitted (or nothing to retry), 1 the
batch is not final yet or its requests cannot be read back, 4 Kafka unreachable.

``verify BATCH`` checks that every index ``0..total-1`` has exactly one final outcome
(the latest attempt's: ok, error, cancelled, expired) and that the counts agree with the
status record; prints the counts as JSON; exit 0 clean, 1 not.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from consumer.kafka_config import kafka_options
from producer.jobs import read_results_range, read_status
from producer.jobs_cli import add_kafka_arguments, bootstrap_of
from producer.submit import plan_chunks, write_submitted
from schemas import (
    BATCH_STATUS_V1,
    REQUESTS_TOPIC,
    RESULTS_TOPIC,
    STATUS_TOPIC,
    BatchRequest,
    BatchStatus,
    InvalidMessage,
    decode_batch_request,
    encode_batch_request,
)
from schemas.errors import BatchRunnerError, ConfigError, IncompleteError, KafkaUnavailableError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

    from confluent_kafka import Message

    from producer.results import BatchState

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]  # noqa: SLF001

CHUNK_SIZE = 500


def failed_indexes(state: BatchState) -> list[int]:
    """Return the indexes whose latest result is an error, in order."""
    return sorted(i for i, r in state.results.items() if r.status == "error")


def _read_requests(
    bootstrap: str,
    topic: str,
    sources: set[tuple[int, int]],
    options: Mapping[str, str] | None,
) -> dict[tuple[int, int], BatchRequest]:
    """Read the request messages at ``sources`` (partition, offset) back."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"batch-runner-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            **(options or {}),
        }
    )
    found: dict[tuple[int, int], BatchRequest] = {}
    try:
        for partition, offset in sorted(sources):
            consumer.assign([TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + 15
            while (partition, offset) not in found and time.monotonic() < deadline:
                msg: Message | None = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                if msg.offset() != offset:
                    break  # compacted or deleted: the message is gone
                try:
                    found[partition, offset] = decode_batch_request(msg.value() or b"")
                except InvalidMessage:
                    break
    finally:
        consumer.close()
    return found


def _items_for(
    failed: list[int],
    state: BatchState,
    requests: dict[tuple[int, int], BatchRequest],
) -> tuple[list[bytes], BatchRequest]:
    """Return the failed items' JSON texts (in ``failed``'s order) and one source request."""
    items: list[bytes] = []
    source: BatchRequest | None = None
    for index in failed:
        result = state.results[index]
        summary = state.attempt_summaries.get((result.attempt or 1, result.chunk))
        request = None
        if summary is not None and summary.source_partition is not None:
            request = requests.get((summary.source_partition, summary.source_offset or 0))
        if request is None:
            raise IncompleteError(f"item {index}: its request message cannot be read back")
        position = (
            request.indexes.index(index) if request.indexes is not None else index - request.start
        )
        items.append(bytes(request.items[position]))
        source = source or request
    if source is None:
        raise IncompleteError("no request to read back")
    return items, source


def _read_batch(  # noqa: PLR0913 - where, which batch, and what the caller needs
    bootstrap: str,
    names: tuple[str, str, str],
    batch_id: str,
    options: Mapping[str, str] | None,
    need: str,
    *,
    final: bool = False,
) -> tuple[BatchStatus, BatchState]:
    """Return the batch's status and the results its range names (refuse when none)."""
    _, results_topic, status_topic = names
    status, exists = read_status(bootstrap, status_topic, batch_id, kafka_options=options)
    if status is None:
        where = "no status record" if exists else f"no status topic {status_topic}"
        raise IncompleteError(f"{batch_id}: {where}: {need}")
    if final and not status.final:
        raise IncompleteError(f"{batch_id} is {status.state}: retry once it is final")
    return status, read_results_range(bootstrap, results_topic, status, kafka_options=options)


def retry_batch(
    bootstrap: str,
    names: tuple[str, str, str],
    batch_id: str,
    *,
    options: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Resubmit the batch's failed items as a new attempt; return (attempt, items)."""
    requests_topic = names[0]
    status, state = _read_batch(
        bootstrap, names, batch_id, options, "retry needs the batch's status", final=True
    )
    failed = failed_indexes(state)
    if not failed:
        return status.attempt, 0
    sources = {
        (s.source_partition, s.source_offset or 0)
        for s in state.attempt_summaries.values()
        if s.source_partition is not None and s.error
    }
    requests = _read_requests(bootstrap, requests_topic, sources, options)
    items, source = _items_for(failed, state, requests)
    attempt = status.attempt + 1
    _submit_attempt(
        bootstrap,
        names=names,
        status=status,
        attempt=attempt,
        failed=failed,
        items=items,
        source=source,
        options=options,
    )
    return attempt, len(failed)


def _submit_attempt(  # noqa: PLR0913 - the batch, the attempt and its items
    bootstrap: str,
    *,
    names: tuple[str, str, str],
    status: BatchStatus,
    attempt: int,
    failed: list[int],
    items: list[bytes],
    source: BatchRequest,
    options: Mapping[str, str] | None,
) -> None:
    """Write the attempt's ``submitted`` status, then its chunks, to the batch's partition."""
    requests_topic, _, status_topic = names
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, **(options or {})}
    )
    now = time.time()
    submitted = BatchStatus(
        schema=BATCH_STATUS_V1,
        batch_id=status.batch_id,
        state="submitted",
        total=status.total,
        attempt=attempt,
        chunks=1,
        ok=status.ok,
        errors=status.errors - len(failed),
        submitted_at=status.submitted_at,
        updated_at=now,
        results_partition=status.results_partition,
        first_offset=status.first_offset,
        last_offset=status.last_offset,
    )
    plan = plan_chunks(items, chunk_size=CHUNK_SIZE, max_message_bytes=1_000_000)
    submitted = msgspec.structs.replace(submitted, chunks=len(plan))
    partition = write_submitted(producer, status_topic, requests_topic, submitted, 15)
    if partition < 0:
        msg = f"{status_topic} is not co-partitioned with {requests_topic}: cannot retry"
        raise ConfigError(msg)
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err.str())

    for chunk in plan:
        value = encode_batch_request(
            batch_id=status.batch_id,
            items=chunk.items,
            start=chunk.start,
            total=len(items),
            chunk=chunk.number,
            chunks=len(plan),
            target=source.target,
            items_per_request=source.items_per_request,
            metadata=source.metadata,
            submitted_at=now,
            attempt=attempt,
            indexes=failed[chunk.start : chunk.start + len(chunk.items)],
        )
        producer.produce(
            requests_topic,
            value=value,
            key=status.batch_id,
            partition=partition,
            on_delivery=delivered,
        )
    if producer.flush(30) or errors:
        reason = errors[0] if errors else "not all acknowledged"
        raise IncompleteError(f"{status.batch_id}: attempt {attempt} not delivered: {reason}")


def verify_batch(
    bootstrap: str,
    names: tuple[str, str, str],
    batch_id: str,
    *,
    options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return the outcome counts of every index, the missing ones, and whether all is clean."""
    status, state = _read_batch(bootstrap, names, batch_id, options, "nothing to verify against")
    counts = {"ok": 0, "error": 0, "cancelled": 0, "expired": 0}
    for result in state.results.values():
        kind = result.error.kind if result.error is not None else None
        counts[kind if kind in {"cancelled", "expired"} else result.status] += 1
    missing = [i for i in range(status.total) if i not in state.results]
    outside = [i for i in state.results if i >= status.total]
    errors = counts["error"] + counts["cancelled"] + counts["expired"]
    agrees = (status.ok, status.errors) == (counts["ok"], errors)
    return {
        "batch_id": batch_id,
        "state": status.state,
        "attempt": status.attempt,
        "total": status.total,
        **counts,
        "missing": len(missing),
        "missing_indexes": missing[:20],
        "outside": len(outside),
        "status_agrees": agrees,
        "clean": status.final and not missing and not outside and agrees,
    }


def _args(args: argparse.Namespace) -> tuple[str, tuple[str, str, str], dict[str, str]]:
    names = (args.requests_topic, args.results_topic, args.status_topic)
    return bootstrap_of(args), names, kafka_options(os.environ, args.kafka_option or ())


def _retry(args: argparse.Namespace) -> int:
    try:
        bootstrap, names, options = _args(args)
        attempt, count = retry_batch(bootstrap, names, args.batch_id, options=options)
    except BatchRunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if count == 0:
        print(f"{args.batch_id}: no failed items to retry (attempt {attempt})", file=sys.stderr)
    else:
        print(f"{args.batch_id}: attempt {attempt} resubmits {count} failed items", file=sys.stderr)
    print(orjson.dumps({"batch_id": args.batch_id, "attempt": attempt, "items": count}).decode())
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        bootstrap, names, options = _args(args)
        report = verify_batch(bootstrap, names, args.batch_id, options=options)
    except KafkaUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BatchRunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(orjson.dumps(report).decode())
    return 0 if report["clean"] else 1


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", help="the batch")
    add_kafka_arguments(parser)
    parser.add_argument("--requests-topic", default=REQUESTS_TOPIC)
    parser.add_argument("--results-topic", default=RESULTS_TOPIC)
    parser.add_argument("--status-topic", default=STATUS_TOPIC)


def register_retry(subparsers: Subparsers) -> None:
    """Add ``retry``."""
    parser = subparsers.add_parser(
        "retry",
        help="resubmit a finished batch's failed items as a new attempt",
        description="Resubmit exactly the items whose latest result is an error, with their "
        "original indexes, as the next attempt of the same batch. Exit 0 resubmitted (or "
        "nothing failed), 1 not final yet or requests gone, 4 Kafka unreachable.",
    )
    _common(parser)
    parser.set_defaults(handler=_retry)


def register_verify(subparsers: Subparsers) -> None:
    """Add ``verify``."""
    parser = subparsers.add_parser(
        "verify",
        help="check every index of a batch has exactly one final outcome",
        description="Print the outcome counts (ok, error, cancelled, expired) of the latest "
        "attempt per index, and the missing indexes. Exit 0 clean (final, every index, "
        "counts as the status says), 1 otherwise.",
    )
    _common(parser)
    parser.set_defaults(handler=_verify)
