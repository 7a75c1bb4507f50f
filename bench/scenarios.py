"""The benchmark scenarios, each measured beside a baseline in the same run.

Every scenario runs the real pipeline: a Kafka broker, the test inference server as a
process of its own (``python -m tools.testservers.inference``), consumer replicas as ``python -m
consumer`` processes, and a reader of the results topic in the harness. The comparison
clients (:mod:`bench.baselines`) run as processes of their own against the same server.

A pipeline run's clock starts at the first produce (the replicas have joined their group
and the harness's producer is connected before) or, for a backlog produced beforehand,
when the replicas got their partitions; it stops when the harness has read the last
result record and chunk summary back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.adaptive import adaptive_concurrency
from bench.baselines import IRIS, WARMUP_ROUNDS, percentile
from bench.exactly_once import exactly_once_cost
from bench.fairness import poison_isolation, priority_share, small_beside_big
from bench.jobs import jobs_cost
from bench.kafka_io import (
    Backlog,
    ResultReader,
    Topics,
    backlog_producer,
    make_topics,
    produce,
)
from bench.peer_run import PeerProcess, peer_available, produce_items
from bench.procs import CpuMeter, Server, inference_server, peak_rss_mib, start_replica, stop_all
from bench.procs import wait_assigned as wait_replicas_assigned
from consumer import launch
from schemas import encode_batch_request

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable
    from pathlib import Path

    from bench.procs import Replica

RUN_TIMEOUT_S = 600.0


@dataclass
class Context:
    """What every scenario gets: the cluster, a scratch directory, the mode."""

    bootstrap: str
    workdir: Path
    smoke: bool
    profile: str | None = None  # "cprofile" or "sample": wrap every replica
    profile_dir: Path | None = None
    scenario: str = ""
    overrides: dict[str, str] = field(default_factory=dict)  # consumer settings for every run
    lean_workers: int = (
        0  # > 0: bench.lean_server in that many processes, not tools.testservers.inference
    )

    def server(self, latency_ms: float, *options: str) -> contextlib.AbstractContextManager[Server]:
        """Return the inference server of this run, as a context manager.

        ``options`` go to the test server's command line (``--poison-status 422``).
        """
        return inference_server(latency_ms, lean_workers=self.lean_workers, options=options)

    @property
    def loop(self) -> str:
        """The replicas' event loop (``--set event_loop=...``); the bare loops run on it too."""
        return self.overrides.get("event_loop", "uvloop")

    def size(self, full: int, smoke: int) -> int:
        """Return the size to use in this mode."""
        return smoke if self.smoke else full

    def wrapper(self, label: str) -> list[str]:
        """Return the interpreter arguments that put a replica under the profiler."""
        if self.profile is None or self.profile_dir is None:
            return []
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        path = self.profile_dir / f"{self.scenario}-{label}-{uuid.uuid4().hex[:4]}"
        if self.profile == "cprofile":
            return ["-m", "cProfile", "-o", f"{path}.prof"]
        return ["-m", "bench.sampler", "--out", str(path)]

    def consumer_env(self, topics: Topics, server: Server, **settings: object) -> dict[str, str]:
        """Return the environment of a replica serving ``topics`` against ``server``."""
        return replica_env(self.bootstrap, topics, server, self.overrides, **settings)


def replica_env(
    bootstrap: str,
    topics: Topics,
    server: Server,
    overrides: dict[str, str],
    **settings: object,
) -> dict[str, str]:
    """Return the environment of a replica serving ``topics`` against ``server``.

    ``settings`` (``max_in_flight=8``) become ``BATCH_RUNNER_*`` variables; ``overrides``
    (from ``--set``, ``kafka_linger_ms`` as ``KAFKA_LINGER_MS``) win over them.
    """
    # A fixed limit unless the scenario says otherwise: the scenarios measure the pipeline
    # at a given C beside baselines of the same C (scenario 7 compares the two limits).
    defaults = {
        "concurrency": "fixed",
        "endpoint": server.v1_endpoint,
        "protocol": "v1",
        "metrics_port": -1,
        "log_format": "json",
    }
    return {
        **_inherited_env(),
        **launch.replica_env(bootstrap, topics, **{**defaults, **settings}),
        **{launch.env_name(k): v for k, v in overrides.items()},
    }


def _inherited_env() -> dict[str, str]:
    """Return the harness's environment minus settings a replica must not inherit."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BATCH_RUNNER_", "KAFKA_")) or k == "KAFKA_BOOTSTRAP_SERVERS"
    }


# --- measurements -------------------------------------------------------------------------


def pipeline_run(  # noqa: PLR0913 - a measurement's knobs
    ctx: Context,
    server: Server,
    backlog: Backlog,
    *,
    label: str,
    partitions: int = 1,
    replicas: int = 1,
    preload: bool = False,
    **settings: object,
) -> dict[str, float]:
    """Run ``backlog`` through ``replicas`` consumer processes; return the figures.

    Items/s over the clock described in the module docstring; consumer, server and
    harness CPU per item over the same span; the machine's busy cores; the replicas'
    peak RSS; the error results counted from the chunk summaries.
    """
    topics = make_topics(ctx.bootstrap, partitions)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**ctx.consumer_env(topics, server, **settings), "BATCH_RUNNER_GROUP_ID": group}
    fleet: list[Replica] = []
    reader: ResultReader | None = None
    try:
        # The clock starts at the first produce: the producer is made and connected before.
        feeder = None if preload else backlog_producer(ctx.bootstrap, topics)
        if preload:
            produce(ctx.bootstrap, topics, backlog)
        reader = ResultReader(ctx.bootstrap, topics, backlog)
        fleet = [
            start_replica(env, ctx.workdir, ctx.wrapper(f"{label}-{n}")) for n in range(replicas)
        ]
        assigned_at = wait_replicas_assigned(fleet, topics.request_partitions(), 120)
        meter = CpuMeter({"consumer": [r.process.pid for r in fleet], "server": server.pids()})
        started = time.time()
        if feeder is None:
            started = assigned_at
        else:
            produce(ctx.bootstrap, topics, backlog, feeder)
        reader.wait(RUN_TIMEOUT_S)
        used = meter.read()
        rss = max(peak_rss_mib(r.process.pid) for r in fleet)
    finally:
        if reader is not None:
            reader.close()
        stop_all(fleet)
    finished = reader.finished_wall or time.time()
    elapsed = max(finished - started, 1e-6)
    per_item = 1e6 / backlog.items
    return {
        "items": backlog.items,
        "seconds": round(elapsed, 3),
        "items_per_s": backlog.items / elapsed,
        "consumer_cpu_us_per_item": used["consumer_cpu_s"] * per_item,
        "server_cpu_us_per_item": used["server_cpu_s"] * per_item,
        "harness_cpu_us_per_item": used["harness_cpu_s"] * per_item,
        "machine_busy_cores": used["machine_busy_cores"],
        "peak_rss_mib": rss,
        "item_errors": reader.item_errors,
    }


def baseline(server: Server, mode: str, **options: object) -> dict[str, float]:
    """Run ``python -m bench.baselines MODE`` against ``server``; return its figures."""
    args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.baselines",
            mode,
            f"--url={server.v1_endpoint}",
            f"--server-pids={','.join(map(str, server.pids()))}",
            *args,
        ],
        capture_output=True,
        check=False,
        timeout=RUN_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"baseline {mode} failed:\n{done.stderr.decode()[-3000:]}")
    figures: dict[str, float] = orjson.loads(done.stdout)
    return figures


# --- scenarios ----------------------------------------------------------------------------


@dataclass
class Goal:
    """A figure's goal: ``value OP target``."""

    figure: str
    op: str  # ">=", "<=" or "=="
    target: float

    def check(self, figures: dict[str, Any]) -> dict[str, Any]:
        """Return the goal with whether it is met (None: the figure was not measured)."""
        raw = figures[self.figure]
        met: bool | None = None
        if raw is not None:
            value = float(raw)
            met = {
                ">=": value >= self.target,
                "<=": value <= self.target,
                "==": value == self.target,
            }[self.op]
        return {"figure": self.figure, "op": self.op, "target": self.target, "met": met}


def result(
    title: str,
    figures: dict[str, Any],
    goals: list[Goal],
    runs: dict[str, Any],
    beside: str,
) -> dict[str, Any]:
    """Assemble a scenario's report entry."""
    return {
        "title": title,
        "figures": figures,
        "goals": [goal.check(figures) for goal in goals],
        "beside": beside,
        "runs": runs,
    }


def concurrency_efficiency(ctx: Context) -> dict[str, Any]:
    """Scenario 1: one item per request, L = 20 ms, C = 64: items/s ÷ (C / L)."""
    latency_ms, concurrency = 20.0, 64
    items = ctx.size(50_000, 600)
    ideal = concurrency / (latency_ms / 1000)
    with ctx.server(latency_ms) as server:
        server_procs = len(server.pids())
        ours = pipeline_run(
            ctx, server, Backlog(items, chunk_size=500), label="c64", max_in_flight=concurrency
        )
        bare = baseline(server, "bare", loop=ctx.loop, items=items, concurrency=concurrency)
    figures = {
        "items": items,
        "ideal_items_per_s": ideal,
        "items_per_s": ours["items_per_s"],
        "efficiency": ours["items_per_s"] / ideal,
        "consumer_cpu_us_per_item": ours["consumer_cpu_us_per_item"],
        "bare_items_per_s": bare["items_per_s"],
        "bare_efficiency": bare["items_per_s"] / ideal,
        "bare_cpu_us_per_item": bare["cpu_us_per_item"],
        "pipeline_vs_bare": ours["items_per_s"] / bare["items_per_s"],
        "cpu_vs_bare": ours["consumer_cpu_us_per_item"] / bare["cpu_us_per_item"],
        "server_cpu_us_per_request": bare["server_cpu_us_per_item"],
        "server_bound_efficiency": _server_bound(latency_ms, concurrency, bare, server_procs),
        "item_errors": ours["item_errors"],
    }
    beside = (
        f"bare aiohttp {figures['bare_efficiency']:.2f} of C/L "
        f"({bare['items_per_s']:,.0f} items/s, {bare['cpu_us_per_item']:.0f} µs CPU/item); "
        f"pipeline = {figures['pipeline_vs_bare']:.2f} of bare, "
        f"{figures['cpu_vs_bare']:.2f}x its CPU/item; the server used "
        f"{figures['server_cpu_us_per_request']:.0f} µs CPU/request (if every wave of C "
        f"requests were answered serially: {figures['server_bound_efficiency']:.2f})"
    )
    return result(
        f"1 concurrency efficiency (1 item/request, L=20 ms, C=64, {items:,} items)",
        figures,
        [
            Goal("efficiency", ">=", 0.90),
            Goal("pipeline_vs_bare", ">=", 0.95),
            Goal("cpu_vs_bare", "<=", 1.2),
        ],
        {"pipeline": ours, "bare_aiohttp": bare},
        beside,
    )


def versus_naive(ctx: Context) -> dict[str, Any]:
    """Scenario 2: the same items through the pipeline and through a thread pool of requests."""
    latency_ms, concurrency = 20.0, 64
    items = ctx.size(20_000, 300)
    with ctx.server(latency_ms) as server:
        ours = pipeline_run(
            ctx, server, Backlog(items, chunk_size=500), label="c64", max_in_flight=concurrency
        )
        naive = baseline(server, "naive", loop=ctx.loop, items=items, concurrency=concurrency)
        bare = baseline(server, "bare", loop=ctx.loop, items=items, concurrency=concurrency)
    figures = {
        "items": items,
        "items_per_s": ours["items_per_s"],
        "naive_items_per_s": naive["items_per_s"],
        "bare_items_per_s": bare["items_per_s"],
        "speedup_vs_naive": ours["items_per_s"] / naive["items_per_s"],
        "bare_speedup_vs_naive": bare["items_per_s"] / naive["items_per_s"],
        "consumer_cpu_s_per_1000": ours["consumer_cpu_us_per_item"] / 1000,
        "naive_cpu_s_per_1000": naive["cpu_us_per_item"] / 1000,
        "bare_cpu_s_per_1000": bare["cpu_us_per_item"] / 1000,
        "cpu_ratio_vs_naive": ours["consumer_cpu_us_per_item"] / naive["cpu_us_per_item"],
        "bare_cpu_ratio_vs_naive": bare["cpu_us_per_item"] / naive["cpu_us_per_item"],
        "item_errors": ours["item_errors"],
    }
    beside = (
        f"naive {naive['items_per_s']:,.0f} items/s, {figures['naive_cpu_s_per_1000']:.3f} "
        f"CPU s/1000; bare aiohttp {bare['items_per_s']:,.0f} items/s "
        f"({figures['bare_speedup_vs_naive']:.2f}x naive, CPU "
        f"{figures['bare_cpu_ratio_vs_naive']:.2f} of naive)"
    )
    return result(
        f"2 versus the naive thread pool (C=64, L=20 ms, {items:,} items)",
        figures,
        [Goal("speedup_vs_naive", ">=", 3.0), Goal("cpu_ratio_vs_naive", "<=", 0.25)],
        {"pipeline": ours, "naive": naive, "bare_aiohttp": bare},
        beside,
    )


def sub_batched(ctx: Context) -> dict[str, Any]:
    """Scenario 3: 100 items per request, L = 5 ms, a million items, end to end."""
    items = ctx.size(1_000_000, 5_000)
    with ctx.server(5.0) as server:
        ours = pipeline_run(
            ctx,
            server,
            Backlog(items, chunk_size=1000, items_per_request=100),
            label="ipr100",
            max_in_flight=64,
        )
        bare = baseline(server, "bare", loop=ctx.loop, items=items, concurrency=64, per_request=100)
    kafka = kafka_baseline(ctx, Backlog(items, chunk_size=1000, items_per_request=100))
    floors = bare["cpu_us_per_item"] + kafka["cpu_us_per_item"]
    figures = {
        "items": items,
        "items_per_s": ours["items_per_s"],
        "consumer_cpu_us_per_item": ours["consumer_cpu_us_per_item"],
        "server_cpu_us_per_item": ours["server_cpu_us_per_item"],
        "harness_cpu_us_per_item": ours["harness_cpu_us_per_item"],
        "machine_busy_cores": ours["machine_busy_cores"],
        "bare_items_per_s": bare["items_per_s"],
        "bare_cpu_us_per_item": bare["cpu_us_per_item"],
        "bare_kafka_items_per_s": kafka["items_per_s"],
        "bare_kafka_cpu_us_per_item": kafka["cpu_us_per_item"],
        "cpu_vs_floors": ours["consumer_cpu_us_per_item"] / floors,
        "item_errors": ours["item_errors"],
    }
    beside = (
        f"bare aiohttp {bare['items_per_s']:,.0f} items/s, {bare['cpu_us_per_item']:.1f} µs "
        f"CPU/item; bare Kafka loop {kafka['items_per_s']:,.0f} items/s, "
        f"{kafka['cpu_us_per_item']:.1f} µs CPU/item (consumer = "
        f"{figures['cpu_vs_floors']:.2f}x their sum); machine busy "
        f"{ours['machine_busy_cores']:.2f} of {_cores()} cores during the pipeline run"
    )
    return result(
        f"3 sub-batched (100 items/request, L=5 ms, {items:,} items, first produce → last read)",
        figures,
        [
            Goal("items_per_s", ">=", 100_000),
            Goal("consumer_cpu_us_per_item", "<=", 10.0),
            Goal("cpu_vs_floors", "<=", 1.3),
        ],
        {"pipeline": ours, "bare_aiohttp": bare, "bare_kafka": kafka},
        beside,
    )


def kafka_baseline(ctx: Context, backlog: Backlog) -> dict[str, float]:
    """Run ``bench.kafka_loop`` over ``backlog`` (produced first to fresh topics)."""
    topics = make_topics(ctx.bootstrap, 1)
    produce(ctx.bootstrap, topics, backlog)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.kafka_loop",
            f"--bootstrap={ctx.bootstrap}",
            f"--requests={topics.requests}",
            f"--results={topics.results}",
            f"--items={backlog.items}",
        ],
        capture_output=True,
        check=False,
        timeout=RUN_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the bare Kafka loop failed:\n{done.stderr.decode()[-3000:]}")
    figures: dict[str, float] = orjson.loads(done.stdout)
    return figures


def small_batch_latency(ctx: Context) -> dict[str, Any]:
    """Scenario 4: the original three-item batch on a warm pipeline, submit → last result."""
    rounds = ctx.size(200, 10)
    with ctx.server(0.0) as server:
        samples = _latency_rounds(ctx, server, rounds)
        bare = baseline(server, "latency", loop=ctx.loop, rounds=rounds, items=3)
    figures = {
        "rounds": rounds,
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "bare_p50_ms": bare["p50_ms"],
        "bare_p99_ms": bare["p99_ms"],
    }
    beside = (
        f"bare aiohttp (3 concurrent one-item requests): p50 {bare['p50_ms']:.2f} ms, "
        f"p99 {bare['p99_ms']:.2f} ms"
    )
    return result(
        f"4 small-batch latency (3 items, warm, {rounds} rounds, submit → last result read)",
        figures,
        [Goal("p50_ms", "<=", 15.0), Goal("p99_ms", "<=", 50.0)],
        {"pipeline": {"samples_ms": samples}, "bare_aiohttp": bare},
        beside,
    )


def _latency_rounds(ctx: Context, server: Server, rounds: int) -> list[float]:
    """Submit a three-item batch ``rounds`` times (after warm-up); time each to its last record.

    "Submitted" is what ``batch-runner submit`` waits for: the broker acknowledged the
    request. The round ends when its three results and its chunk summary are read.
    """
    topics = make_topics(ctx.bootstrap, 1)
    env = {
        **ctx.consumer_env(topics, server),
        "BATCH_RUNNER_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
    }
    replica = start_replica(env, ctx.workdir, ctx.wrapper("latency"))
    reader = Consumer(
        {
            "bootstrap.servers": ctx.bootstrap,
            "group.id": f"bench-latency-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 1,
        },
    )
    reader.assign([TopicPartition(topics.results, 0, OFFSET_BEGINNING)])
    producer = Producer({"bootstrap.servers": ctx.bootstrap, "linger.ms": 0, "acks": "all"})
    samples = []
    try:
        wait_replicas_assigned([replica], topics.request_partitions(), 120)
        for n in range(rounds + WARMUP_ROUNDS):
            batch_id = f"l{n}"
            value = encode_batch_request(
                batch_id=batch_id, items=[IRIS] * 3, start=0, total=3, chunk=0, chunks=1
            )
            started = time.perf_counter()
            producer.produce(topics.requests, key=batch_id, value=value)
            producer.flush(10)
            _read_records(reader, batch_id.encode(), 4, deadline=time.monotonic() + 30)
            if n >= WARMUP_ROUNDS:
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        reader.close()
        stop_all([replica])
    return samples


def _read_records(reader: Consumer, key: bytes, count: int, deadline: float) -> None:
    seen = 0
    while seen < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{seen} of {count} records for {key!r} before the deadline")
        msg = reader.poll(min(remaining, 1.0))
        if msg is None:
            continue
        if msg.error() is not None:
            raise RuntimeError(f"reading results failed: {msg.error()}")
        if msg.key() == key:
            seen += 1


def bounded_memory(ctx: Context) -> dict[str, Any]:
    """Scenario 5: consumer peak RSS with a large backlog ÷ with a small one."""
    small, big = ctx.size(10_000, 1_000), ctx.size(1_000_000, 20_000)
    runs: dict[str, dict[str, float]] = {}
    with ctx.server(1.0) as server:
        for label, count in (("small", small), ("big", big)):
            backlog = Backlog(count, chunk_size=1000, items_per_request=100)
            runs[label] = pipeline_run(ctx, server, backlog, label=label, preload=True)
            runs[f"bare_{label}"] = baseline(
                server, "bare", loop=ctx.loop, items=count, concurrency=64, per_request=100
            )
    figures = {
        "small_backlog_items": small,
        "big_backlog_items": big,
        "small_peak_rss_mib": runs["small"]["peak_rss_mib"],
        "big_peak_rss_mib": runs["big"]["peak_rss_mib"],
        "rss_ratio": runs["big"]["peak_rss_mib"] / runs["small"]["peak_rss_mib"],
        "big_backlog_drain_items_per_s": runs["big"]["items_per_s"],
        "bare_small_peak_rss_mib": runs["bare_small"]["peak_rss_mib"],
        "bare_big_peak_rss_mib": runs["bare_big"]["peak_rss_mib"],
        "bare_rss_ratio": runs["bare_big"]["peak_rss_mib"] / runs["bare_small"]["peak_rss_mib"],
        "item_errors": runs["small"]["item_errors"] + runs["big"]["item_errors"],
    }
    beside = (
        f"consumer {figures['small_peak_rss_mib']:.0f} → {figures['big_peak_rss_mib']:.0f} "
        f"MiB; bare aiohttp client {figures['bare_small_peak_rss_mib']:.0f} → "
        f"{figures['bare_big_peak_rss_mib']:.0f} MiB ({figures['bare_rss_ratio']:.2f})"
    )
    return result(
        f"5 bounded memory (peak RSS, {big:,} vs {small:,} item backlog)",
        figures,
        [Goal("rss_ratio", "<=", 1.2)],
        runs,
        beside,
    )


def replica_scaling(ctx: Context) -> dict[str, Any]:
    """Scenario 6: X(2) ÷ (2 · X(1)) on 4 partitions, C = 32 each, L = 20 ms."""
    items = ctx.size(20_000, 400)
    backlog = Backlog(items, batches=40, chunk_size=250)
    with ctx.server(20.0) as server:
        one = pipeline_run(
            ctx, server, backlog, label="x1", partitions=4, replicas=1, max_in_flight=32
        )
        two = pipeline_run(
            ctx, server, backlog, label="x2", partitions=4, replicas=2, max_in_flight=32
        )
        bare32 = baseline(server, "bare", loop=ctx.loop, items=items, concurrency=32)
        bare64 = baseline(server, "bare", loop=ctx.loop, items=items, concurrency=64)
    figures = {
        "items": items,
        "one_replica_items_per_s": one["items_per_s"],
        "two_replicas_items_per_s": two["items_per_s"],
        "scaling_efficiency": two["items_per_s"] / (2 * one["items_per_s"]),
        "bare_c32_items_per_s": bare32["items_per_s"],
        "bare_c64_items_per_s": bare64["items_per_s"],
        "bare_scaling_efficiency": bare64["items_per_s"] / (2 * bare32["items_per_s"]),
        "two_replicas_machine_busy_cores": two["machine_busy_cores"],
        "item_errors": one["item_errors"] + two["item_errors"],
    }
    beside = (
        f"bare aiohttp C=32 → C=64: {bare32['items_per_s']:,.0f} → "
        f"{bare64['items_per_s']:,.0f} items/s ({figures['bare_scaling_efficiency']:.2f})"
    )
    return result(
        f"6 replica scaling (1 vs 2 replicas, 4 partitions, C=32 each, L=20 ms, {items:,} items)",
        figures,
        [Goal("scaling_efficiency", ">=", 0.9)],
        {"one_replica": one, "two_replicas": two, "bare_c32": bare32, "bare_c64": bare64},
        beside,
    )


def versus_peer(ctx: Context) -> dict[str, Any]:
    """Scenario 8: Confluent Parallel Consumer (Vert.x), warm, beside the pipeline.

    One item per request (L = 20 ms, C = 64) and 100 items per request (L = 5 ms), each
    side over a backlog produced beforehand: ours from request chunks, the peer's one
    record per item. Ratios are ours ÷ the peer's.
    """
    single, batched = ctx.size(50_000, 1_000), ctx.size(200_000, 2_000)
    reason = peer_available()
    runs: dict[str, Any] = {}
    if reason is None:
        peer = PeerProcess()
        try:
            with ctx.server(20.0) as server:
                runs["pipeline_1"] = pipeline_run(
                    ctx, server, Backlog(single, chunk_size=500), label="peer1",
                    preload=True, max_in_flight=64,
                )  # fmt: skip
                runs["peer_1"] = _peer_runs(ctx, peer, server, single, 1)
                runs["bare_aiohttp_1"] = baseline(
                    server, "bare", loop=ctx.loop, items=single, concurrency=64
                )
            runs["bare_kafka_1"] = kafka_baseline(ctx, Backlog(single, chunk_size=500))
            with ctx.server(5.0) as server:
                runs["pipeline_100"] = pipeline_run(
                    ctx, server, Backlog(batched, chunk_size=1000, items_per_request=100),
                    label="peer100", preload=True, max_in_flight=64,
                )  # fmt: skip
                runs["peer_100"] = _peer_runs(ctx, peer, server, batched, 100)
                runs["bare_aiohttp_100"] = baseline(
                    server, "bare", loop=ctx.loop, items=batched, concurrency=64, per_request=100
                )
            runs["bare_kafka_100"] = kafka_baseline(
                ctx, Backlog(batched, chunk_size=1000, items_per_request=100)
            )
        finally:
            peer.close()
    figures: dict[str, Any] = {"single_items": single, "batched_items": batched}
    for size in ("1", "100"):
        ours, theirs = runs.get(f"pipeline_{size}"), runs.get(f"peer_{size}")
        for name, ours_key, theirs_key in (
            ("items_per_s", "items_per_s", "items_per_s"),
            ("cpu_per_item", "consumer_cpu_us_per_item", "cpu_us_per_item"),
            ("peak_rss", "peak_rss_mib", "peak_rss_mib"),
        ):
            figures[f"{name}_vs_peer_{size}"] = (
                None if ours is None or theirs is None else ours[ours_key] / theirs[theirs_key]
            )
        figures.update(_floors_vs_peer(runs, size))
    figures["item_errors"] = sum(runs[k]["item_errors"] for k in runs if k.startswith("pipe"))
    if reason is not None:
        beside = f"not measured: {reason.splitlines()[0]}"
    else:
        p1, p100 = runs["peer_1"], runs["peer_100"]
        beside = (
            f"Parallel Consumer 0.5.3.2 (Vert.x, unordered, 64 at once, warm): "
            f"{p1['items_per_s']:,.0f} items/s, {p1['cpu_us_per_item']:.0f} µs CPU/item, "
            f"{p1['peak_rss_mib']:.0f} MiB at 1 item/request; {p100['items_per_s']:,.0f} "
            f"items/s, {p100['cpu_us_per_item']:.1f} µs CPU/item at 100. With no cost of "
            f"its own (the bare aiohttp and bare Kafka loops of this run), a pipeline would "
            f"reach {figures['floor_items_per_s_vs_peer_1']:.2f}x the peer's items/s and "
            f"{figures['floor_cpu_per_item_vs_peer_1']:.2f}x its CPU/item at 1 item/request, "
            f"{figures['floor_items_per_s_vs_peer_100']:.2f}x and "
            f"{figures['floor_cpu_per_item_vs_peer_100']:.2f}x at 100"
        )
    return result(
        f"8 versus Parallel Consumer (1 item/request L=20 ms, {single:,} items; "
        f"100/request L=5 ms, {batched:,} items; ours ÷ theirs)",
        figures,
        [
            Goal("items_per_s_vs_peer_1", ">=", 1.5),
            Goal("cpu_per_item_vs_peer_1", "<=", 0.6),
            Goal("peak_rss_vs_peer_1", "<=", 0.3),
            Goal("items_per_s_vs_peer_100", ">=", 5.0),
        ],
        runs,
        beside,
    )


def _floors_vs_peer(runs: dict[str, Any], size: str) -> dict[str, float | None]:
    """Score against the peer a pipeline that cost nothing of its own would get.

    Its items/s cannot (beyond noise) pass the slower of the bare aiohttp loop (the HTTP
    client alone) and the bare Kafka loop (read the chunks, produce a result per item, no
    HTTP); its CPU per item cannot go under their sum. Ratios to the peer's, like ours: a goal the
    floor ratio misses is out of reach for any pipeline on this client stack and machine.
    """
    http, kafka = runs.get(f"bare_aiohttp_{size}"), runs.get(f"bare_kafka_{size}")
    theirs = runs.get(f"peer_{size}")
    if http is None or kafka is None or theirs is None:
        return {
            f"floor_items_per_s_vs_peer_{size}": None,
            f"floor_cpu_per_item_vs_peer_{size}": None,
        }
    fastest = min(http["items_per_s"], kafka["items_per_s"])
    cheapest = http["cpu_us_per_item"] + kafka["cpu_us_per_item"]
    return {
        f"floor_items_per_s_vs_peer_{size}": fastest / theirs["items_per_s"],
        f"floor_cpu_per_item_vs_peer_{size}": cheapest / theirs["cpu_us_per_item"],
    }


def _peer_runs(
    ctx: Context, peer: PeerProcess, server: Server, items: int, per_request: int
) -> dict[str, float]:
    """Warm the peer up on a backlog of its own, then measure it over ``items`` records.

    Timed like the pipeline: from the first batch (the group joined) until the harness
    has read the last result back; CPU from ``/proc`` (all the JVM's threads).
    """
    figures: dict[str, float] = {}
    for count in (max(items // 4, 1), items):  # the first run warms the JVM up
        topics = make_topics(ctx.bootstrap, 1)
        produce_items(ctx.bootstrap, topics.requests, count)
        reader = ResultReader(ctx.bootstrap, topics, Backlog(count), summaries=False)
        try:
            peer.start(ctx.bootstrap, topics, server.v1_endpoint, count, per_request)
            meter = CpuMeter({"peer": [peer.pid]})
            started = time.monotonic()
            reader.wait(RUN_TIMEOUT_S)
            used = meter.read()
            own = peer.finish()
        finally:
            reader.close()
        elapsed = max((reader.finished or time.monotonic()) - started, 1e-6)
        figures = {
            "items": count,
            "seconds": round(elapsed, 3),
            "items_per_s": count / elapsed,
            "cpu_us_per_item": used["peer_cpu_s"] / count * 1e6,
            "machine_busy_cores": used["machine_busy_cores"],
            "peak_rss_mib": own["peak_rss_mib"],
            "own_seconds": own["seconds"],  # its own clock: first batch to last acknowledgement
        }
    return figures


def _server_bound(
    latency_ms: float, concurrency: int, bare: dict[str, float], processes: int
) -> float:
    """Return L ÷ (L + C·s/P): the efficiency a server of P single-loop processes allows.

    Requests that wake from their latency together are answered one after another by
    each server process's event loop, ``s`` seconds of its CPU each: a wave of C requests
    takes about ``L + C·s/P`` instead of ``L``.
    """
    latency_s = latency_ms / 1000
    serial_s = concurrency * bare["server_cpu_us_per_item"] / 1e6 / processes
    return latency_s / (latency_s + serial_s)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "concurrency": concurrency_efficiency,
    "naive": versus_naive,
    "sub-batched": sub_batched,
    "latency": small_batch_latency,
    "memory": bounded_memory,
    "scaling": replica_scaling,
    "adaptive": adaptive_concurrency,
    "peer": versus_peer,
    "poison": poison_isolation,
    "fair-latency": small_beside_big,
    "priorities": priority_share,
    "jobs": jobs_cost,
    "exactly-once": exactly_once_cost,
}
