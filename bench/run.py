"""Benchmarks: throughput, CPU per item, latency, memory and scaling, side by side in one run.

``python -m bench.run --scenario NAME|all [--smoke] [--out FILE]`` (or ``make bench``).
Every scenario runs the real pipeline: a Kafka broker (``KAFKA_BOOTSTRAP_SERVERS`` or a
local one), the test inference server as its own process (``python -m tools.testserver``)
and consumer replicas as ``python -m consumer`` processes; and, for comparison, a bare
aiohttp client loop against the same server without Kafka. Figures are ratios measured in
the same run, because this machine is shared and noisy. ``--smoke`` runs tiny sizes (it
must not rot; CI runs it) and its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import requests
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas import encode_batch_request
from tools.kafka_env import kafka_cluster
from tools.processes import terminate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

TICKS = os.sysconf("SC_CLK_TCK")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --- processes ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (its own rusage, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    """Return the process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def test_server(latency_ms: float) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``python -m tools.testserver`` and yield its base URL and process."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.testserver",
            "--port",
            "0",
            "--latency-ms",
            str(latency_ms),
            "--no-track-items",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    if process.stdout is None:
        raise RuntimeError("the test server's stdout is not a pipe")
    url = process.stdout.readline().decode().strip()
    try:
        yield url, process
    finally:
        terminate(process)


@dataclass
class Topics:
    """One scenario's topics."""

    requests: str
    results: str
    dlq: str


def make_topics(bootstrap: str, partitions: int) -> Topics:
    """Create fresh topics for one measurement."""
    run = uuid.uuid4().hex[:8]
    topics = Topics(f"bench-{run}-req", f"bench-{run}-res", f"bench-{run}-dlq")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(topics.requests, num_partitions=partitions, replication_factor=-1),
            NewTopic(topics.results, num_partitions=partitions, replication_factor=-1),
            NewTopic(topics.dlq, num_partitions=1, replication_factor=-1),
        ],
    )
    for future in futures.values():
        future.result(timeout=30)
    return topics


@dataclass
class Replica:
    """A consumer process and its log."""

    process: subprocess.Popen[bytes]
    log: Path

    def wait_joined(self, timeout_s: float = 60) -> None:
        """Wait until the replica logged its partition assignment."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if b"partitions assigned" in self.log.read_bytes():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"consumer exited:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError("the consumer did not join its group")


def start_replica(
    bootstrap: str,
    topics: Topics,
    url: str,
    group: str,
    workdir: Path,
    **settings: str,
) -> Replica:
    """Start one ``python -m consumer`` against the test server's v1 route."""
    log = workdir / f"consumer-{uuid.uuid4().hex[:6]}.log"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BATCH_RUNNER_ENDPOINT": f"{url}/v1/models/bench:predict",
        "BATCH_RUNNER_PROTOCOL": "v1",
        "BATCH_RUNNER_GROUP_ID": group,
        "BATCH_RUNNER_REQUESTS_TOPIC": topics.requests,
        "BATCH_RUNNER_RESULTS_TOPIC": topics.results,
        "BATCH_RUNNER_DLQ_TOPIC": topics.dlq,
        "BATCH_RUNNER_METRICS_PORT": "-1",
        "BATCH_RUNNER_LOG_FORMAT": "json",
        **{f"BATCH_RUNNER_{k.upper()}": v for k, v in settings.items()},
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(process, log)


# --- data ---------------------------------------------------------------------------------


def produce(  # noqa: PLR0913 - the shape of a backlog
    bootstrap: str,
    topic: str,
    items: int,
    *,
    batches: int = 1,
    chunk_size: int = 1000,
    items_per_request: int | None = None,
) -> int:
    """Produce ``items`` identity items split over ``batches`` batch ids; return the chunks."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        },
    )
    per_batch = -(-items // batches)
    chunks = 0
    index = 0
    for number in range(batches):
        batch_id = f"b{number}"
        total = min(per_batch, items - index)
        if total <= 0:
            break
        parts = -(-total // chunk_size)
        for part in range(parts):
            start = part * chunk_size
            count = min(chunk_size, total - start)
            values = [b'{"i":%d}' % (index + start + k) for k in range(count)]
            value = encode_batch_request(
                batch_id=batch_id,
                items=values,
                start=start,
                total=total,
                chunk=part,
                chunks=parts,
                items_per_request=items_per_request,
            )
            while True:
                try:
                    producer.produce(topic, key=batch_id, value=value)
                    break
                except BufferError:
                    producer.poll(0.05)
            chunks += 1
        index += total
    if producer.flush(120) != 0:
        raise RuntimeError("the backlog was not acknowledged in 120 s")
    return chunks


def wait_results(bootstrap: str, topic: str, expected: int, timeout_s: float) -> float:
    """Read ``topic`` until ``expected`` records exist; return the last one's timestamp (s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        },
    )
    consumer.subscribe([topic])
    seen = 0
    last_ms = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen} of {expected} records after {timeout_s:.0f}s")
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001
                        raise RuntimeError(err.str())
                    continue
                seen += 1
                last_ms = max(last_ms, msg.timestamp()[1])
    finally:
        consumer.close()
    return last_ms / 1000


# --- the bare client loops ----------------------------------------------------------------


def bare_aiohttp(url: str, items: int, concurrency: int, per_request: int = 1) -> dict[str, float]:
    """Run a plain aiohttp loop: ``concurrency`` workers POSTing v1 requests, no Kafka."""

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            queue = list(range(0, items, per_request))

            async def worker() -> None:
                while queue:
                    first = queue.pop()
                    count = min(per_request, items - first)
                    body = (
                        b'{"instances":['
                        + b",".join(b'{"i":%d}' % i for i in range(first, first + count))
                        + b"]}"
                    )
                    async with session.post(f"{url}/v1/models/bench:predict", data=body) as answer:
                        orjson.loads(await answer.read())

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    return _timed(lambda: asyncio.run(run()), items)


def naive_threads(url: str, items: int, concurrency: int) -> dict[str, float]:
    """Run the original example's way: a thread pool calling ``requests.post`` per item."""
    local = __import__("threading").local()

    def call(i: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        answer = session.post(
            f"{url}/v1/models/bench:predict", json={"instances": [{"i": i}]}, timeout=30
        )
        answer.raise_for_status()

    def run() -> None:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(call, range(items)))

    return _timed(run, items)


def _timed(run: Callable[[], None], items: int) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "items_per_s": items / elapsed,
        "cpu_us_per_item": cpu / items * 1e6,
        "seconds": elapsed,
    }


# --- scenarios ----------------------------------------------------------------------------


@dataclass
class Context:
    """What every scenario gets."""

    bootstrap: str
    workdir: Path
    smoke: bool
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def size(self, full: int, smoke: int) -> int:
        """Return the size to use in this mode."""
        return smoke if self.smoke else full


def pipeline_run(  # noqa: PLR0913 - a measurement's knobs
    ctx: Context,
    url: str,
    *,
    items: int,
    partitions: int = 1,
    replicas: int = 1,
    batches: int = 1,
    chunk_size: int = 1000,
    items_per_request: int | None = None,
    preload: bool = False,
    **settings: str,
) -> dict[str, float]:
    """Run items through real replicas; return items/s, consumer CPU per item, peak RSS.

    With ``preload`` the backlog is produced before the replicas start and the clock starts
    when they do; otherwise the replicas join first and the clock starts at the first
    produce. The clock stops at the broker timestamp of the last result record.
    """
    topics = make_topics(ctx.bootstrap, partitions)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    chunks = 0
    if preload:
        chunks = produce(
            ctx.bootstrap,
            topics.requests,
            items,
            batches=batches,
            chunk_size=chunk_size,
            items_per_request=items_per_request,
        )
    started = time.time()
    fleet = [
        start_replica(ctx.bootstrap, topics, url, group, ctx.workdir, **settings)
        for _ in range(replicas)
    ]
    try:
        for replica in fleet:
            replica.wait_joined()
        cpu_before = sum(cpu_seconds(r.process.pid) for r in fleet)
        if not preload:
            started = time.time()
            chunks = produce(
                ctx.bootstrap,
                topics.requests,
                items,
                batches=batches,
                chunk_size=chunk_size,
                items_per_request=items_per_request,
            )
        last = wait_results(ctx.bootstrap, topics.results, items + chunks, timeout_s=900)
        cpu = sum(cpu_seconds(r.process.pid) for r in fleet) - cpu_before
        rss = max(peak_rss_mb(r.process.pid) for r in fleet)
    finally:
        for replica in fleet:
            terminate(replica.process)
    elapsed = max(last - started, 1e-6)
    return {
        "items": items,
        "seconds": round(elapsed, 3),
        "items_per_s": items / elapsed,
        "consumer_cpu_us_per_item": cpu / items * 1e6,
        "peak_rss_mb": rss,
    }


def concurrency_efficiency(ctx: Context) -> dict[str, Any]:
    """Scenario 1: one item per request, L = 20 ms, C = 64: items/s ÷ (C / L)."""
    latency_ms, concurrency = 20.0, 64
    items = ctx.size(50_000, 600)
    ideal = concurrency / (latency_ms / 1000)
    with test_server(latency_ms) as (url, _):
        ours = pipeline_run(ctx, url, items=items, chunk_size=500, max_in_flight=str(concurrency))
        bare = bare_aiohttp(url, items, concurrency)
    return {
        "items": items,
        "ideal_items_per_s": ideal,
        "pipeline_items_per_s": ours["items_per_s"],
        "pipeline_efficiency": ours["items_per_s"] / ideal,
        "bare_aiohttp_items_per_s": bare["items_per_s"],
        "bare_aiohttp_efficiency": bare["items_per_s"] / ideal,
        "pipeline_consumer_cpu_us_per_item": ours["consumer_cpu_us_per_item"],
        "bare_aiohttp_cpu_us_per_item": bare["cpu_us_per_item"],
        "goal": "pipeline_efficiency >= 0.90",
    }


def versus_naive(ctx: Context) -> dict[str, Any]:
    """Scenario 2: the same items through the pipeline and through a thread pool of requests."""
    latency_ms, concurrency = 20.0, 64
    items = ctx.size(20_000, 300)
    with test_server(latency_ms) as (url, _):
        ours = pipeline_run(ctx, url, items=items, chunk_size=500, max_in_flight=str(concurrency))
        naive = naive_threads(url, items, concurrency)
        bare = bare_aiohttp(url, items, concurrency)
    return {
        "items": items,
        "pipeline_items_per_s": ours["items_per_s"],
        "naive_items_per_s": naive["items_per_s"],
        "bare_aiohttp_items_per_s": bare["items_per_s"],
        "speedup_vs_naive": ours["items_per_s"] / naive["items_per_s"],
        "pipeline_cpu_s_per_1000": ours["consumer_cpu_us_per_item"] / 1000,
        "naive_cpu_s_per_1000": naive["cpu_us_per_item"] / 1000,
        "cpu_ratio_vs_naive": ours["consumer_cpu_us_per_item"] / naive["cpu_us_per_item"],
        "goal": "speedup_vs_naive >= 3.0 and cpu_ratio_vs_naive <= 0.25",
    }


def sub_batched(ctx: Context) -> dict[str, Any]:
    """Scenario 3: 100 items per request, L = 5 ms, a million items."""
    items = ctx.size(int(os.environ.get("BENCH_SUB_BATCHED_ITEMS", "1000000")), 5_000)
    with test_server(5.0) as (url, _):
        ours = pipeline_run(
            ctx,
            url,
            items=items,
            chunk_size=1000,
            items_per_request=100,
            preload=True,
            max_items_per_request="1000",
            max_in_flight="64",
        )
        bare = bare_aiohttp(url, ctx.size(200_000, 2_000), 64, per_request=100)
    return {
        "items": items,
        "pipeline_items_per_s": ours["items_per_s"],
        "pipeline_consumer_cpu_us_per_item": ours["consumer_cpu_us_per_item"],
        "bare_aiohttp_items_per_s": bare["items_per_s"],
        "bare_aiohttp_cpu_us_per_item": bare["cpu_us_per_item"],
        "goal": "pipeline_items_per_s >= 100000",
    }


def small_batch_latency(ctx: Context) -> dict[str, Any]:
    """Scenario 4: the original three-item batch on a warm pipeline, submit → last result."""
    rounds = ctx.size(200, 10)
    with test_server(0.0) as (url, _):
        topics = make_topics(ctx.bootstrap, 1)
        replica = start_replica(
            ctx.bootstrap, topics, url, f"bench-{uuid.uuid4().hex[:8]}", ctx.workdir
        )
        reader = Consumer(
            {
                "bootstrap.servers": ctx.bootstrap,
                "group.id": f"bench-latency-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 1,
            },
        )
        producer = Producer(
            {"bootstrap.servers": ctx.bootstrap, "linger.ms": 0, "enable.idempotence": True}
        )
        try:
            replica.wait_joined()
            reader.subscribe([topics.results])
            reader.consume(num_messages=1, timeout=3)  # join before the clock starts
            iris = [
                b'{"sepal_length":5.2,"sepal_width":3.6,"petal_length":1.5,"petal_width":0.3}'
            ] * 3
            samples = []
            for n in range(rounds + 5):
                value = encode_batch_request(
                    batch_id=f"l{n}", items=iris, start=0, total=3, chunk=0, chunks=1
                )
                started = time.perf_counter()
                producer.produce(topics.requests, key=f"l{n}", value=value)
                producer.flush(10)
                seen = 0
                while seen < 4:  # three results and the summary
                    # consume() waits for all it asks for: ask for exactly what is missing
                    got = reader.consume(num_messages=4 - seen, timeout=1)
                    seen += sum(1 for m in got if m.error() is None)
                if n >= 5:  # the first rounds warm caches and connections
                    samples.append((time.perf_counter() - started) * 1000)
        finally:
            reader.close()
            terminate(replica.process)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(0.99 * len(samples)))]
    return {
        "rounds": rounds,
        "p50_ms": statistics.median(samples),
        "p99_ms": p99,
        "goal": "p50_ms <= 15 and p99_ms <= 50",
    }


def bounded_memory(ctx: Context) -> dict[str, Any]:
    """Scenario 5: consumer peak RSS with a large backlog ÷ with a small one."""
    big, small = ctx.size(1_000_000, 20_000), ctx.size(10_000, 1_000)
    with test_server(1.0) as (url, _):
        runs = {
            label: pipeline_run(
                ctx,
                url,
                items=count,
                chunk_size=1000,
                items_per_request=100,
                preload=True,
                max_items_per_request="1000",
            )
            for label, count in (("small", small), ("big", big))
        }
    return {
        "small_backlog_items": small,
        "big_backlog_items": big,
        "small_peak_rss_mb": runs["small"]["peak_rss_mb"],
        "big_peak_rss_mb": runs["big"]["peak_rss_mb"],
        "rss_ratio": runs["big"]["peak_rss_mb"] / runs["small"]["peak_rss_mb"],
        "goal": "rss_ratio <= 1.2",
    }


def replica_scaling(ctx: Context) -> dict[str, Any]:
    """Scenario 6: X(2) ÷ (2 · X(1)) on 4 partitions, C = 32 each, L = 20 ms."""
    items = ctx.size(20_000, 400)
    with test_server(20.0) as (url, _):
        one = pipeline_run(
            ctx, url, items=items, partitions=4, batches=40, chunk_size=250, max_in_flight="32"
        )
        two = pipeline_run(
            ctx,
            url,
            items=items,
            partitions=4,
            batches=40,
            chunk_size=250,
            replicas=2,
            max_in_flight="32",
        )
        bare = bare_aiohttp(url, items, 64)
    return {
        "items": items,
        "one_replica_items_per_s": one["items_per_s"],
        "two_replicas_items_per_s": two["items_per_s"],
        "scaling_efficiency": two["items_per_s"] / (2 * one["items_per_s"]),
        "bare_aiohttp_c64_items_per_s": bare["items_per_s"],
        "goal": "scaling_efficiency >= 0.9",
    }


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "concurrency": concurrency_efficiency,
    "naive": versus_naive,
    "sub-batched": sub_batched,
    "latency": small_batch_latency,
    "memory": bounded_memory,
    "scaling": replica_scaling,
}


def machine() -> dict[str, Any]:
    """Describe the machine the figures come from."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
    }


def run(names: list[str], *, smoke: bool, out: Path | None) -> dict[str, Any]:
    """Run the named scenarios; print a table; write the JSON report to ``out``."""
    report: dict[str, Any] = {"machine": machine(), "smoke": smoke, "scenarios": {}}
    with kafka_cluster() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        ctx = Context(bootstrap, Path(tmp), smoke)
        for name in names:
            print(f"== {name}", flush=True)
            figures = SCENARIOS[name](ctx)
            report["scenarios"][name] = figures
            for key, value in figures.items():
                shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
                print(f"   {key:<36} {shown}", flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="all", choices=["all", *SCENARIOS])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, figures meaningless")
    parser.add_argument("--out", type=Path, help="JSON report path")


def _run(args: argparse.Namespace) -> int:
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    run(names, smoke=args.smoke, out=args.out)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the ``batch-runner`` parser."""
    parser = subparsers.add_parser("bench", help="run the benchmarks", description=__doc__)
    _arguments(parser)
    parser.set_defaults(handler=_run)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.run``."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    _arguments(parser)
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
