"""The comparison clients, each run as a process of its own so its CPU and memory are its own.

``python -m bench.baselines MODE --url URL ...`` prints one JSON object of figures:

- ``bare``: a plain aiohttp loop without Kafka, ``--concurrency`` workers POSTing the
  same KServe v1 bodies the consumer sends (``--per-request`` items each) and decoding
  the answers: what an asyncio client gets from this machine and this server.
- ``naive``: the original example's way, a ``ThreadPoolExecutor`` of ``--concurrency``
  threads calling ``requests.post`` once per item (one session per thread).
- ``latency``: ``--rounds`` times, the items of a small batch sent at once (one request
  per item, as the consumer does by default); the time until the last answer.

CPU is this process's user + system time over the measured loop only (``getrusage``),
memory its peak resident set size.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import resource
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson
import requests

from bench.procs import CpuMeter
from consumer.__main__ import loop_factory
from consumer.settings import LOOPS

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

T = TypeVar("T")

WARMUP_ROUNDS = 5
# The original example's first iris row: the small batch of the latency scenario.
IRIS = b'{"sepal_length":5.2,"sepal_width":3.6,"petal_length":1.5,"petal_width":0.3}'


def _body(first: int, count: int) -> bytes:
    return (
        b'{"instances":[' + b",".join(b'{"i":%d}' % i for i in range(first, first + count)) + b"]}"
    )


def _check(answer: bytes, count: int) -> None:
    predictions = orjson.loads(answer)["predictions"]
    if len(predictions) != count:
        raise RuntimeError(f"{len(predictions)} predictions for {count} items")


async def _bare(url: str, items: int, concurrency: int, per_request: int) -> None:
    starts = iter(range(0, items, per_request))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for first in starts:
                count = min(per_request, items - first)
                async with session.post(url, data=_body(first, count)) as answer:
                    answer.raise_for_status()
                    _check(await answer.read(), count)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def bare(  # noqa: PLR0913 - the loop's knobs
    url: str,
    items: int,
    concurrency: int,
    per_request: int = 1,
    server_pids: Sequence[int] = (),
    *,
    loop: str = "uvloop",
) -> dict[str, float]:
    """Run the bare aiohttp loop over ``items`` items; return its figures."""
    run = lambda: _run(_bare(url, items, concurrency, per_request), loop)  # noqa: E731
    return _timed(run, items, server_pids)


def _run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` on the event loop the consumer would use (``uvloop`` or ``asyncio``)."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)


def naive(
    url: str, items: int, concurrency: int, server_pids: Sequence[int] = ()
) -> dict[str, float]:
    """Run the thread pool of ``requests.post`` calls, one per item; return its figures."""
    local = threading.local()

    def call(i: int) -> None:
        session: requests.Session | None = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        answer = session.post(url, json={"instances": [{"i": i}]}, timeout=30)
        answer.raise_for_status()
        _check(answer.content, 1)

    def run() -> None:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            for _ in pool.map(call, range(items)):
                pass

    return _timed(run, items, server_pids)


async def _latency(url: str, rounds: int, items: int) -> list[float]:
    body = b'{"instances":[' + IRIS + b"]}"
    samples = []
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.post(url, data=body) as answer:
                answer.raise_for_status()
                _check(await answer.read(), 1)

        for n in range(rounds + WARMUP_ROUNDS):
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(items)))
            if n >= WARMUP_ROUNDS:
                samples.append((time.perf_counter() - started) * 1000)
    return samples


def latency(url: str, rounds: int, items: int, loop: str = "uvloop") -> dict[str, float]:
    """Time ``rounds`` small batches of ``items`` concurrent one-item requests."""
    samples = _run(_latency(url, rounds, items), loop)
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)}


def percentile(samples: list[float], pct: float) -> float:
    """Return the ``pct`` percentile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def _timed(run: Callable[[], None], items: int, server_pids: Sequence[int]) -> dict[str, float]:
    meter = CpuMeter({"server": server_pids})
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = meter.read()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "items": items,
        "seconds": elapsed,
        "items_per_s": items / elapsed,
        "cpu_us_per_item": cpu / items * 1e6,
        "server_cpu_us_per_item": used["server_cpu_s"] / items * 1e6,
        "machine_busy_cores": used["machine_busy_cores"],
        "peak_rss_mib": after.ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    """Run one baseline and print its figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__)
    parser.add_argument("mode", choices=["bare", "naive", "latency"])
    parser.add_argument("--url", required=True, help="the server's v1 predict URL")
    parser.add_argument("--items", type=int, default=1000, help="items (latency: per batch)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--loop", choices=LOOPS, default="uvloop", help="the event loop")
    parser.add_argument(
        "--server-pids",
        type=lambda text: [int(p) for p in text.split(",") if p],
        default=[],
        help="also count these processes' CPU (comma-separated)",
    )
    args = parser.parse_args(argv)
    if args.mode == "bare":
        figures = bare(
            args.url,
            args.items,
            args.concurrency,
            args.per_request,
            args.server_pids,
            loop=args.loop,
        )
    elif args.mode == "naive":
        figures = naive(args.url, args.items, args.concurrency, args.server_pids)
    else:
        figures = latency(args.url, args.rounds, args.items, args.loop)
    sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
