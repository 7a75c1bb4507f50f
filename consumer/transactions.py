"""Exactly-once mode: a chunk's records and its offset commit in one Kafka transaction.

:class:`TransactionalCommitter` replaces the consumer's offset commits; the records wait
in a :class:`~consumer.releaser.Releaser` until their message's turn. Each round, in order:

1. close the releaser's gate (records finished meanwhile wait for the next transaction);
2. flush the producer: every released record is acknowledged, so its message is done;
3. if a released message will not be committed (its chunk was abandoned: a drain's
   timeout, a lost partition), abort the transaction and rewind (below);
4. send the done prefix to the transaction with the consumer group's metadata (KIP-447
   fencing: a replica that lost its partitions cannot commit for them) and commit;
5. begin the next transaction and open the gate.

What a failure leads to (librdkafka's three kinds of transactional errors):

* *retriable* (a timeout, the coordinator moving): the send or commit is retried at the
  next round, alike and with the gate still closed (librdkafka resumes a timed-out call
  only when called again with the same arguments, and the transaction must hold nothing
  past the offsets it commits);
* *abortable* (``txn_requires_abort()``: a rebalance moved the group's generation on,
  records refused, sequence numbers lost with a restarted broker): the transaction is
  aborted and the replica *rewinds*: every assigned partition's work is dropped and
  fetching restarts at its committed offset, in a new transaction (nothing of the
  aborted one was visible). Until the rewind is done nothing is released or committed;
* *fatal* (the producer fenced: the broker aborted the transaction after
  ``--transaction-timeout`` and bumped its epoch, as after a broker restart), or any
  other error a producer cannot get past: the producer is *renewed*, closed and created
  again with the same ``transactional.id``, ``init_transactions()`` retried until the
  coordinator answers (it finishes or aborts what the old producer left open), and the
  replica rewinds.

A transaction that has not committed for ``--transaction-timeout`` while rounds fail
(the broker aborts such a transaction anyway; a producer stuck re-acquiring its id after
a broker restart) is renewed the same way, so a replica never waits without an end.
After ``RENEW_LIMIT`` renewals with no commit between them the replica stops (exit 1)
and its orchestrator restarts it.

The blocking transaction calls run in a worker thread, each bounded by a timeout and one
at a time (a call whose waiter was cancelled is awaited before the next); the loop keeps
serving delivery reports meanwhile. Readers see the results once with
``isolation.level=read_committed`` (``tail``, ``collect`` and ``status`` use it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.commits import CommitResult
from consumer.committer import Committer
from consumer.txn_producer import TransactionalProducer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from confluent_kafka import Producer

    from consumer.offsets import PartitionKey
    from consumer.publisher import Publisher
    from consumer.releaser import Releaser

log = logging.getLogger(__name__)

ABORT_RETRY_S = 1.0  # between attempts to abort while the broker is away
INIT_RETRY_S = 1.0  # between attempts of a renewed producer's init_transactions
RENEW_LIMIT = 5  # renewals in a row (no commit between them) before the replica stops


class TransactionalCommitter(Committer):
    """Commits the done prefix inside the results producer's transaction."""

    def __init__(  # noqa: PLR0913 - the collaborators, each named
        self,
        publisher: Publisher,
        releaser: Releaser,
        group_metadata: Callable[[], Awaitable[object]],
        failed: Callable[[BaseException], None],
        *,
        stuck_s: float,
        idle: tuple[float, Callable[[], bool]] = (0.0, lambda: False),
        outages: Callable[[], int] = lambda: 0,
        fence_topics: tuple[str, ...] = (),
        **committer: Any,  # noqa: ANN401 - Committer's own arguments, passed through
    ) -> None:
        """Commit through ``publisher``'s transaction; ``failed`` stops the replica.

        ``idle``: a shorter interval, and whether it applies now (nothing is buffered: the
        last transaction need not wait the long interval to become visible).
        A transaction failing to commit for ``stuck_s`` gets a new producer, and so does
        one aborted after an outage of the cluster (``outages()`` counts them). After an
        abort or a renewal :attr:`rewind_needed` is set: the fetch loop rewinds, then
        calls :meth:`rewound`.
        """
        super().__init__(**committer)
        self._publisher = publisher
        self._releaser = releaser
        self._group_metadata = group_metadata
        self._failed = failed
        self._stuck_s = stuck_s
        self._idle = idle
        self._outages = outages
        self._outages_seen = outages()  # by the last commit or renewal
        self._txn = TransactionalProducer(publisher, fence_topics)
        self._committing: dict[PartitionKey, int] | None = None  # sent, commit not confirmed
        # Being sent: librdkafka resumes a timed-out send only when called again alike.
        self._sending: tuple[dict[PartitionKey, int], object] | None = None
        self._stopped = False  # failed: nothing more is produced or committed
        self.rewind_needed = asyncio.Event()  # aborted: nothing is committed until rewound
        self._aborting = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._round = asyncio.Lock()  # the periodic round and a revoke's never interleave
        self._last_ok = time.monotonic()  # the last round that failed nothing
        self.renewals = 0  # in a row: reset by a commit

    def interval(self) -> float:
        """Return the transaction interval, or the idle one while nothing is buffered."""
        idle_s, idle = self._idle
        return min(self._interval_s, idle_s) if idle_s > 0 and idle() else self._interval_s

    @property
    def _producer(self) -> Producer:
        return self._publisher.producer

    async def _blocking(self, fn: Callable[[float], object], timeout_s: float) -> None:
        await self._txn.call(fn, timeout_s)

    async def start(self, timeout_s: float) -> None:
        """Register the transactional id (fencing an older producer of it) and begin."""
        await self._txn.start(timeout_s)

    async def commit_now(self, timeout_s: float | None = None) -> CommitResult:
        """Run one transactional commit round (the steps in the module docstring)."""
        timeout = timeout_s or self._timeout_s
        if self._held:
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
            result = await self._commit_round(group, timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                log.info("transaction commit failed; will retry", extra={"error": error.str()})
                result = CommitResult(error=error)
            elif error.txn_requires_abort() and not error.fatal():
                await self._abort(f"transaction aborted: {error.str()}", timeout)
                return CommitResult(error=error)
            else:
                await self._renew(f"transaction failed: {error.str()}", timeout)
                return CommitResult(error=error)
        finally:
            if self._committing is None and self._sending is None and not self._held:
                releaser.open()  # 5. (the next transaction has begun)
        now = time.monotonic()
        if result.error is None:
            self._last_ok = now
        elif now - self._last_ok > self._stuck_s:
            reason = f"no transaction committed for {now - self._last_ok:.0f}s"
            await self._renew(f"{reason}: {result.error.str()}", timeout)
        return result

    @property
    def _held(self) -> bool:
        """Whether nothing may be released: stopped, aborting, or not rewound yet."""
        return self._stopped or self._aborting or self.rewind_needed.is_set()

    def abort_soon(self, reason: str, *, renew: bool = False) -> None:
        """Abort the transaction (then rewind) instead of committing: a record was refused.

        In a transaction a refused record (a broker away longer than the transaction
        timeout) leaves it abortable, not lost: the work since the last commit is redone.
        With ``renew`` (the producer's error is fatal) the producer is renewed instead.
        """
        if self._held:
            return
        self._aborting = True
        self._releaser.closed = True
        task = asyncio.get_running_loop().create_task(self._abort_later(reason, renew=renew))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _abort_later(self, reason: str, *, renew: bool) -> None:
        async with self._round:
            if self._stopped or self.rewind_needed.is_set():  # aborted meanwhile
                self._aborting = False
            elif renew:
                await self._renew(reason, self._timeout_s)
            else:
                await self._abort(reason, self._timeout_s)

    async def _commit_round(self, group: object, timeout_s: float) -> CommitResult:
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
            producer = self._producer
            await self._blocking(
                lambda t: producer.send_offsets_to_transaction(offsets, group, t), timeout_s
            )  # 4.
            self._committing, self._sending = positions, None
        committed = self._committing
        if committed is None:
            return CommitResult()
        await self._blocking(self._producer.commit_transaction, timeout_s)
        self._committing = None
        self._producer.begin_transaction()  # 5.
        self._took(committed)
        return CommitResult(committed)

    def _took(self, committed: dict[PartitionKey, int]) -> None:
        self.renewals = 0
        self._outages_seen = self._outages()
        self._offsets.mark_committed(committed)
        self._metrics.commits.inc()
        for (topic, partition), position in committed.items():
            self._metrics.committed_offset.labels(topic, str(partition)).set(position)
        self._on_committed(committed)

    async def _abort(self, reason: str, timeout_s: float) -> None:
        """Abort the transaction (retrying while the broker is away), begin, ask a rewind.

        An abort that fails for good, or still fails after ``stuck_s``, renews the
        producer instead, and so does an abort after an outage of the cluster: a producer
        that lived through a broker restart may abort, then keep failing to get its
        producer id back (``CONCURRENT_TRANSACTIONS``) for long.
        """
        if self._outages() != self._outages_seen:
            await self._renew(f"{reason} (after an outage of the cluster)", timeout_s)
            return
        self._committing = self._sending = None
        self._aborting = True
        self._releaser.closed = True  # nothing is released until the rewind
        started = time.monotonic()
        while True:
            try:
                await self._blocking(self._producer.abort_transaction, timeout_s)
                self._producer.begin_transaction()
                await self._txn.fence(timeout_s)
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or not error.retriable():
                    await self._renew(f"{reason}; then aborting failed: {error.str()}", timeout_s)
                    return
                if time.monotonic() - started > self._stuck_s:
                    await self._renew(f"{reason}; aborting still fails: {error.str()}", timeout_s)
                    return
                log.info("aborting the transaction: retrying", extra={"error": error.str()})
                await asyncio.sleep(ABORT_RETRY_S)
        self._aborting = False
        self._last_ok = time.monotonic()
        self.rewind_needed.set()
        log.warning("transaction aborted: rewinding to the committed offsets",
                    extra={"reason": reason})  # fmt: skip

    async def _renew(self, reason: str, timeout_s: float) -> None:
        """Replace the producer (same transactional id), begin, ask a rewind; or stop.

        Its unacknowledged records are purged (their messages are redone after the
        rewind); ``init_transactions`` is retried while the coordinator is not ready.
        """
        self._committing = self._sending = None
        self._aborting = True
        self._releaser.closed = True
        self.renewals += 1
        if self.renewals > RENEW_LIMIT:
            await self._stop(f"{reason} ({RENEW_LIMIT} new producers did not help)", timeout_s)
            return
        log.warning("renewing the transactional producer", extra={"reason": reason})
        await self._txn.idle(timeout_s)
        await self._publisher.renew()
        self._txn.forget()
        self._outages_seen = self._outages()
        while True:
            try:
                await self._blocking(self._producer.init_transactions, timeout_s)
                self._producer.begin_transaction()
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or not error.retriable():
                    await self._stop(f"{reason}; then a new producer failed: {exc}", timeout_s)
                    return
                log.info("new transactional producer: retrying", extra={"error": error.str()})
                await asyncio.sleep(INIT_RETRY_S)
        await self._abort(f"{reason}; the producer was renewed", timeout_s)

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
            await self._blocking(self._producer.abort_transaction, timeout_s)
        except KafkaException as exc:
            log.info("aborting the transaction failed", extra={"error": str(exc)})
        log.error("transaction failed: stopping", extra={"reason": reason})
        self._failed(KafkaException(KafkaError(KafkaError._FATAL, reason, fatal=True)))  # noqa: SLF001


def _error(code: int, message: str) -> KafkaError:
    return KafkaError(code, message)
