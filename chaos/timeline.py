"""The progress timeline: every ~0.5 s, each partition's committed and end offset, and more.

A :class:`Sampler` thread asks the broker for the group's committed offsets (a consumer
of the group that never joins it: ``Consumer.committed``) and the requests topic's end
offsets (``AdminClient.list_offsets``, latest), takes the results read so far per
request partition from the :class:`~chaos.ledger.Ledger`, the owners of each partition
from the replicas' logs (:class:`~chaos.fleet.Fleet`), and each live replica's ``GET
/healthz`` status (and, if asked, its ``batch_runner_stalled_partitions`` metric). A
sample whose broker calls fail (the broker is down or stopped) keeps
``committed``/``end`` as ``None``. The figures (:mod:`chaos.figures`) are derived from
these samples afterwards.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from chaos.fleet import http_get, metric_value
from chaos.ledger import QUIET, ask_end_offsets, wait_end_offsets

if TYPE_CHECKING:
    from chaos.fleet import Fleet
    from chaos.ledger import Ledger

INTERVAL_S = 0.5
TIMEOUT_S = 0.8  # per broker request: a sample is late by at most ~2 s while it is away
RENEW_AFTER = 3  # failed samples in a row before the admin client is made anew
STALLED_METRIC = "batch_runner_stalled_partitions"


@dataclass(frozen=True)
class Sample:
    """One look at the group's progress, at wall time ``t``."""

    t: float
    committed: tuple[int, ...] | None  # per partition; 0 before the first commit
    end: tuple[int, ...] | None
    results: tuple[int, ...]  # results read so far, per request partition
    newest: tuple[float, ...]  # newest result's create time, per request partition
    owners: tuple[tuple[str, ...], ...]  # live incarnations whose logs claim the partition
    health: dict[str, int | None]  # incarnation -> /healthz status (None: no answer)
    stalled: dict[str, float | None]  # incarnation -> batch_runner_stalled_partitions

    def lag(self, partition: int) -> int | None:
        """Return end - committed of ``partition``, or None if the broker did not answer."""
        if self.committed is None or self.end is None:
            return None
        return self.end[partition] - self.committed[partition]

    def as_json(self) -> dict[str, Any]:
        """Return the sample as plain JSON values (for the timeline file)."""
        return {
            "t": round(self.t, 3),
            "committed": self.committed,
            "end": self.end,
            "results": self.results,
            "owners": self.owners,
            "health": self.health,
            **({"stalled": self.stalled} if self.stalled else {}),
        }


class Sampler:
    """Take a :class:`Sample` every ``interval_s`` in a thread until stopped."""

    def __init__(  # noqa: PLR0913 - what one sample looks at
        self,
        bootstrap: str,
        group: str,
        topic: str,
        *,
        partitions: int,
        ledger: Ledger,
        fleet: Fleet,
        scrape_metrics: bool = False,
        interval_s: float = INTERVAL_S,
    ) -> None:
        """Start sampling now."""
        self.group = group
        self.topic = topic
        self.partitions = partitions
        self.ledger = ledger
        self.fleet = fleet
        self.scrape_metrics = scrape_metrics
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._bootstrap = bootstrap
        self._admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
        self._failures = 0
        self._group = Consumer(  # reads the group's commits; never subscribes, never joins
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                **QUIET,
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (after the sample in progress)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(30)
        self._group.close()

    def latest(self) -> Sample | None:
        """Return the newest sample."""
        return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.samples.append(self.take())
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def take(self) -> Sample:
        """Take one sample now."""
        t = time.time()
        committed, end = self._offsets()
        results, newest = self.ledger.progress()
        snapshot = self.fleet.snapshot()
        health: dict[str, int | None] = {}
        stalled: dict[str, float | None] = {}
        for name, port in snapshot.ops_ports.items():
            answer = http_get(port, "/healthz", timeout_s=1.0)
            health[name] = answer[0] if answer else None
            if self.scrape_metrics:
                metrics = http_get(port, "/metrics", timeout_s=1.0)
                stalled[name] = metric_value(metrics[1], STALLED_METRIC) if metrics else None
        return Sample(
            t=t,
            committed=committed,
            end=end,
            results=tuple(results),
            newest=tuple(newest),
            owners=tuple(snapshot.owners.get(p, ()) for p in range(self.partitions)),
            health=health,
            stalled=stalled,
        )

    def _offsets(self) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
        """Ask for end and committed offsets at once; None for both if either fails.

        Committed offsets come from a consumer of the group that never joins it, not from
        ``AdminClient.list_consumer_group_offsets``: librdkafka's admin client crashes the
        process (SIGSEGV in ``rd_kafka_cgrp_op``) when that request meets a coordinator
        that is moving or loading, as after a broker restart (librdkafka#5040).
        """
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            ends = ask_end_offsets(self._admin, self.topic, self.partitions, TIMEOUT_S)
            committed = self._group.committed(tps, timeout=2 * TIMEOUT_S)
            end = wait_end_offsets(ends, TIMEOUT_S)
        except Exception:  # noqa: BLE001 - the broker is down or stopped: no offsets this time
            self._failures += 1
            if self._failures % RENEW_AFTER == 0:
                # After a broker restart librdkafka's admin client keeps a stale leader
                # epoch and every ListOffsets fails (FENCED_LEADER_EPOCH): start afresh.
                self._admin = AdminClient({"bootstrap.servers": self._bootstrap, **QUIET})
            return None, None
        self._failures = 0
        found = {tp.partition: tp.offset for tp in committed if tp.error is None}
        if len(found) < self.partitions:
            return None, None
        return (
            tuple(max(found[p], 0) for p in range(self.partitions)),
            tuple(end[p] for p in range(self.partitions)),
        )
