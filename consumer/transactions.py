"""Exactly-once mode: a chunk's records and its offset commit in one Kafka transaction.

Two parts:

* :class:`Releaser` holds each request message's records (results and summary, or its
  dead letter) until the message is finished *and* every earlier message of its
  partition has been released, then hands them to the producer. So a transaction only
  ever holds the records of a contiguous run of messages per partition, and committing
  the done prefix with it covers every record in it: nothing in a committed transaction
  is redone by the next owner, nothing redone was in a committed transaction. Records
  wait in memory only while their message counts against ``--max-buffered-items``.
* :class:`TransactionalCommitter` replaces the consumer's offset commits. Each round,
  in order:

  1. close the releaser's gate (records finished meanwhile wait for the next transaction);
  2. flush the producer: every released record is acknowledged, so its message is done;
  3. if a released message will not be committed (its chunk was abandoned: a drain's
     timeout, a lost partition), abort the transaction and rewind (below);
  4. send the done prefix to the transaction with the consumer group's metadata (KIP-447
     fencing: a replica that lost its partitions cannot commit for them) and commit;
  5. begin the next transaction and open the gate.

  A send or commit that fails with a retriable error is retried at the next round, alike
  and with the gate still closed (librdkafka resumes a timed-out call only when called
  again with the same arguments, and the transaction must hold nothing past the offsets
  it commits). One the transaction must be aborted for (a rebalance moved the group's
  generation on: ``ILLEGAL_GENERATION``) is aborted, and the replica *rewinds*: every
  assigned partition's work is dropped and fetching restarts at its committed offset, in
  a new transaction (nothing of the aborted one was visible). Until the rewind is done
  nothing is released or committed. A fatal error (the producer fenced) stops the
  replica.

The blocking transaction calls run in a worker thread, each bounded by a timeout; the
loop keeps serving delivery reports meanwhile. Readers see the results once with
``isolation.level=read_committed`` (``tail``, ``collect`` and ``status`` use it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.commits import CommitResult
from consumer.committer import Committer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from confluent_kafka import Producer

    from consumer.offsets import PartitionKey
    from consumer.publisher import DeliveryCallback, Headers, Produce, Publisher
    from consumer.settings import Settings

    Record = tuple[str, bytes, bytes | str | None, DeliveryCallback, Headers | None]

log = logging.getLogger(__name__)

ABORT_RETRY_S = 1.0  # between attempts to abort while the broker is away


def transactional_config(settings: Settings) -> dict[str, Any]:
    """Return the producer options of a transactional replica (a fresh id per process).

    With static membership the id is the member's own, so a restarted replica fences its
    predecessor's open transaction at once; otherwise the broker aborts it after
    ``transaction_timeout_s``.
    """
    suffix = settings.group_instance_id or uuid.uuid4().hex[:16]
    return {
        "transactional.id": f"batch-runner-{settings.group_id}-{suffix}",
        "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
    }


@dataclass(slots=True)
class _Slot:
    records: list[Record] = field(default_factory=list)
    alive: Callable[[], bool] | None = None  # set when the message is finished


class Releaser:
    """Records per message, released to the producer in offset order per partition."""

    def __init__(self, produce: Produce) -> None:
        """Release through ``produce`` (the publisher's)."""
        self._produce = produce
        self._slots: dict[PartitionKey, dict[int, _Slot]] = {}
        self.released: set[tuple[PartitionKey, int]] = set()  # released, not done yet
        self.closed = False

    def expect(self, tp: PartitionKey, offset: int) -> None:
        """Note a received message: later offsets of ``tp`` wait for it."""
        self._slots.setdefault(tp, {})[offset] = _Slot()

    def add(self, tp: PartitionKey, offset: int, record: Record) -> None:
        """Hold one record of the message at ``offset``."""
        self._slots[tp][offset].records.append(record)

    def finish(self, tp: PartitionKey, offset: int, alive: Callable[[], bool]) -> None:
        """Mark the message complete: release it in its turn, if ``alive()`` then."""
        slots = self._slots.get(tp)
        if slots is not None and offset in slots:
            slots[offset].alive = alive
            self._pump(tp)

    def done(self, tp: PartitionKey, offset: int) -> None:
        """Every released record of the message is acknowledged and its offset done."""
        self.released.discard((tp, offset))

    def drop(self, tps: Iterable[PartitionKey]) -> None:
        """Forget what was not released for ``tps`` (never produced: the next owner redoes it)."""
        for tp in tps:
            self._slots.pop(tp, None)

    def open(self) -> None:
        """Open the gate and release what waited."""
        self.closed = False
        for tp in list(self._slots):
            self._pump(tp)

    @property
    def held(self) -> int:
        """How many records wait to be released."""
        return sum(len(s.records) for slots in self._slots.values() for s in slots.values())

    def _pump(self, tp: PartitionKey) -> None:
        slots = self._slots.get(tp)
        while slots and not self.closed:
            offset, slot = next(iter(slots.items()))
            if slot.alive is None:
                return
            del slots[offset]
            if not slot.alive():
                continue  # abandoned: its partition is going, the next owner redoes it
            self.released.add((tp, offset))
            for topic, value, key, on_delivery, headers in slot.records:
                self._produce(topic, value, key, on_delivery, headers)


class TransactionalCommitter(Committer):
    """Commits the done prefix inside the results producer's transaction."""

    def __init__(
        self,
        publisher: Publisher,
        releaser: Releaser,
        group_metadata: Callable[[], Awaitable[object]],
        failed: Callable[[BaseException], None],
        **committer: Any,  # noqa: ANN401 - Committer's own arguments, passed through
    ) -> None:
        """Commit through ``publisher``'s transaction; ``failed`` stops the replica.

        After an abort :attr:`rewind_needed` is set: the fetch loop rewinds, then calls
        :meth:`rewound`.
        """
        super().__init__(**committer)
        self._publisher = publisher
        self._producer: Producer = publisher.producer
        self._releaser = releaser
        self._group_metadata = group_metadata
        self._failed = failed
        self._committing: dict[PartitionKey, int] | None = None  # sent, commit not confirmed
        # Being sent: librdkafka resumes a timed-out send only when called again alike.
        self._sending: tuple[dict[PartitionKey, int], object] | None = None
        self._stopped = False  # failed: nothing more is produced or committed
        self.rewind_needed = asyncio.Event()  # aborted: nothing is committed until rewound
        self._aborting = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._round = asyncio.Lock()  # the periodic round and a revoke's never interleave

    async def start(self, timeout_s: float) -> None:
        """Register the transactional id (fencing an older producer of it) and begin."""
        await asyncio.to_thread(self._producer.init_transactions, timeout_s)
        self._producer.begin_transaction()

    async def commit_now(self, timeout_s: float | None = None) -> CommitResult:
        """Run one transactional commit round (the steps in the module docstring)."""
        timeout = timeout_s or self._timeout_s
        if self._stopped or self._aborting or self.rewind_needed.is_set():
            message = "the transaction was aborted: nothing is committed until a rewind"
            return CommitResult(error=_error(KafkaError._STATE, message))  # noqa: SLF001
        # Read before the round: during a revoke the consumer thread waits for the loop.
        group = await self._group_metadata()
        async with self._round:
            return await self._locked_round(group, timeout)

    async def _locked_round(self, group: object, timeout: float) -> CommitResult:  # noqa: ASYNC109
        releaser = self._releaser
        releaser.closed = True  # 1.
        try:
            return await self._commit_round(group, timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                log.info("transaction commit failed; will retry", extra={"error": error.str()})
                return CommitResult(error=error)
            if error.txn_requires_abort() and not error.fatal():
                await self._abort(f"transaction aborted: {error.str()}", timeout)
            else:
                await self._stop(f"transaction failed: {error.str()}", timeout)
            return CommitResult(error=error)
        finally:
            if self._committing is None and self._sending is None and not self._held:
                releaser.open()  # 5. (the next transaction has begun)

    @property
    def _held(self) -> bool:
        """Whether nothing may be released: stopped, aborting, or not rewound yet."""
        return self._stopped or self._aborting or self.rewind_needed.is_set()

    def abort_soon(self, reason: str) -> None:
        """Abort the transaction (then rewind) instead of committing: a record was refused.

        In a transaction a refused record (a broker away longer than the transaction
        timeout) leaves it abortable, not lost: the work since the last commit is redone.
        """
        if self._held:
            return
        self._aborting = True
        self._releaser.closed = True
        task = asyncio.get_running_loop().create_task(self._abort_later(reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _abort_later(self, reason: str) -> None:
        async with self._round:
            if self._stopped or self.rewind_needed.is_set():  # aborted meanwhile
                self._aborting = False
                return
            await self._abort(reason, self._timeout_s)

    async def _commit_round(self, group: object, timeout_s: float) -> CommitResult:
        producer = self._producer
        if self._committing is None and self._sending is None:
            if await self._publisher.flush(timeout_s):  # 2.
                message = f"flushing the results took over {timeout_s:g}s"
                return CommitResult(error=_error(KafkaError._TIMED_OUT, message))  # noqa: SLF001
            if self._releaser.released:  # 3.
                reason = "results of an abandoned message are in the transaction"
                await self._abort(reason, timeout_s)
                return CommitResult(error=_error(KafkaError._STATE, reason))  # noqa: SLF001
            assigned = self._target.assignment
            positions = {
                tp: o for tp, o in self._offsets.commit_positions().items() if tp in assigned
            }
            if not positions:
                return CommitResult()
            self._sending = (positions, group)
        if self._sending is not None:
            positions, group = self._sending
            offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
            await asyncio.to_thread(
                producer.send_offsets_to_transaction, offsets, group, timeout_s
            )  # 4.
            self._committing, self._sending = positions, None
        committed = self._committing
        if committed is None:
            return CommitResult()
        await asyncio.to_thread(producer.commit_transaction, timeout_s)
        self._committing = None
        producer.begin_transaction()  # 5.
        self._took(committed)
        return CommitResult(committed)

    def _took(self, committed: dict[PartitionKey, int]) -> None:
        self._offsets.mark_committed(committed)
        self._metrics.commits.inc()
        for (topic, partition), position in committed.items():
            self._metrics.committed_offset.labels(topic, str(partition)).set(position)
        self._on_committed(committed)

    async def _abort(self, reason: str, timeout_s: float) -> None:
        """Abort the transaction (retrying while the broker is away), begin, ask a rewind."""
        self._committing = self._sending = None
        self._aborting = True
        self._releaser.closed = True  # nothing is released until the rewind
        while True:
            try:
                await asyncio.to_thread(self._producer.abort_transaction, timeout_s)
                self._producer.begin_transaction()
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or not error.retriable():
                    await self._stop(f"{reason}; then aborting failed: {exc}", timeout_s)
                    return
                log.info("aborting the transaction: retrying", extra={"error": error.str()})
                await asyncio.sleep(ABORT_RETRY_S)
        self._aborting = False
        self.rewind_needed.set()
        log.warning("transaction aborted: rewinding to the committed offsets",
                    extra={"reason": reason})  # fmt: skip

    def rewound(self) -> None:
        """Release and commit again: every partition's work restarts from its commit."""
        self._releaser.released.clear()
        self.rewind_needed.clear()
        if not self._stopped:
            self._releaser.open()

    async def _stop(self, reason: str, timeout_s: float) -> None:
        """Stop the replica without committing more (the group redoes what is uncommitted)."""
        self._committing = self._sending = None
        self._stopped = True
        self._releaser.closed = True
        try:
            await asyncio.to_thread(self._producer.abort_transaction, timeout_s)
        except KafkaException as exc:
            log.info("aborting the transaction failed", extra={"error": str(exc)})
        log.error("transaction failed: stopping", extra={"reason": reason})
        self._failed(KafkaException(_error(KafkaError._STATE, reason)))  # noqa: SLF001


def _error(code: int, message: str) -> KafkaError:
    return KafkaError(code, message)


def kafka_error(error: BaseException) -> KafkaError:
    """Return the Kafka error a failure carries (a fatal one if it carries none)."""
    if isinstance(error, KafkaException) and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return KafkaError(KafkaError._FATAL, str(error), fatal=True)  # noqa: SLF001
