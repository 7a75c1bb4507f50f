"""The chaos scenarios of issue 13: each injects one kind of fault into a working group.

Every scenario runs the real thing: a Kafka broker (the run's, or one of its own when
the broker is the fault), the test inference server as a process
(``python -m tools.testservers.inference``), consumer replicas as ``python -m consumer``
processes. It ends with the final read of the results topic and reports figures;
``chaos/README.md`` says how each is measured. Timings are reported, never asserted.
"""

from __future__ import annotations

import contextlib
import signal
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bench.kafka_io import Backlog
from bench.procs import Server, inference_server
from bench.scenarios import Goal
from chaos import figures as fig
from chaos.fleet import http_get, http_post, metric_value
from chaos.jobs import job_status
from chaos.ledger import QUIET, end_offsets
from chaos.trial import LOG_GOALS, MUST_HOLD, Context, Trial
from chaos.upgrade import rolling_upgrade
from schemas import encode_batch_request
from tools.localkafka.broker import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    from chaos.fleet import Incarnation

LATENCY_MS = 50.0  # the model's latency in most scenarios
CHUNK = 100  # items per request message in most scenarios
FULL_STALL_TIMEOUT_S = 60.0  # the consumer's default stall timeout (issue 13)
SMOKE_STALL_TIMEOUT_S = 20.0


def steady(ctx: Context) -> dict[str, object]:
    """Return the replicas' throughput knobs: about 500 items/s each (100/s in smoke).

    Slow enough that faults land while work is in flight, cheap enough in CPU for two
    cores: 5 items per request (1 in smoke) and 5 requests in flight of 50 ms each. In
    smoke mode the session timeout is pinned at 10 s, whatever the default: a member that
    dies or leaves without a word holds the group up no longer (smoke runs check
    correctness, the full runs measure the defaults).
    """
    knobs: dict[str, object] = {"items_per_request": ctx.count(5, 1), "max_in_flight": 5}
    if ctx.smoke:
        knobs |= {"session_timeout_s": 10, "heartbeat_interval_s": 1}
    return knobs


def stall_timeout(ctx: Context) -> float:
    """Return the stall timeout a partition is judged stuck by, in this mode."""
    return ctx.size(FULL_STALL_TIMEOUT_S, SMOKE_STALL_TIMEOUT_S)


def backlog(ctx: Context, full: int, smoke: int, partitions: int) -> Backlog:
    """Return a backlog of ``full`` (or ``smoke``) items, two batches per partition."""
    return Backlog(ctx.count(full, smoke), batches=2 * partitions, chunk_size=CHUNK)


def start_group(trial: Trial, members: list[str]) -> list[Incarnation]:
    """Start ``members``; wait until every partition has an owner and every member some."""
    started = [trial.start(m) for m in members]

    def working() -> bool:
        return trial.all_owned() and all(i.owned for i in started[: trial.partitions])

    trial.wait_for(working, 120, "every partition owned, every replica working")
    return started


def finished_entry(
    trial: Trial,
    title: str,
    figures: dict[str, Any],
    goals: list[Goal],
    must: list[Goal] | None = None,
) -> dict[str, Any]:
    """Return the report entry: common must-hold figures and goals plus the scenario's."""
    return trial.entry(title, figures, [*goals, *LOG_GOALS], [*MUST_HOLD, *(must or [])])


def wind_down(
    ctx: Context,
    trial: Trial,
    began: float,
    deadline: tuple[float, float] = (300, 90),
    before_stop: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """End the chaos, wait, stop; return the common figures plus the membership ones.

    ``longest_no_progress_s`` and ``longest_ownerless_s`` run from ``began`` to the end
    of the wait: the aftermath of the faults counts too. ``before_stop`` runs once every
    result is in and before the replicas are stopped; its figures join the others.
    """
    trial.chaos_over()
    trial.settle(ctx.size(*deadline), grace_s=ctx.size(15, 10))
    ended = trial.settled_at or time.time()
    extra = before_stop() if before_stop is not None else {}
    figures = trial.finish() | extra
    partitions = range(trial.partitions)
    found = fig.stalls(trial.samples, partitions)
    return figures | {
        "longest_no_progress_s": _round(fig.longest_stall(found, began, ended)),
        "longest_ownerless_s": _round(fig.ownerless(trial.samples, partitions, began, ended)),
    }


# --- replicas killed and restarted ---------------------------------------------------------


def sigkill_storm(ctx: Context) -> dict[str, Any]:
    """SIGKILL a random replica of three every 2-4 s and restart it; six partitions."""
    partitions = 6
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
        work = Backlog(
            ctx.count(100_000, 4_000), batches=60 if not ctx.smoke else 12, chunk_size=CHUNK
        )
        trial.submit(work)
        trial.begin()
        start_group(trial, ["r0", "r1", "r2"])
        rng = ctx.rng()
        kills: list[tuple[float, str, set[int]]] = []
        commit_interval = float(ctx.overrides.get("commit_interval_s", 0.5))
        answered_last_interval = at_risk = 0
        control(server, "/_control/config", {"track_items": True})  # to count repeated calls
        storm_ends = time.monotonic() + ctx.size(120, 12)
        while time.monotonic() < storm_ends and not trial.complete():
            trial.sleep(rng.uniform(2.0, 4.0))
            live = trial.fleet.live()
            if trial.complete() or not live:
                break
            victim = rng.choice(live)
            trial.fleet.refresh()
            owned = set(victim.owned)
            # Items the victim answered in its last commit interval: what item-level
            # resume may repeat at most (results not yet acknowledged or committed).
            before = scrape(victim, "batch_runner_items_total")
            trial.sleep(commit_interval)
            after = scrape(victim, "batch_runner_items_total")
            at_risk += scrape(victim, "batch_runner_uncommitted_items") or 0
            killed_at = time.time()
            trial.fleet.kill(victim)
            last_interval = (
                max(0, after - before) if after is not None and before is not None else 0
            )
            answered_last_interval += last_interval
            trial.note("SIGKILL", incarnation=victim.name, owned=sorted(owned),
                       answered_last_interval=last_interval)  # fmt: skip
            kills.append((killed_at, victim.name, owned))
            trial.start(victim.member)
        figures = wind_down(ctx, trial, trial.begun, deadline=(420, 120))
        samples = trial.samples
        per_kill: list[dict[str, Any]] = []
        times: list[float | None] = []  # per kill that left lag behind: until all progressed
        for killed_at, name, owned in kills:
            recovered = fig.recovery(samples, owned, killed_at)
            if recovered:
                times.append(fig.slowest(recovered))
            per_kill.append(
                {
                    "t": round(killed_at - trial.begun, 3),
                    "incarnation": name,
                    "partitions_with_lag": sorted(recovered),
                    "recovery_s": fig.slowest(recovered),
                    "per_partition_s": {str(p): v for p, v in recovered.items()},
                },
            )
        figures |= {
            "kills": len(kills),
            "kills_measured": len(times),
            "kills_unrecovered": sum(t is None for t in times),
            "kill_recovery_median_s": _round(fig.median(times)),
            "kill_recovery_max_s": _round(max((t for t in times if t is not None), default=None)),
        }
        figures |= repeat_figures(server, figures, answered_last_interval, at_risk)
        trial.detail["kills"] = per_kill
        return finished_entry(
            trial,
            f"SIGKILL storm: 3 replicas, 6 partitions, {work.items:,} items, a kill every 2-4 s",
            figures,
            [
                Goal("kill_recovery_median_s", "<=", 15.0),
                Goal("duplicate_results", "<=", 0),
                Goal("repeated_calls_per_last_interval", "<=", 1.0),
                Goal("duplicates_per_last_interval", "<=", 1.0),
            ],
        )


def scrape(incarnation: Incarnation, metric: str) -> int | None:
    """Return one of the replica's metrics (None when it does not answer)."""
    incarnation.refresh()
    if incarnation.ops_port is None:
        return None
    answer = http_get(incarnation.ops_port, "/metrics")
    value = metric_value(answer[1], metric) if answer else None
    return None if value is None else int(value)


def repeat_figures(
    server: Server, figures: dict[str, Any], answered_last_interval: int, at_risk: int
) -> dict[str, Any]:
    """Return how many inference calls were repeated, and their ratios to the kills' risk.

    Repeated calls count items: every request for an item after its first (the storm
    injects no model faults, so every repeat comes from a kill). The risk: the items the
    victims published in the last commit interval before their kills, summed; and the
    items they had published since their last successful commit (commits refused
    during a rebalance make that longer than one interval).
    """
    stats = server_stats(server) or {}
    attempts: dict[str, int] = stats.get("attempts") or {}
    repeated = sum(n - 1 for n in attempts.values() if n > 1)
    duplicates = figures.get("duplicate_results")
    risk = answered_last_interval or None
    return {
        "repeated_item_calls": repeated if attempts else None,
        "answered_last_interval": answered_last_interval,
        "repeated_calls_per_last_interval": _ratio(repeated, risk) if attempts else None,
        "duplicates_per_last_interval": _ratio(duplicates, risk),
        "uncommitted_at_kills": at_risk,
        "repeated_calls_per_uncommitted": _ratio(repeated, at_risk) if attempts else None,
        "duplicates_per_uncommitted": _ratio(duplicates, at_risk),
    }


def _ratio(value: object, per: int | None) -> float | None:
    if not isinstance(value, int | float) or not per:
        return None
    return round(value / per, 3)


def sigterm_rolling(ctx: Context) -> dict[str, Any]:
    """Restart replicas one by one: a new one joins, then an old one gets SIGTERM; 5 s apart."""
    partitions = 6
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
        work = backlog(ctx, 100_000, 4_000, partitions)
        trial.submit(work)
        trial.begin()
        current = start_group(trial, ["r0", "r1", "r2"])
        restarts = ctx.count(6, 3)
        rolling_began = time.time()
        for n in range(restarts):
            trial.sleep(5.0)
            if trial.complete():
                break
            new = trial.start(f"r{3 + n}")  # a Deployment's new pod: a new name
            trial.wait_for(partial(trial.ready, new), 60, f"{new.name} ready")
            old = current.pop(0)
            trial.fleet.terminate([old], 45.0)
            trial.note("SIGTERM", incarnation=old.name, exit_code=old.exit_code)
            current.append(new)
        figures = wind_down(ctx, trial, rolling_began)
        figures["restarts"] = sum(a["what"] == "SIGTERM" for a in trial.actions)
        return finished_entry(
            trial,
            f"SIGTERM rolling restart: 3 replicas, 6 partitions, {work.items:,} items, "
            f"{restarts} restarts 5 s apart",
            figures,
            [
                Goal("duplicate_results", "<=", 0),
                Goal("longest_no_progress_s", "<=", 10.0),
                Goal("longest_ownerless_s", "<=", 10.0),
            ],
        )


def scaling(ctx: Context) -> dict[str, Any]:
    """Scale 1 → 4 → 2 → 3 replicas, a step every 5 s, SIGTERM on the way down."""
    partitions = 6
    steps = [1, 4, 2, 3]
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
        work = backlog(ctx, 40_000, 4_000, partitions)
        trial.submit(work)
        trial.begin()
        running = start_group(trial, ["r0"])
        scaling_began = time.time()
        names = iter(f"r{n}" for n in range(1, 100))
        for target in steps[1:]:
            trial.sleep(5.0)
            while len(running) < target:
                running.append(trial.start(next(names)))
            if len(running) > target:
                leaving, running = running[target:], running[:target]
                for incarnation in leaving:  # the newest go first, as a Deployment does
                    trial.fleet.signal(incarnation, signal.SIGTERM)
                    trial.note("SIGTERM", incarnation=incarnation.name)
            trial.note("scaled", replicas=target)
        trial.sleep(5.0)
        figures = wind_down(ctx, trial, scaling_began)
        return finished_entry(
            trial,
            f"scaling 1→4→2→3 replicas every 5 s (SIGTERM down), 6 partitions, "
            f"{work.items:,} items",
            figures,
            [
                Goal("longest_ownerless_s", "<=", 10.0),
                Goal("longest_no_progress_s", "<=", 10.0),
                Goal("duplicate_results", "<=", 0),
            ],
        )


# --- the broker as the fault -----------------------------------------------------------------


def broker_kill(ctx: Context) -> dict[str, Any]:
    """SIGKILL the broker mid-run and start it again on the same data directory and ports."""
    return _broker_fault(ctx, "kill")


def broker_stop(ctx: Context) -> dict[str, Any]:
    """SIGSTOP the broker for 20 s (6 s in smoke), then SIGCONT."""
    return _broker_fault(ctx, "stop")


def broker_outage(ctx: Context) -> dict[str, Any]:
    """Stop the broker cleanly, keep it down 60 s (8 s in smoke), start it again."""
    return _broker_fault(ctx, "outage")


def _broker_fault(ctx: Context, kind: str) -> dict[str, Any]:
    partitions = 4
    down_s = {"kill": 0.0, "stop": ctx.size(20, 6), "outage": ctx.size(60, 8)}[kind]
    with (
        ctx.own_broker() as broker,
        inference_server(LATENCY_MS) as server,
        Trial(
            ctx,
            server,
            bootstrap=broker.bootstrap_servers,
            partitions=partitions,
            settings=steady(ctx),
            stall_timeout_s=stall_timeout(ctx),
        ) as trial,
    ):
        work = backlog(ctx, 60_000, 3_000, partitions)
        trial.submit(work)
        trial.begin()
        start_group(trial, ["r0", "r1"])
        trial.wait_for(lambda: trial.committed_total() > 0, 60, "a first commit")
        trial.sleep(ctx.size(5, 1))
        down = time.time()
        if kind == "kill":
            broker.kill()
            trial.note("broker SIGKILL")
            broker.start()
        elif kind == "stop":
            broker.suspend()
            trial.note("broker SIGSTOP")
            time.sleep(down_s)
            broker.resume()
        else:
            broker.stop()
            trial.note("broker stopped (SIGTERM)")
            time.sleep(down_s)
            broker.start()
        up = time.time()
        trial.note("broker back")
        trial.window(down, up, f"broker {kind}")
        trial.chaos_over()
        trial.settle(ctx.size(300, 90), grace_s=ctx.size(15, 10))
        figures = trial.finish()
        samples = trial.samples
        recovered = fig.recovery(samples, range(partitions), up, baseline_at=down)
        answered = next((s.t for s in samples if s.t >= up and s.committed is not None), None)
        during = [i for i in trial.fleet.incarnations if i.started <= down]
        figures |= {
            "broker_down_s": round(up - down, 1),
            "offsets_answered_after_s": _round(answered - up if answered else None),
            "resume_first_partition_s": _round(
                min((v for v in recovered.values() if v is not None), default=None)
            ),
            "resume_all_partitions_s": _round(fig.slowest(recovered)),
            "error_lines_per_replica_s": _round(
                max((fig.rate(i.error_times, down, up) for i in during), default=0.0)
            ),
        }
        trial.detail["resume_per_partition_s"] = {str(p): v for p, v in recovered.items()}
        titles = {
            "kill": "broker SIGKILL, restarted at once on the same data dir and ports",
            "stop": f"broker SIGSTOP for {down_s:.0f} s, then SIGCONT",
            "outage": f"broker down {down_s:.0f} s (clean stop, same data dir on return)",
        }
        goals = [Goal("resume_all_partitions_s", "<=", 10.0)]
        if kind == "outage":
            goals.append(Goal("error_lines_per_replica_s", "<=", 1.0))
        return finished_entry(
            trial,
            f"{titles[kind]}: 2 replicas, 4 partitions, {work.items:,} items",
            figures,
            goals,
        )


# --- the model as the fault ---------------------------------------------------------------------


def inference_faults(ctx: Context) -> dict[str, Any]:
    """503s and connection resets on 40% of requests, then the model down 60 s (6 s smoke)."""
    partitions = 4
    port = free_port()
    down_s = ctx.size(60, 6)
    with contextlib.ExitStack() as first_server, contextlib.ExitStack() as second_server:
        server = first_server.enter_context(inference_server(LATENCY_MS, port=port))
        # In smoke mode retries back off at most 5 s (30 s by default), to end sooner.
        settings = {**steady(ctx), **({"backoff_max_s": 5.0} if ctx.smoke else {})}
        with Trial(
            ctx,
            server,
            partitions=partitions,
            settings=settings,
            stall_timeout_s=stall_timeout(ctx),
        ) as trial:
            work = backlog(ctx, 20_000, 2_000, partitions)
            trial.submit(work)
            trial.begin()
            start_group(trial, ["r0", "r1"])
            pattern: list[int | str] = [
                503,
                "ok",
                "reset",
                "ok",
                "ok",
                503,
                "ok",
                "ok",
                "reset",
                "ok",
            ]
            script = pattern * ctx.count(300, 30)
            control(server, "/_control/reset", {})  # counters from zero, for the script
            control(server, "/_control/config", {"script": script})
            trial.note("scripted faults", requests=len(script), faulty=int(0.4 * len(script)))
            trial.wait_for(
                lambda: server_requests(server) >= len(script), ctx.size(120, 60), "the script used"
            )
            served = server_stats(server)
            down = time.time()
            first_server.close()
            trial.note("model stopped")
            time.sleep(down_s)
            second_server.enter_context(inference_server(LATENCY_MS, port=port))
            up = time.time()
            trial.note("model back")
            trial.window(down, up, "model down")
            trial.chaos_over()
            trial.settle(ctx.size(300, 120), grace_s=ctx.size(15, 10))
            figures = trial.finish()
            recovered = fig.recovery(trial.samples, range(partitions), up, baseline_at=down)
            during = [i for i in trial.fleet.incarnations if i.started <= down]
            answers = served.get("answers", {}) if served else {}
            figures |= {
                "scripted_503": int(answers.get("503", 0)),
                "scripted_resets": int(answers.get("reset", 0)),
                "model_down_s": round(up - down, 1),
                "resume_first_partition_s": _round(
                    min((v for v in recovered.values() if v is not None), default=None)
                ),
                "resume_all_partitions_s": _round(fig.slowest(recovered)),
                "error_lines_per_replica_s": _round(
                    max((fig.rate(i.error_times, down, up) for i in during), default=0.0)
                ),
            }
            return finished_entry(
                trial,
                f"model faults: 503s and resets on 40% of {len(script):,} requests, then the "
                f"model down {down_s:.0f} s; 2 replicas, 4 partitions, {work.items:,} items",
                figures,
                [
                    Goal("error_results", "==", 0),
                    Goal("resume_all_partitions_s", "<=", 10.0),
                    Goal("error_lines_per_replica_s", "<=", 1.0),
                ],
            )


def poison(ctx: Context) -> dict[str, Any]:
    """Poison interleaved with good chunks: items the model refuses, invalid messages."""
    partitions = 3
    groups = ctx.count(20, 3)
    with (
        inference_server(5.0) as server,
        Trial(
            ctx,
            server,
            partitions=partitions,
            settings={"items_per_request": 5, "max_in_flight": 8},
            stall_timeout_s=stall_timeout(ctx),
        ) as trial,
    ):
        control(server, "/_control/config", {"poison_status": 422})  # refused, not retried
        messages = poison_messages(trial, partitions, groups)
        trial.begin()
        start_group(trial, ["r0", "r1"])
        producer = Producer({"bootstrap.servers": trial.bootstrap, "enable.idempotence": True})
        for partition, key, value in messages:
            producer.produce(trial.topics.requests, key=key, value=value, partition=partition)
        if producer.flush(60) != 0:
            raise RuntimeError("the poison workload was not acknowledged")
        trial.note("submitted", messages=len(messages))
        trial.chaos_over()
        trial.settle(ctx.size(300, 90), grace_s=ctx.size(15, 10))
        figures = trial.finish()
        figures |= {
            "dead_letters": topic_records(trial.bootstrap, trial.topics.dlq, 1),
            "expected_dead_letters": trial.expected.dead_letters,
            "expected_error_items": len(trial.expected.error_items),
        }
        figures["dead_letters_missing_or_extra"] = abs(
            figures["dead_letters"] - figures["expected_dead_letters"]
        )
        return finished_entry(
            trial,
            f"poison: {groups} rounds per partition of a good chunk, two chunks with items the "
            "model refuses (422), at 1 and 10 items per request (bisected), a non-JSON and a "
            "schema-invalid message; "
            "2 replicas, 3 partitions",
            figures,
            [Goal("duplicate_results", "<=", 0)],
            [
                Goal("dead_letters_missing_or_extra", "==", 0),
                Goal("unexpected_error_items", "==", 0),
                Goal("expected_error_items_without_error", "==", 0),
            ],
        )


def poison_messages(trial: Trial, partitions: int, groups: int) -> list[tuple[int, str, bytes]]:
    """Return the poison workload's messages and register what each should produce."""
    expected = trial.expected
    out: list[tuple[int, str, bytes]] = []
    size = 50
    bad = {7, 23, 41}
    for group in range(groups):
        for p in range(partitions):
            good, spoiled = f"good-{p}-{group}", f"poison-{p}-{group}"
            # A poisoned batch at one item per request, and one at ten per request: its
            # refused units are bisected, so only the refused items get an error.
            batches = ((good, False, 1), (spoiled, True, 1), (f"sub-{p}-{group}", True, 10))
            for batch, poisoned, per_request in batches:
                items = [
                    orjson.dumps(
                        {"i": k, "fail": "permanent"} if poisoned and k in bad else {"i": k}
                    )
                    for k in range(size)
                ]
                value = encode_batch_request(
                    batch_id=batch,
                    items=items,
                    start=0,
                    total=size,
                    chunk=0,
                    chunks=1,
                    items_per_request=per_request,
                )
                expected.add_batch(batch, size, 1, p)
                out.append((p, batch, value))
                if poisoned:
                    expected.error_items.update((batch, k) for k in bad)
            out.append((p, f"junk-{p}-{group}", b"{not json"))
            schema_invalid = orjson.dumps({"schema": "batch-request/v1", "batch_id": "x"})
            out.append((p, f"junk-{p}-{group}", schema_invalid))
            expected.dead_letters += 2
    return out


def slow_model(ctx: Context) -> dict[str, Any]:
    """Serve with a 3 s model (1.5 s in smoke), max.poll.interval.ms at 7 s, a full buffer."""
    partitions = 2
    latency = ctx.size(3000, 1500)
    settings: dict[str, object] = {
        "items_per_request": 1,
        "max_in_flight": 8,
        "max_buffered_items": 20,
        "session_timeout_s": 6,
        "heartbeat_interval_s": 1,
        "kafka_max_poll_interval_ms": 7000,
    }
    with (
        inference_server(latency) as server,
        Trial(
            ctx,
            server,
            partitions=partitions,
            settings=settings,
            stall_timeout_s=stall_timeout(ctx),
        ) as trial,
    ):
        work = Backlog(ctx.count(240, 100), batches=2, chunk_size=10)
        trial.submit(work)
        trial.begin()
        start_group(trial, ["r0", "r1"])
        stable = time.time()
        trial.chaos_over()
        trial.settle(ctx.size(300, 120), grace_s=ctx.size(15, 10))
        settled = trial.settled_at or time.time()
        figures = trial.finish()
        later = [  # revocations between the group's settling and the harness's final stop
            change
            for i in trial.fleet.incarnations
            for change in i.changes
            if stable < change[0] < settled and change[1] in {"revoked", "lost"}
        ]
        figures |= {
            "rebalances_while_working": len(later),
            "max_poll_exceeded_lines": sum(
                i.log_summary()["max_poll_lines"] for i in trial.fleet.incarnations
            ),
        }
        return finished_entry(
            trial,
            f"slow model ({latency / 1000:.1f} s a request) with max.poll.interval.ms 7 s, "
            f"a 20-item buffer; 2 replicas, 2 partitions, {work.items} items",
            figures,
            [
                Goal("rebalances_while_working", "==", 0),
                Goal("partitions_lost_events", "==", 0),
                Goal("duplicate_results", "<=", 0),
            ],
        )


def pause_reassign(ctx: Context) -> dict[str, Any]:
    """Move a paused partition to a new replica and back; see whether it resumes.

    Replica A has a backlog and a full buffer (both partitions paused). B joins and takes
    partition X; X gets more work; A finishes its other partition; B gets SIGTERM and X
    goes back to A. The stall timeout is short (10 s) so /healthz can be watched.
    """
    partitions = 2
    timeout = 10.0
    settings: dict[str, object] = {
        "items_per_request": 1,
        "max_in_flight": 2,
        "max_buffered_items": 100,
        "stall_timeout_s": timeout,
    }
    with (
        inference_server(ctx.size(100, 50)) as server,
        Trial(
            ctx,
            server,
            partitions=partitions,
            settings=settings,
            stall_timeout_s=timeout,
            scrape_metrics=True,
        ) as trial,
    ):
        trial.submit(Backlog(400, batches=2, chunk_size=20))
        trial.begin()
        (a,) = start_group(trial, ["a"])
        trial.wait_for(lambda: paused(a) == partitions, 60, "A paused both partitions")
        trial.note("A paused", paused=paused(a))
        b = trial.start("b")
        trial.wait_for(lambda: bool(b.owned), 60, "B owns a partition")
        trial.fleet.refresh()
        moved = min(b.owned) if b.owned else 0
        kept = 1 - moved
        trial.note("B took", partition=moved)
        extra = Backlog(
            ctx.count(400, 200), batches=1, chunk_size=20, prefix="x", first_partition=moved
        )
        trial.submit(extra)
        trial.wait_for(lambda: lag(trial, kept) == 0, 180, f"A done with partition {kept}")
        trial.wait_for(lambda: (lag(trial, moved) or 0) > 0, 30, "lag left on the moved partition")
        trial.fleet.terminate([b], 45.0)
        back = time.time()
        trial.note("SIGTERM", incarnation=b.name, exit_code=b.exit_code)
        trial.chaos_over()
        trial.settle(ctx.size(300, 120), grace_s=ctx.size(20, 15))
        figures = trial.finish()
        samples = trial.samples
        after = [s for s in fig.stalls(samples, [moved]) if s.end >= back and s.seconds > 0]
        worst = max(after, key=lambda s: s.seconds, default=None)
        figures |= {
            "moved_partition": moved,
            "progress_after_return_s": _round(fig.progress_after(samples, moved, back)),
            "stall_after_return_s": _round(worst.seconds if worst else 0.0),
            "stall_resolved": worst.resolved if worst else True,
            "healthz_503_after_stall_s": _round(
                fig.first_status(samples, a.name, worst.start) if worst else None
            ),
            "stalled_metric_max": max((s.stalled.get(a.name) or 0.0 for s in samples), default=0.0),
        }
        figures["stall_detected_by_healthz"] = figures["healthz_503_after_stall_s"] is not None
        return finished_entry(
            trial,
            "pause, then reassign: A full and paused, B takes a partition and gets SIGTERM, "
            "the partition returns to A (stall timeout 10 s)",
            figures,
            [
                Goal("stall_after_return_s", "<=", timeout),
                Goal("duplicate_results", "<=", 0),
            ],
        )


# --- helpers -------------------------------------------------------------------------------------


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def control(server: Server, path: str, body: dict[str, Any]) -> None:
    """POST ``body`` to one of the test server's ``/_control`` routes."""
    port = int(server.url.rsplit(":", 1)[1])
    answer = http_post(port, path, orjson.dumps(body))
    if answer is None or answer[0] != 200:
        raise RuntimeError(f"the test server refused {path}: {answer}")


def server_stats(server: Server) -> dict[str, Any] | None:
    """Return the test server's counters (``/_control/stats``), or None if it does not answer."""
    port = int(server.url.rsplit(":", 1)[1])
    answer = http_get(port, "/_control/stats")
    if answer is None or answer[0] != 200:
        return None
    stats: dict[str, Any] = orjson.loads(answer[1])
    return stats


def server_requests(server: Server) -> int:
    """Return how many requests the test server has answered."""
    stats = server_stats(server)
    return int(stats["requests"]) if stats else 0


def paused(incarnation: Incarnation) -> int:
    """Return the replica's ``batch_runner_paused_partitions`` (0 when it does not answer)."""
    incarnation.refresh()
    if incarnation.ops_port is None:
        return 0
    answer = http_get(incarnation.ops_port, "/metrics")
    value = metric_value(answer[1], "batch_runner_paused_partitions") if answer else None
    return int(value or 0)


def lag(trial: Trial, partition: int) -> int | None:
    """Return the partition's lag in the latest sample (None before one has offsets)."""
    sample = trial.sampler.latest() if trial.sampler else None
    return sample.lag(partition) if sample else None


def topic_records(bootstrap: str, topic: str, partitions: int) -> int:
    """Return how many records ``topic`` holds (its end offsets, summed)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    return sum(end_offsets(admin, topic, partitions, 10.0).values())


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "sigkill-storm": sigkill_storm,
    "sigterm-rolling": sigterm_rolling,
    "scaling": scaling,
    "broker-kill": broker_kill,
    "broker-stop": broker_stop,
    "broker-outage": broker_outage,
    "inference-faults": inference_faults,
    "poison": poison,
    "slow-model": slow_model,
    "pause-reassign": pause_reassign,
    "job-status": job_status,
    "rolling-upgrade": rolling_upgrade,
}
