"""Chaos scenario ``job-status``: batch statuses through SIGKILLs of their owners and rebalances.

Four partitions, two replicas; a backlog of batches placed round-robin on the partitions,
so most batches sit on a partition other than their status partition (as a client with
another partitioner would put them): their chunks are counted through progress records,
the others directly by their owner. Every 3-5 s a replica
gets SIGKILL and a new one starts (a new member: the group rebalances twice), until the
backlog is done or the storm ends. Chunks finished but not committed are redone by the
new owners; the batches' statuses must still end final with exact counts.

After the final read, the status topic is read from its beginning (the latest status per
batch) and compared with what was produced: ``status_wrong_counts`` (ok, errors or chunks
done differ from the batch's items and chunks), ``status_not_final`` and
``status_missing`` must be 0; ``duplicate_results`` shows that work was redone.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.kafka_io import Backlog
from bench.procs import inference_server
from bench.scenarios import Goal
from chaos.trial import Trial
from schemas import BatchStatus, InvalidMessage, decode_status_record

if TYPE_CHECKING:
    from collections.abc import Iterator

    from chaos.trial import Context


def latest_statuses(
    bootstrap: str, topic: str, partitions: int, forms: dict[str, int] | None = None
) -> dict[str, BatchStatus]:
    """Read ``topic`` from its beginning to its end; return the latest status per batch.

    ``forms`` counts the status records with done chunks by how they hold them: ``list``
    (``done`` only, as older replicas write), ``both``, ``ranges`` (``done_ranges`` only).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-status-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    found: dict[str, BatchStatus] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 60
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is not None or partition is None or offset is None:
                    continue
                positions[partition] = offset + 1
                try:
                    record = decode_status_record(msg.value() or b"")
                except InvalidMessage:
                    continue
                if isinstance(record, BatchStatus):
                    found[record.batch_id] = record
                    if forms is not None and record.chunks_done:
                        form = "both" if record.done and record.done_ranges else "list"
                        form = form if record.done else "ranges"
                        forms[form] = forms.get(form, 0) + 1
    finally:
        consumer.close()
    return found


def compare(work: Backlog, statuses: dict[str, BatchStatus]) -> dict[str, int]:
    """Return how many batches' final statuses are missing, not final, or miscounted."""
    wrong = not_final = missing = 0
    for number, total in enumerate(work.batch_sizes()):
        status = statuses.get(f"{work.prefix}{number}")
        chunks = -(-total // work.chunk_size)
        if status is None:
            missing += 1
        elif not status.final:
            not_final += 1
        elif (status.ok, status.errors, status.chunks_done, status.total) != (
            total,
            0,
            chunks,
            total,
        ):
            wrong += 1
    return {
        "batches": work.batches,
        "status_missing": missing,
        "status_not_final": not_final,
        "status_wrong_counts": wrong,
    }


STATUS_MUST: Final = (
    Goal("status_missing", "==", 0),
    Goal("status_not_final", "==", 0),
    Goal("status_wrong_counts", "==", 0),
)
"""What every batch's latest status must show at the end of a status scenario."""


@contextlib.contextmanager
def status_trial(ctx: Context, partitions: int, work: Backlog) -> Iterator[Trial]:
    """Run the model and a trial on ``partitions``; submit ``work`` and start the ledger."""
    from chaos.scenarios import LATENCY_MS, stall_timeout, steady  # noqa: PLC0415 - the scenarios import this module

    with (
        inference_server(LATENCY_MS) as server,
        Trial(
            ctx,
            server,
            partitions=partitions,
            settings=steady(ctx),
            stall_timeout_s=stall_timeout(ctx),
        ) as trial,
    ):
        trial.submit(work)
        trial.begin()
        yield trial


def status_figures(
    trial: Trial, work: Backlog, forms: dict[str, int] | None = None
) -> dict[str, int]:
    """Read the status topic from its start; compare each batch's latest status with ``work``."""
    statuses = latest_statuses(trial.bootstrap, trial.topics.status, trial.partitions, forms)
    return compare(work, statuses)


def statuses_final(trial: Trial, work: Backlog, timeout_s: float) -> dict[str, Any]:
    """Wait until every batch's latest status is final; return how long that took.

    A batch's final status comes after its last results (the owner writes it once they
    are acknowledged, or once it reads the progress record of a chunk counted elsewhere),
    so the group keeps running until it is written, or ``timeout_s`` passes.
    """
    started = time.monotonic()
    while True:
        figures = status_figures(trial, work)
        done = figures["status_missing"] == figures["status_not_final"] == 0
        waited = time.monotonic() - started
        if done or waited >= timeout_s:
            return {"statuses_final_after_s": round(waited, 2) if done else None}
        time.sleep(0.5)


def job_status(ctx: Context) -> dict[str, Any]:
    """SIGKILL the owners of batches' statuses mid-run; check every status ends exact."""
    from chaos.scenarios import finished_entry, start_group  # noqa: PLC0415 - the scenarios import this module
    from chaos.scenarios import wind_down as finish  # noqa: PLC0415

    work = Backlog(ctx.count(40_000, 3_000), batches=ctx.count(40, 8), chunk_size=100)
    with status_trial(ctx, 4, work) as trial:
        start_group(trial, ["r0", "r1"])
        rng = ctx.rng()
        kills = 0
        storm_ends = time.monotonic() + ctx.size(60, 10)
        member = 2
        while time.monotonic() < storm_ends and not trial.complete():
            trial.sleep(rng.uniform(3.0, 5.0))
            live = trial.fleet.live()
            if trial.complete() or not live:
                break
            victim = rng.choice(live)
            trial.fleet.kill(victim)
            trial.note("SIGKILL", incarnation=victim.name)
            kills += 1
            trial.start(f"r{member}")  # a new member: its join is a second rebalance
            member += 1
        wait = partial(statuses_final, trial, work, ctx.size(60, 30))
        figures = finish(ctx, trial, trial.begun, deadline=(300, 120), before_stop=wait)
        figures |= {"kills": kills, **status_figures(trial, work)}
        return finished_entry(
            trial,
            f"batch status: 2 replicas, 4 partitions, {work.items:,} items in "
            f"{work.batches} batches, an owner SIGKILLed every 3-5 s and replaced",
            figures,
            [Goal("duplicate_results", ">=", 0)],
            must=list(STATUS_MUST),
        )
