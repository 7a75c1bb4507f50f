"""One run of a scenario: its topics, replicas, results ledger, timeline and final figures.

A :class:`Trial` owns everything a scenario starts and stops it all on the way out,
whatever happens. Its life:

1. fresh topics and a consumer group of its own; :meth:`Trial.submit` backlogs;
2. :meth:`Trial.begin`: the results ledger and the progress sampler start;
3. the scenario starts replicas and injects its faults, noting each action and each
   fault window;
4. :meth:`Trial.settle`: wait until every result and summary is in, or a partition has
   been stuck for the stall timeout plus a grace period, or the deadline passes;
5. :meth:`Trial.finish`: SIGTERM every replica still running (they drain), read the
   results topic to its end, and derive the figures every scenario reports.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import orjson

from bench.kafka_io import Backlog, Topics, make_topics, produce
from bench.scenarios import Goal, replica_env
from chaos import figures as fig
from chaos.fleet import Fleet, Incarnation, http_get
from chaos.ledger import Expected, Ledger, missing_keys
from chaos.timeline import Sampler
from tools.localkafka.broker import LocalKafka, pid_alive, stop_process_group

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from bench.procs import Server
    from chaos.timeline import Sample

# librdkafka options the KIP-848 consumer protocol refuses (they are broker-side there).
CLASSIC_ONLY = frozenset(
    {
        "kafka_session_timeout_ms",
        "kafka_heartbeat_interval_ms",
        "kafka_partition_assignment_strategy",
    }
)
ALL_COMMITTED_S = 20.0  # committed at the end this long, with results missing: stop waiting
DRAIN_WAIT_S = 45.0  # the replicas' default drain timeout (30 s) and some
POLL_S = 0.1


@dataclass
class Context:
    """What every scenario gets: the cluster, a scratch directory, the mode, the overrides."""

    bootstrap: str
    workdir: Path
    smoke: bool
    overrides: dict[str, str] = field(default_factory=dict)  # every replica's, from --set/-X
    static_membership: bool = False
    broker_properties: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    scenario: str = ""
    timelines: Path | None = None  # where each scenario's timeline goes (JSON)

    def size(self, full: float, smoke: float) -> float:
        """Return the size to use in this mode."""
        return smoke if self.smoke else full

    def count(self, full: int, smoke: int) -> int:
        """Return the count to use in this mode."""
        return smoke if self.smoke else full

    def rng(self) -> random.Random:
        """Return the scenario's random source (seeded: a run can be repeated)."""
        return random.Random(f"{self.seed}-{self.scenario}")  # noqa: S311 - not cryptography

    @property
    def consumer_protocol(self) -> bool:
        """Whether the replicas use the KIP-848 consumer group protocol."""
        chosen = self.overrides.get("group_protocol") or self.overrides.get("kafka_group_protocol")
        return (chosen or "").lower() == "consumer"

    @contextlib.contextmanager
    def own_broker(self) -> Iterator[LocalKafka]:
        """Start a local broker of the scenario's own (it may be killed); remove it after."""
        # Named as every local broker's directory is, so CI's leftover check sees it.
        workdir = Path(tempfile.mkdtemp(prefix="kafka-batch-runner-broker-chaos-"))
        broker = LocalKafka(
            workdir=workdir, keep_data=True, extra_properties=dict(self.broker_properties)
        )
        broker.start()
        try:
            yield broker
        finally:
            if broker.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    broker.resume()  # a stopped JVM ignores SIGTERM
                broker.stop()
            elif broker.pid and pid_alive(broker.pid):  # interrupted between start and ready
                stop_process_group(broker.pid)
            shutil.rmtree(workdir, ignore_errors=True)


class Trial:
    """Topics, replicas, ledger and sampler of one scenario run (a context manager)."""

    def __init__(  # noqa: PLR0913 - a run's knobs
        self,
        ctx: Context,
        server: Server,
        *,
        partitions: int,
        settings: dict[str, object],
        stall_timeout_s: float,
        bootstrap: str | None = None,
        scrape_metrics: bool = False,
    ) -> None:
        """Create the topics and prepare the replicas' environment; nothing runs yet."""
        self.ctx = ctx
        self.bootstrap = bootstrap or ctx.bootstrap
        self.partitions = partitions
        self.stall_timeout_s = stall_timeout_s
        self.scrape_metrics = scrape_metrics
        self.topics: Topics = make_topics(self.bootstrap, partitions)
        self.group = f"chaos-{ctx.scenario}-{uuid.uuid4().hex[:8]}"
        self.expected = Expected()
        self.dropped: list[str] = []
        if ctx.consumer_protocol:
            self.dropped = sorted(k for k in settings if k in CLASSIC_ONLY)
            settings = {k: v for k, v in settings.items() if k not in CLASSIC_ONLY}
        self.settings = settings
        env = replica_env(
            self.bootstrap,
            self.topics,
            server,
            ctx.overrides,
            group_id=self.group,
            metrics_port=0,
            metrics_host="127.0.0.1",
            **settings,
        )
        self.fleet = Fleet(
            env, ctx.workdir, group=self.group, static_membership=ctx.static_membership
        )
        self.ledger: Ledger | None = None
        self.sampler: Sampler | None = None
        self.windows: list[fig.Window] = []
        self.actions: list[dict[str, Any]] = []
        self.begun = time.time()
        self.chaos_over_at: float | None = None
        self.ended_by = ""
        self.settled_at: float | None = None
        self.detail: dict[str, Any] = {}

    # --- set-up -----------------------------------------------------------------------

    def submit(self, backlog: Backlog) -> None:
        """Produce ``backlog`` (the ledger expects it first if it is already reading)."""
        if self.ledger is not None:
            self.ledger.expect(backlog)
        else:
            self.expected.add_backlog(backlog, self.partitions)
        produce(self.bootstrap, self.topics, backlog)
        self.note("submitted", items=backlog.items, prefix=backlog.prefix)

    def begin(self) -> None:
        """Start the results ledger and the progress sampler."""
        self.ledger = Ledger(self.bootstrap, self.topics.results, self.partitions, self.expected)
        self.sampler = Sampler(
            self.bootstrap,
            self.group,
            self.topics.requests,
            partitions=self.partitions,
            ledger=self.ledger,
            fleet=self.fleet,
            scrape_metrics=self.scrape_metrics,
        )

    def start(self, member: str, **extra_env: str) -> Incarnation:
        """Start a replica process for ``member`` (``extra_env`` adds to its environment)."""
        incarnation = self.fleet.start(member, **extra_env)
        self.note("started", incarnation=incarnation.name)
        return incarnation

    def note(self, what: str, **details: object) -> None:
        """Record an action of the harness, with when it happened."""
        now = time.time()
        self.actions.append({"t": round(now - self.begun, 3), "what": what, **details})

    def window(self, start: float, end: float, label: str) -> None:
        """Record a fault window: stall time inside it is explained by the fault."""
        self.windows.append(fig.Window(start, end, label))
        self.note("fault window", label=label, seconds=round(end - start, 3))

    def chaos_over(self) -> None:
        """Mark the end of the fault injection: from now on the group should recover."""
        self.chaos_over_at = time.time()
        self.note("chaos over")

    # --- waiting ------------------------------------------------------------------------

    def complete(self) -> bool:
        """Whether every expected result and summary has been read."""
        return self.ledger is not None and self.ledger.complete()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if every result is in."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.complete():
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def wait_for(self, probe: Callable[[], bool], timeout_s: float, what: str) -> bool:
        """Poll ``probe`` until it holds; note and return False at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.fleet.refresh()
            if probe():
                return True
            if self.crashed():
                self.note("gave up waiting: a replica exited by itself", waiting_for=what)
                return False
            time.sleep(POLL_S)
        self.note("gave up waiting", waiting_for=what, seconds=timeout_s)
        return False

    def crashed(self) -> list[str]:
        """Return the replicas that exited without being asked to."""
        return [i.name for i in self.fleet.incarnations if not i.expected_exit()]

    def owners(self) -> dict[int, tuple[str, ...]]:
        """Return the live owners of each partition, from the replicas' logs."""
        return self.fleet.snapshot().owners

    def all_owned(self) -> bool:
        """Whether every partition has exactly one live owner."""
        owners = self.owners()
        return all(len(owners.get(p, ())) == 1 for p in range(self.partitions))

    def ready(self, incarnation: Incarnation) -> bool:
        """Whether ``incarnation`` answers ``/readyz`` with 200 (joined, not draining)."""
        incarnation.refresh()
        if incarnation.ops_port is None:
            return False
        answer = http_get(incarnation.ops_port, "/readyz")
        return answer is not None and answer[0] == 200

    def committed_total(self) -> int:
        """Return the sum of the group's committed offsets, as last sampled."""
        sample = self.sampler.latest() if self.sampler else None
        return sum(sample.committed) if sample and sample.committed else 0

    def settle(self, deadline_s: float, grace_s: float) -> str:
        """Wait for every result; give up on a stuck partition or at the deadline.

        Gives up early when a partition's unexplained stall since the chaos ended (or
        since it began) reaches the stall timeout plus ``grace_s`` or the stall timeout,
        whichever is longer: time for the group's own recovery (a dead member's session
        to expire) and for the replicas' /healthz to say so. Returns why it stopped.
        """
        limit = self.stall_timeout_s + max(grace_s, self.stall_timeout_s)
        if self.chaos_over_at is None:
            self.chaos_over()
        deadline = time.monotonic() + deadline_s
        since = self.chaos_over_at or self.begun
        reason = "deadline"
        while time.monotonic() < deadline:
            if self.complete():
                reason = "complete"
                break
            self.fleet.refresh()
            if not self.fleet.live():
                reason = "no replica left"
                break
            samples = list(self.sampler.samples) if self.sampler else []
            if fig.committed_to_the_end_for(samples, ALL_COMMITTED_S):
                # Every result of a committed message was acknowledged first: the live
                # tally is what lags (the final read starts afresh if it must).
                reason = "all committed"
                break
            found = fig.stalls(samples, range(self.partitions))
            worst = fig.longest_stall(found, since, time.time(), self.windows)
            if worst >= limit:
                reason = "stuck"
                break
            time.sleep(0.25)
        self.ended_by = reason
        self.settled_at = time.time()
        self.note("settled", reason=reason)
        return reason

    # --- the end ------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Stop the replicas (SIGTERM, drain), read every result, return the common figures."""
        if self.ledger is None or self.sampler is None:
            raise RuntimeError("finish() before begin()")
        live = self.fleet.live()
        self.note("stopping", incarnations=[i.name for i in live])
        self.fleet.terminate(live, DRAIN_WAIT_S)
        self.sampler.stop()
        caught_up = self.ledger.finish()
        self.note("final read", caught_up=caught_up)
        return self.common_figures(caught_up=caught_up)

    @property
    def samples(self) -> list[Sample]:
        """Return the progress timeline up to the end of the wait (what figures are from).

        What happens after, while the harness stops the replicas (they drain and commit),
        is the harness's doing, not a recovery of the group's own.
        """
        until = self.settled_at or float("inf")
        return [s for s in self.timeline if s.t <= until]

    @property
    def timeline(self) -> list[Sample]:
        """Return every sample taken, the final stop included."""
        return list(self.sampler.samples) if self.sampler else []

    def common_figures(self, *, caught_up: bool) -> dict[str, Any]:
        """Return what every scenario reports: the final read, stalls, exits, logs."""
        if self.ledger is None:
            raise RuntimeError("no ledger")
        samples = self.samples
        found = fig.stalls(samples, range(self.partitions))
        stuck = fig.stuck_partitions(found, self.windows, self.stall_timeout_s)
        logs = [i.log_summary() for i in self.fleet.incarnations]
        health_503 = sum(1 for s in samples for status in s.health.values() if status == 503)
        end = self.settled_at or time.time()
        tally = self.ledger.figures()
        found_all = caught_up and tally["missing_items"] == tally["missing_summaries"] == 0
        figures: dict[str, Any] = {
            # All committed: the group finished; the final read says whether all is there.
            "finished": self.ended_by == "complete"
            or (self.ended_by == "all committed" and found_all),
            "ended_by": self.ended_by,
            "seconds": round(end - self.begun, 1),
            **tally,
            "final_read_complete": caught_up,
            "stall_timeout_s": self.stall_timeout_s,
            "stuck_partitions": len(stuck),
            "longest_stall_s": round(fig.longest_stall(found, self.begun, end, self.windows), 1),
            "healthz_503_answers": health_503,
            "replica_processes": len(self.fleet.incarnations),
            "unexpected_exits": sum(not log["expected_exit"] for log in logs),
            "tracebacks": sum(log["tracebacks"] for log in logs),
            "task_exceptions_never_retrieved": sum(log["never_retrieved"] for log in logs),
            "error_log_lines": sum(log["error_lines"] for log in logs),
            "partitions_lost_events": sum(log["lost_events"] for log in logs),
        }
        self.detail = {
            "stuck": [_stall_json(s, self.begun, self.windows) for s in stuck],
            "missing_examples": missing_keys(self.ledger),
            "replicas": logs,
            "windows": [
                {
                    "label": w.label,
                    "start": round(w.start - self.begun, 3),
                    "end": round(w.end - self.begun, 3),
                }
                for w in self.windows
            ],
            "settings": {k: str(v) for k, v in self.settings.items()},
            "dropped_for_consumer_protocol": self.dropped,
            "static_membership": self.ctx.static_membership,
            "group": self.group,
        }
        if self.ctx.timelines is not None:
            self.ctx.timelines.mkdir(parents=True, exist_ok=True)
            path = self.ctx.timelines / f"{self.ctx.scenario}.json"
            timeline = {
                "begun": self.begun,
                "actions": self.actions,
                "settled": self.settled_at,
                "samples": [s.as_json() for s in self.timeline],
            }
            path.write_bytes(orjson.dumps(timeline))
            self.detail["timeline"] = str(path)
        return figures

    def entry(
        self, title: str, figures: dict[str, Any], goals: list[Goal], must: list[Goal]
    ) -> dict[str, Any]:
        """Assemble the scenario's report entry."""
        return {
            "title": title,
            "figures": figures,
            "goals": [goal.check(figures) for goal in goals],
            "must_hold": [goal.check(figures) for goal in must],
            "actions": self.actions,
            "detail": self.detail,
        }

    def __enter__(self) -> Self:
        """Return the trial."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Whatever happened, leave no replica running and no reader thread."""
        self.fleet.kill_all()
        if self.sampler is not None:
            self.sampler.stop()
        if self.ledger is not None:
            self.ledger.close()


# The correctness figures every scenario must show (the CI smoke test asserts them).
MUST_HOLD = [
    Goal("missing_items", "==", 0),
    Goal("missing_summaries", "==", 0),
    Goal("finished", "==", 1),
    Goal("unexpected_exits", "==", 0),
]
# Goals every scenario reports (not asserted).
LOG_GOALS = [
    Goal("stuck_partitions", "==", 0),
    Goal("tracebacks", "==", 0),
    Goal("task_exceptions_never_retrieved", "==", 0),
]


def _stall_json(stall: fig.Stall, begun: float, windows: list[fig.Window]) -> dict[str, Any]:
    return {
        "partition": stall.partition,
        "start": round(stall.start - begun, 3),
        "seconds": round(stall.seconds, 1),
        "unexplained_s": round(stall.unexplained(windows), 1),
        "resolved": stall.resolved,
        "committed": stall.committed,
    }
