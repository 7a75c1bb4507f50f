"""Instructions per item under callgrind: a replica, or one of its floors, load-independent.

``python -m bench.callgrind replica|bare|bare-kafka --items 8000 --short 1000
[--per-request 100]``
runs the process twice under ``valgrind --tool=callgrind`` (all its threads, from start
to exit), over ``--items`` and over ``--short`` items, and prints the difference of the
two instruction totals divided by the difference of the items: start-up and shutdown
cancel out. Instruction counts do not depend on what else the machine does, so they
compare two versions of the code where CPU seconds on a shared machine cannot.

``replica``: a backlog of chunks of ``--chunk-size`` items is produced beforehand to
fresh topics of ``KAFKA_BOOTSTRAP_SERVERS``; one replica (``python -m consumer``, C =
``--concurrency``) serves it against the test inference server (``--latency-ms``) and is
stopped (SIGTERM) once every result and summary has been read back; librdkafka's
statistics are off unless ``--statistics`` (they are timed, not per item). ``bare``: ``python
-m bench.baselines bare`` over the same items. ``bare-kafka``: ``python -m
bench.kafka_loop`` (the sub-batched scenario's bare Kafka floor) over a backlog of the
same items, produced beforehand to fresh topics as for ``replica``: compare ``replica``
with the sum of ``bare`` and ``bare-kafka`` at the same ``--per-request``. ``--keep DIR``
keeps the callgrind files (read them with ``callgrind_annotate``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.kafka_io import Backlog, ResultReader, Topics, make_topics, produce
from bench.procs import Replica, Server, inference_server, wait_assigned
from bench.scenarios import replica_env

VALGRIND = ["valgrind", "--tool=callgrind", "--dump-instr=no"]
_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def instructions(out_file: Path) -> int:
    """Return the instructions a callgrind output file counts (all its parts)."""
    total = 0
    for path in out_file.parent.glob(out_file.name + "*"):
        found = _TOTALS.search(path.read_bytes())
        if found is not None:
            total += int(found.group(1))
    return total


def run_replica(  # noqa: PLR0913 - a measurement's knobs
    bootstrap: str,
    server: Server,
    items: int,
    *,
    per_request: int,
    chunk_size: int,
    concurrency: int,
    out_file: Path,
    statistics: bool = False,
) -> None:
    """Serve ``items`` through one replica under callgrind, writing ``out_file``.

    Without ``statistics`` librdkafka emits none (``statistics.interval.ms`` 0): they come
    every 5 s of wall time, and a run slowed down 50 times by callgrind, more on a busy
    machine, would count thousands of instructions per item for them.
    """
    topics, backlog = fresh_backlog(
        bootstrap, items, per_request=per_request, chunk_size=chunk_size
    )
    env = {
        **replica_env(bootstrap, topics, server, {}, max_in_flight=concurrency),
        **({} if statistics else {"KAFKA_STATISTICS_INTERVAL_MS": "0"}),
        "BATCH_RUNNER_GROUP_ID": f"callgrind-{out_file.stem}",
    }
    log = out_file.with_suffix(".log")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*VALGRIND, f"--callgrind-out-file={out_file}", sys.executable, "-m", "consumer"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    replica = Replica(process, log)
    reader = ResultReader(bootstrap, topics, backlog)
    try:
        wait_assigned([replica], topics.request_partitions(), 600)
        reader.wait(3600)
    finally:
        reader.close()
        process.terminate()
        process.wait(600)


def run_bare(url: str, items: int, *, per_request: int, concurrency: int, out_file: Path) -> None:
    """Run the bare aiohttp loop over ``items`` under callgrind, writing ``out_file``."""
    run_module(
        out_file,
        "bench.baselines",
        "bare",
        f"--url={url}",
        f"--items={items}",
        f"--concurrency={concurrency}",
        f"--per-request={per_request}",
    )


def run_bare_kafka(
    bootstrap: str, items: int, *, per_request: int, chunk_size: int, out_file: Path
) -> None:
    """Run the bare Kafka loop over ``items`` (a fresh backlog) under callgrind."""
    topics, _ = fresh_backlog(bootstrap, items, per_request=per_request, chunk_size=chunk_size)
    run_module(
        out_file,
        "bench.kafka_loop",
        f"--bootstrap={bootstrap}",
        f"--requests={topics.requests}",
        f"--results={topics.results}",
        f"--items={items}",
    )


def fresh_backlog(
    bootstrap: str, items: int, *, per_request: int, chunk_size: int
) -> tuple[Topics, Backlog]:
    """Produce a backlog of ``items`` to fresh topics; return the topics and the backlog.

    At one item per request the chunks carry no ``items_per_request`` (the consumer's
    default, as scenario 1 asks for it).
    """
    topics = make_topics(bootstrap, 1)
    backlog = Backlog(
        items, chunk_size=chunk_size, items_per_request=per_request if per_request > 1 else None
    )
    produce(bootstrap, topics, backlog)
    return topics, backlog


def run_module(out_file: Path, module: str, *args: str) -> None:
    """Run ``python -m module args`` under callgrind to its end, writing ``out_file``."""
    subprocess.run(
        [*VALGRIND, f"--callgrind-out-file={out_file}", sys.executable, "-m", module, *args],
        check=True,
        capture_output=True,
        timeout=3600,
    )


def main(argv: list[str] | None = None) -> int:
    """Measure instructions per item; print them as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.callgrind", description=__doc__)
    parser.add_argument("mode", choices=["replica", "bare", "bare-kafka"])
    parser.add_argument("--items", type=int, default=8000)
    parser.add_argument("--short", type=int, default=1000)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--statistics",
        action="store_true",
        help="keep librdkafka's statistics every 5 s (counted per item as the run lasts)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the callgrind files here")
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if args.mode != "bare" and not bootstrap:
        parser.error("KAFKA_BOOTSTRAP_SERVERS must name a broker")
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        totals: dict[int, int] = {}
        with inference_server(args.latency_ms) as server:
            for items in (args.items, args.short):
                out_file = where / f"{args.mode}-{items}-{int(time.time())}.out"
                if args.mode == "replica":
                    run_replica(
                        bootstrap,
                        server,
                        items,
                        per_request=args.per_request,
                        chunk_size=args.chunk_size,
                        concurrency=args.concurrency,
                        out_file=out_file,
                        statistics=args.statistics,
                    )
                elif args.mode == "bare-kafka":
                    run_bare_kafka(
                        bootstrap,
                        items,
                        per_request=args.per_request,
                        chunk_size=args.chunk_size,
                        out_file=out_file,
                    )
                else:
                    run_bare(
                        server.v1_endpoint,
                        items,
                        per_request=args.per_request,
                        concurrency=args.concurrency,
                        out_file=out_file,
                    )
                totals[items] = instructions(out_file)
        per_item = (totals[args.items] - totals[args.short]) / (args.items - args.short)
        figures = {
            "mode": args.mode,
            "per_request": args.per_request,
            "totals": {str(k): v for k, v in totals.items()},
            "instructions_per_item": round(per_item),
        }
        sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
