"""The intake: each fetched message becomes a chunk of work, or a dead letter.

For every message the pipeline fetches, :class:`Intake` decides whether to take it (its
partition is assigned here, the replica is not draining, it is not already in hand),
decodes it (an invalid one goes to the dead-letter topic through the writer), registers
it in the chunk book, splits its items into work units and starts one task per unit:
dispatch, then write the unit's results. A unit runs only when its endpoint's limit has a
place for it (:meth:`~consumer.limiter.Limiter.submit`): a chunk of 500 items queues 500
small entries, not 500 tasks; a unit given its place runs in the task of the unit that
handed it on, where it can (:mod:`consumer.units`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, NamedTuple

from confluent_kafka import KafkaError, KafkaException

from consumer.bisect import isolate, worth_bisecting
from consumer.chunk import Chunk
from consumer.limiter import Lane, Place
from consumer.outcome import Outcome
from consumer.protocols import ONE_ITEM_PROTOCOLS
from consumer.splitter import WorkUnit, items_per_request, split_missing
from consumer.tracing import trace_context
from consumer.units import UnitTasks
from schemas import InvalidMessage, Limits, ResultErrorKind, decode_batch_request

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine, Sequence

    from confluent_kafka import Message

    from consumer.chunks import ChunkBook
    from consumer.dispatcher import Dispatcher
    from consumer.endpoints import Endpoint
    from consumer.jobs import Jobs
    from consumer.metrics import Metrics
    from consumer.offsets import OffsetTracker, PartitionKey
    from consumer.progress import ProgressMonitor
    from consumer.publisher import Headers
    from consumer.resume import Resume
    from consumer.settings import Settings
    from consumer.writer import RecordWriter
    from schemas import BatchRequest

log = logging.getLogger(__name__)


class Intake:
    """Takes fetched messages in: tracks, decodes, registers and dispatches them."""

    def __init__(  # noqa: PLR0913 - the rooms a message passes through, each named
        self,
        settings: Settings,
        *,
        book: ChunkBook,
        offsets: OffsetTracker,
        writer: RecordWriter,
        dispatcher: Dispatcher,
        monitor: ProgressMonitor,
        failed: Callable[[BaseException], None],
        replica_header: tuple[str, bytes],
        jobs: Jobs,
        metrics: Metrics,
    ) -> None:
        """Wire the rooms; ``failed`` stops the replica when a record cannot be written."""
        self._settings = settings
        self._limits = Limits(max_message_bytes=settings.max_message_bytes)
        self._book = book
        self._offsets = offsets
        self._writer = writer
        self._dispatcher = dispatcher
        self._monitor = monitor
        self._failed = failed
        self._metrics = metrics
        self._replica_header = replica_header
        self._jobs = jobs
        self.open = True  # closed when the replica drains: nothing more is taken
        self._units: UnitTasks[_Queued, Outcome] = UnitTasks(
            self._send, self._answered, self._unit_done
        )
        # What the commit metadata said was done after the committed offset, per partition
        # assigned here (set on assignment, dropped on revoke).
        self.resuming: dict[PartitionKey, Resume] = {}

    def _accept(self, tp: PartitionKey, offset: int) -> int | None:
        """Track a fetched message; return its assignment epoch, or None to leave it.

        A message is left (never tracked, so never committed) when its partition is not
        assigned here any more, the replica is draining, or it is already in hand.
        """
        epoch = self._book.epoch(tp)
        if epoch is None or not self.open:
            return None
        self._monitor.moved(tp, time.monotonic())
        try:
            tracked = self._offsets.add(tp[0], tp[1], offset)
        except ValueError:
            tracked = False  # redelivered below what is tracked (a seek): already in hand
        if tracked:
            self._writer.expect(tp, offset)
        return epoch if tracked else None

    def take(self, msg: Message) -> None:
        """Take one fetched message in (or leave it, or dead-letter it)."""
        err = message_error(msg)
        if err is not None:
            if err.fatal():
                self._failed(KafkaException(err))
            else:
                log.warning("consumer error", extra={"error": str(err)})
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            return
        tp = (topic, partition)
        epoch = self._accept(tp, offset)
        if epoch is None:
            return
        resume = self.resuming.get(tp)
        if resume is not None and resume.finished(offset):
            # A previous owner had every record of it acknowledged: nothing to redo.
            self._offsets.done(topic, partition, offset)
            self._metrics.chunks.labels("resumed").inc()
            return
        self._take_request(msg, tp, offset, epoch)

    def _take_request(self, msg: Message, tp: PartitionKey, offset: int, epoch: int) -> None:
        """Decode the message and start its work (only the items not answered yet)."""
        value = msg.value() or b""
        try:
            request = decode_batch_request(value, self._limits)
        except InvalidMessage as exc:
            self._writer.dead_letter(tp, offset, epoch, key=msg.key(), value=value, error=exc)
            self._jobs.dead_lettered(msg.key(), tp[1])
            return
        trace = trace_context(msg)
        headers: Headers = [self._replica_header, *((k, v.encode()) for k, v in trace.items())]
        chunk = Chunk(tp, offset, request, headers, msg.timestamp()[1], epoch)
        resume = self.resuming.get(tp)
        progress = resume.partial.get(offset) if resume is not None else None
        if progress is not None and progress.fits(chunk.size):
            chunk.resume_from(progress)
            self._metrics.resumed_items.inc(progress.count)
        self._book.register(chunk)
        self._jobs.taken(chunk)
        if chunk.pending_items == 0:  # every result was acknowledged, the summary was not
            self._writer.write_summary(chunk)
            return
        settings = self._settings
        endpoint = settings.endpoint_for(request.target)
        if endpoint is None:
            message = f"target {request.target!r} is not configured on this consumer"
            outcome = Outcome(None, 0, 0.0, ResultErrorKind.UNKNOWN_TARGET, message)
            for unit in split_missing(chunk.request.items, chunk.done, chunk.size):
                self._writer.write_unit(chunk, unit, outcome)
            return
        size = items_per_request(
            request.items_per_request,
            settings.items_per_request,
            settings.max_items_per_request,
        )
        if endpoint.protocol in ONE_ITEM_PROTOCOLS:
            size = 1  # these APIs take no list of bodies
        # Each unit waits for a place in its endpoint's limit as a queued start, and
        # becomes a task holding that place only when its turn comes.
        route = _Route(endpoint, self._lane(chunk), trace or None)
        key, weight = route.lane.key, route.lane.weight
        limiter = self._dispatcher.guards[endpoint.name].limiter  # (Dispatcher.submit's)
        since = time.monotonic()
        for unit in split_missing(chunk.request.items, chunk.done, size):
            limiter.submit(_Queued(self, chunk, route, unit, Place(limiter, since)), key, weight)

    def cancel_batch(self, batch_id: str) -> None:
        """Stop a cancelled batch's units: running ones are cancelled, queued ones answered.

        The units still queued for a place get their cancelled results at once (they
        would otherwise wait for places behind other batches' units just to write them).
        """
        self._book.cancel_batch(batch_id)
        for guard in self._dispatcher.guards.values():
            for queued in guard.limiter.withdraw(
                lambda start: isinstance(start, _Queued) and start.batch_id == batch_id
            ):
                assert isinstance(queued, _Queued)  # noqa: S101 - what withdraw selected
                outcome = self._stopped(queued.chunk.request)
                if outcome is not None:
                    self._write(queued.chunk, [(queued.unit, outcome)])

    def withdraw_abandoned(self) -> int:
        """Take the queued units of abandoned chunks out of their limits; return how many.

        Left queued, each would decline its turn only when the turn came, one per place
        freed. A partition revoked and given back to this replica queues its new units in
        the same lane (its batch's) behind them: it got no place until they were gone,
        while other partitions took every place (10 s without progress in the chaos
        suite's rolling restart).
        """
        withdrawn = 0
        for guard in self._dispatcher.guards.values():
            withdrawn += len(
                guard.limiter.withdraw(
                    lambda start: isinstance(start, _Queued) and start.chunk.abandoned
                )
            )
        return withdrawn

    def _lane(self, chunk: Chunk) -> Lane:
        """Return where the chunk's units queue: their batch by priority, or the partition."""
        if self._settings.fairness == "batches":
            request = chunk.request
            return Lane(chunk.tp, (chunk.tp, request.batch_id), request.priority or 1)
        return Lane(chunk.tp, chunk.tp)

    def _stopped(self, request: BatchRequest) -> Outcome | None:
        """Return the outcome of a unit that must not be sent (cancelled, expired), or None."""
        kind = self._jobs.stop_reason(request, time.time())
        if kind is None:
            return None
        if kind == ResultErrorKind.CANCELLED:
            message = f"batch {request.batch_id} was cancelled before this item was sent"
        else:
            message = "the request's deadline passed before this item was sent"
        return Outcome(None, 0, 0.0, kind, message)

    def _send(self, queued: _Queued) -> Coroutine[None, None, Outcome] | None:
        """Return the unit's requests to await, or None: it was stopped (and answered)."""
        chunk = queued.chunk
        request = chunk.request
        if request.deadline is not None or self._jobs.cancels:  # (else nothing stops it)
            stopped = self._stopped(request)
            if stopped is not None:
                queued.place.release()
                self._write(chunk, [(queued.unit, stopped)])
                return None
        (endpoint, lane, headers), items = queued.route, queued.unit.items
        return self._dispatcher.run(endpoint, items, headers, chunk.tp, lane, queued.place)

    def _answered(self, queued: _Queued, outcome: Outcome) -> Coroutine[None, None, None] | None:
        """Write the unit's results; return the bisection to await when it is worth one."""
        chunk, unit = queued.chunk, queued.unit
        if outcome.predictions is not None:  # answered: never split (see worth_bisecting)
            self._write_one(chunk, unit, outcome)  # (no parts list: the usual case)
            return None
        if self._settings.max_bisect_calls and worth_bisecting(outcome, len(unit.items)):
            return self._bisect(queued, outcome)
        self._write(chunk, [(unit, outcome)])
        return None

    async def _bisect(self, queued: _Queued, outcome: Outcome) -> None:
        """Isolate the items a failed unit's error belongs to; write every part's results."""
        dispatcher = self._dispatcher
        chunk, unit = queued.chunk, queued.unit
        endpoint, lane, headers = queued.route

        async def send(items: Sequence[bytes]) -> Outcome:
            return await dispatcher.run(endpoint, items, headers, fair_key=chunk.tp, lane=lane)

        isolation = await isolate(unit, outcome, send, self._settings.max_bisect_calls)
        metrics = dispatcher.metrics
        metrics.bisections.inc(isolation.splits)
        metrics.bisect_calls.inc(isolation.attempts)
        metrics.isolated_items.inc(isolation.isolated)
        self._write(chunk, isolation.parts)

    def _unit_done(self, queued: _Queued, task: asyncio.Task[None]) -> None:
        """Forget a finished unit task; give its last unit's place back if it never used it.

        A unit whose task a cancel of its batch stopped gets cancelled results: the book
        cancels the batch's unit tasks (waiting, in flight, or not started yet; units
        still queued for a place see the cancel when they start); any other cancel (a
        revoke, a forced stop) abandons the chunk first, and then nothing is written.
        """
        chunk, unit = queued.chunk, queued.unit
        chunk.tasks.discard(task)
        queued.place.release()
        if not task.cancelled() or chunk.abandoned:
            return
        outcome = self._stopped(chunk.request)
        if outcome is not None:
            self._write(chunk, [(unit, outcome)])

    def _write(self, chunk: Chunk, parts: list[tuple[WorkUnit, Outcome]]) -> None:
        for part, part_outcome in parts:
            if not self._write_one(chunk, part, part_outcome):
                return

    def _write_one(self, chunk: Chunk, unit: WorkUnit, outcome: Outcome) -> bool:
        """Write one unit's results unless its chunk was abandoned; False if that failed."""
        if chunk.abandoned:
            return True
        try:
            self._writer.write_unit(chunk, unit, outcome)
        except Exception as exc:  # noqa: BLE001 - a chunk that cannot finish must not hang
            # librdkafka refused a record outright: the chunk can never be done, so stop
            # (its offset stays uncommitted) rather than leave the partition stuck.
            self._failed(exc)
            return False
        self._monitor.moved(chunk.tp, time.monotonic())
        return True


class _Queued:
    """A unit queued for a place of its endpoint's limit: starts its task when given one."""

    __slots__ = ("chunk", "intake", "place", "route", "unit")

    def __init__(
        self, intake: Intake, chunk: Chunk, route: _Route, unit: WorkUnit, place: Place
    ) -> None:
        """Queue ``unit`` of ``chunk`` for ``route``, waiting for ``place``."""
        self.intake = intake
        self.chunk = chunk
        self.route = route
        self.unit = unit
        self.place = place

    @property
    def batch_id(self) -> str:
        """The batch the unit belongs to."""
        return self.chunk.request.batch_id

    def __call__(self) -> bool:
        """Run the unit holding the place given; decline it if the chunk was abandoned."""
        if self.chunk.abandoned:
            return False
        self.place.held = True
        self.intake._units.start(self)  # noqa: SLF001
        return True


class _Route(NamedTuple):
    """Where a chunk's units go: the endpoint, their lane in its limit, the trace headers."""

    endpoint: Endpoint
    lane: Lane
    headers: dict[str, str] | None


def message_error(msg: Message) -> KafkaError | None:
    """Return the message's error unless it is an end-of-partition notice."""
    err = msg.error()
    if err is None or err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
        return None
    return err
