"""Scenario 7's runs one by one, with each replica's limit cuts kept: a diagnostic.

``python -m bench.adaptive_trace --runs reject:adaptive,reject:tuned --repeat 2 --logs DIR``
runs the named timeline runs of :mod:`bench.adaptive` (``overload:label``, labels as in
:data:`bench.adaptive.RUNS`; ``alone:adaptive`` and ``alone:fixed`` are the one-replica
pair, adaptive up to 256 beside a fixed 48, reject mode, steady only) in turn, ``--repeat``
times alternating, and prints each run's figures and the 1-minute load average at its start
(``--short``: the timeline ends where the outage would begin, at 80 s). With ``--debug`` the
replicas log at debug level, which includes a line per cut of the adaptive limit (its cause:
429/503, timeout or a queue; the limit before and after): the run's replica logs stay under
``--logs`` and :func:`cuts_of` reads them into a per-replica time series, printed as counts
per cause and per phase and written as ``cuts.json`` beside them. Figures of a ``--debug``
run are not the scenario's (the extra lines cost the replicas CPU).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson

from bench import adaptive
from bench.scenarios import Context
from tools.localkafka.cluster import kafka_cluster

# The one-replica pair of the scenario: label -> (--concurrency, --max-in-flight).
ALONE = adaptive.ALONE
PHASES = (("steady", "warmup_s", "halve_at"), ("halved", "halve_at", "restore_at"),
          ("restored", "restore_at", "outage_at"))  # fmt: skip


def cuts_of(log: Path, start: float) -> list[dict[str, Any]]:
    """Return a replica log's limit cuts (t from ``start``, cause, was, limit) and samples.

    A sample (the limit at most every 0.25 s while it moves) has the cause ``sample``.
    """
    cuts = []
    for line in log.read_text(errors="replace").splitlines():
        if '"concurrency limit cut"' in line:
            event = orjson.loads(line)
            cuts.append({
                "t": round(event["t"] - start, 3),
                "cause": event["cause"],
                "was": event["was"],
                "limit": event["limit"],
                "in_flight": event["in_flight"],
                "no_load_ms": event["no_load_ms"],
            })  # fmt: skip
        elif '"concurrency limit now"' in line:
            event = orjson.loads(line)
            cuts.append({
                "t": round(event["t"] - start, 3),
                "cause": "sample",
                "limit": event["limit"],
                "in_flight": event["in_flight"],
            })  # fmt: skip
    return cuts


def summary(cuts: list[dict[str, Any]], line: adaptive.Timeline) -> dict[str, Any]:
    """Return per phase: cuts by cause, and the limit's mean peak and trough at cuts."""
    out: dict[str, Any] = {}
    for name, begin, end in PHASES:
        lo, hi = getattr(line, begin), getattr(line, end)
        samples = [c["limit"] for c in cuts if lo <= c["t"] < hi and c["cause"] == "sample"]
        inside = [c for c in cuts if lo <= c["t"] < hi and c["cause"] != "sample"]
        causes = collections.Counter(c["cause"] for c in inside)
        out[name] = {
            "cuts": dict(causes),
            "per_s": round(len(inside) / max(hi - lo, 1e-9), 2),
            "mean_limit": round(sum(samples) / len(samples), 1) if samples else None,
            "mean_was": round(sum(c["was"] for c in inside) / len(inside), 1) if inside else None,
            "mean_to": round(sum(c["limit"] for c in inside) / len(inside), 1) if inside else None,
        }
    return out


def main() -> None:
    """Run the named runs, alternating; print figures and, with ``--debug``, the cuts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default="reject:adaptive,reject:tuned")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--short", action="store_true", help="end before the outage (at 80 s)")
    args = parser.parse_args()
    limits = {label: (mode, limit) for label, mode, limit in adaptive.RUNS}
    runs = [tuple(run.split(":")) for run in args.runs.split(",")]
    line = adaptive.Timeline.sized(smoke=False)
    alone = adaptive.Timeline.steady(smoke=False)
    if args.short:
        line = dataclasses.replace(line, outage_at=line.outage_at, end_at=line.outage_at)
    overrides = {"log_level": "DEBUG"} if args.debug else {}
    with kafka_cluster() as bootstrap:
        for n in range(args.repeat):
            for overload, label in runs:
                workdir = args.logs / f"{n}-{overload}-{label}"
                workdir.mkdir(parents=True, exist_ok=True)
                ctx = Context(bootstrap, workdir, smoke=False, overrides=overrides)
                began = time.monotonic()
                if overload == "alone":
                    mode, limit = ALONE[label]
                    figures = adaptive.timeline_run(
                        ctx, alone, overload="reject", mode=mode, replicas=1,
                        max_in_flight=limit, events=False,
                    )  # fmt: skip
                else:
                    mode, limit = limits[label]
                    figures = adaptive.timeline_run(
                        ctx, line, overload=overload, mode=mode, max_in_flight=limit
                    )
                start = figures.get("start_monotonic", began)
                shown = {k: v for k, v in figures.items() if k != "series"}
                print(f"== {n} {overload} {label}: {orjson.dumps(shown).decode()}", flush=True)
                replicas = {
                    log.name: cuts_of(log, start) for log in sorted(workdir.glob("consumer-*.log"))
                }
                if args.debug:
                    for name, cuts in replicas.items():
                        print(f"   {name}: {orjson.dumps(summary(cuts, line)).decode()}")
                (workdir / "cuts.json").write_bytes(orjson.dumps({"figures": figures, **replicas}))


if __name__ == "__main__":
    main()
