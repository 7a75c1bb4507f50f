"""Benchmarks: throughput, CPU per item, latency, memory and scaling, side by side in one run.

``python -m bench.run --scenario NAME|all [--smoke] [--out FILE]`` (``make bench``,
``batch-runner bench``). Every scenario runs the real pipeline (a Kafka broker from
``KAFKA_BOOTSTRAP_SERVERS`` or a local one, the test inference server and consumer
replicas as processes of their own) and, beside it, a bare aiohttp client loop against
the same server without Kafka. Figures are ratios measured in the same run, because
this machine is shared and noisy. ``--out FILE`` writes the JSON report and, beside it,
the same figures as a markdown table (``FILE`` with ``.md``). ``--smoke`` runs tiny
sizes: it must not rot (the tests run it) and its figures mean nothing.
``--profile cprofile|sample`` runs every replica under a profiler (figures then mean
nothing either) and writes the profiles to ``--profile-dir``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.scenarios import SCENARIOS, Context, Goal
from tools.localkafka.cluster import kafka_cluster

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TEST_SERVER = "tools.testservers.inference"
# The server's name in reports written before it moved (their figures still merge).
FORMER_NAMES = {"tools.testserver": TEST_SERVER}
SERVERS = {"testserver": 0, "lean": 1, "lean2": 2}  # name -> lean server processes

__all__ = ["SCENARIOS", "main", "register", "run"]


def machine() -> dict[str, Any]:
    """Describe the machine the figures come from (``nproc``, CPU model, ``free -g``)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    meminfo = {
        line.split(":")[0]: int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
    }
    try:
        free = subprocess.run(
            ["free", "-g"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        free = ""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_total_gib": round(meminfo["MemTotal"] / 1024 / 1024, 1),
        "memory_available_gib": round(meminfo.get("MemAvailable", 0) / 1024 / 1024, 1),
        "free_g": free,
        "load_average": list(os.getloadavg()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kafka": f"at {os.environ['KAFKA_BOOTSTRAP_SERVERS']} (KAFKA_BOOTSTRAP_SERVERS)"
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        else "chosen by tools.localkafka.cluster (Docker or a local java broker)",
    }


def machine_summary(m: dict[str, Any]) -> str:
    """Return the machine as the reports describe it: cores, CPU, memory, kernel, Python."""
    return (
        f"`nproc` {m['nproc']}, {m['cpu_model']} (`/proc/cpuinfo`), "
        f"{m['memory_total_gib']} GiB, Linux {m['kernel']}, Python {m['python']}"
    )


def fmt(value: object) -> str:
    """Return a figure as the reports print it (thousands separated, 3 significant digits)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def print_scenario(name: str, entry: dict[str, Any]) -> None:
    """Print one scenario's figures and goals."""
    print(f"== {name}: {entry['title']}", flush=True)
    for key, value in entry["figures"].items():
        print(f"   {key:<36} {fmt(value)}")
    for goal in entry["goals"]:
        verdict = "met" if goal["met"] else "MISSED"
        value = entry["figures"][goal["figure"]]
        print(
            f"   goal {goal['figure']} {goal['op']} {fmt(goal['target'])}: {fmt(value)} {verdict}"
        )
    print(f"   beside: {entry['beside']}", flush=True)


def markdown(report: dict[str, Any]) -> str:
    """Return the report as a markdown page: the machine, then one row per goal."""
    m = report["machine"]
    notes = []
    if report["consumer_overrides"]:
        notes.append(f"consumer settings changed for every replica: {report['consumer_overrides']}")
    if report["server"] != TEST_SERVER:
        notes.append(f"inference server: {report['server']}")
    if report["profile"]:
        notes.append(f"replicas ran under {report['profile']}: figures not comparable")
    lines = [
        "# Benchmark figures" + (" (smoke sizes: meaningless)" if report["smoke"] else ""),
        *(f"\n**{note}**" for note in notes),
        "",
        (
            f"Machine: {machine_summary(m)}, Kafka {m['kafka']}. The broker, the test "
            "inference server, the consumer replicas and the harness all share it. When each "
            "scenario ran, and the 1-minute load average at its start, are listed under the "
            "table."
        ),
        "",
        "```",
        "$ free -g",
        m["free_g"],
        "```",
        "",
        "| scenario | figure | measured | goal | | beside it, same run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for entry in report["scenarios"].values():
        for n, goal in enumerate(entry["goals"]):
            value = entry["figures"][goal["figure"]]
            lines.append(
                f"| {entry['title'] if n == 0 else ''} | {goal['figure']} | {fmt(value)} "
                f"| {goal['op']} {fmt(goal['target'])} | {'met' if goal['met'] else 'missed'} "
                f"| {entry['beside'] if n == 0 else ''} |",
            )
    lines += ["", "All figures (the JSON report has every run's detail):", ""]
    for name, entry in report["scenarios"].items():
        shown = ", ".join(f"{k} {fmt(v)}" for k, v in entry["figures"].items())
        when = f"{entry.get('started', '?')}, {entry.get('seconds', 0):.0f} s, load "
        when += f"{entry.get('load_average_at_start', 0):.2f}"
        lines.append(f"- **{name}** ({when}): {shown}")
    return "\n".join(lines) + "\n"


def repeated(name: str, ctx: Context, times: int) -> dict[str, Any]:
    """Run scenario ``name`` ``times`` times; return its entry with each figure's median.

    Each repetition measures the pipeline and its bare loop side by side again, so the
    median of a ratio is the median of ratios measured within one repetition. The goals
    are checked against the medians; every repetition's figures stay in ``repeats``.
    """
    entries = [SCENARIOS[name](ctx) for _ in range(times)]
    if times == 1:
        return entries[0]
    middle = len(entries) // 2
    entry = entries[middle]  # its runs' detail and text are kept as an example
    figures = {
        # An error result in any repetition means it measured something else: keep the worst.
        key: max(e["figures"][key] for e in entries)
        if key.endswith("errors")
        else _median([e["figures"][key] for e in entries])
        for key in entry["figures"]
    }
    goals = [Goal(g["figure"], g["op"], g["target"]) for g in entry["goals"]]
    return {
        **entry,
        "title": f"{entry['title']}, median of {times}",
        "beside": f"{entry['beside']} (repetition {middle + 1} of {times})",
        "figures": figures,
        "goals": [goal.check(figures) for goal in goals],
        "repeats": [e["figures"] for e in entries],
    }


def _median(values: list[Any]) -> Any:  # noqa: ANN401 - a figure, or None when not measured
    return None if None in values else statistics.median(values)


def run(  # noqa: PLR0913 - one keyword per command-line option
    names: list[str],
    *,
    smoke: bool,
    out: Path | None,
    profile: str | None = None,
    profile_dir: Path | None = None,
    overrides: dict[str, str] | None = None,
    merge: bool = False,
    lean_workers: int = 0,
    repeat: int = 1,
) -> dict[str, Any]:
    """Run the named scenarios; print their figures; write the JSON and markdown report.

    With ``merge`` the scenarios replace their namesakes in the report already at ``out``
    (run one scenario at a time, keep one report).
    """
    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "smoke": smoke,
        "profile": profile,
        "consumer_overrides": overrides or {},
        "server": f"bench.lean_server x{lean_workers}" if lean_workers else TEST_SERVER,
        "repeat": repeat,
        "scenarios": {},
    }
    with kafka_cluster() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        ctx = Context(
            bootstrap,
            Path(tmp),
            smoke,
            profile,
            profile_dir,
            overrides=overrides or {},
            lean_workers=lean_workers,
        )
        for name in names:
            ctx.scenario = name
            begun = dt.datetime.now(dt.UTC)
            load = os.getloadavg()[0]
            entry = repeated(name, ctx, repeat)
            entry["started"] = begun.isoformat(timespec="seconds")
            entry["seconds"] = round((dt.datetime.now(dt.UTC) - begun).total_seconds(), 1)
            entry["load_average_at_start"] = load
            report["scenarios"][name] = entry
            print_scenario(name, entry)
    report["seconds"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
    if out is not None and merge and out.exists():
        previous = orjson.loads(out.read_bytes())
        if (
            previous.get("smoke") == smoke
            and FORMER_NAMES.get(server := previous.get("server", TEST_SERVER), server)
            == report["server"]
        ):
            merged = {**previous.get("scenarios", {}), **report["scenarios"]}
            order = [n for n in SCENARIOS if n in merged]
            report["scenarios"] = {n: merged[n] for n in order}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        out.with_suffix(".md").write_text(markdown(report))
        print(f"wrote {out} and {out.with_suffix('.md')}")
    return report


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="all", choices=["all", *SCENARIOS])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, figures meaningless")
    parser.add_argument("--out", type=Path, help="JSON report path (a .md table goes beside)")
    parser.add_argument(
        "--server",
        choices=list(SERVERS),
        default="testserver",
        help="the inference server: tools.testservers.inference (default), or bench.lean_server in "
        "one process (lean) or two (lean2)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each scenario N times and report each figure's median (default 1)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other scenarios of the report already at --out",
    )
    parser.add_argument(
        "--profile",
        choices=["cprofile", "sample"],
        help="run every consumer replica under cProfile or the sampling profiler",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a consumer setting for every replica: max_buffered_items=50000 sets "
        "BATCH_RUNNER_MAX_BUFFERED_ITEMS, kafka_linger_ms=1 sets KAFKA_LINGER_MS "
        "(librdkafka's linger.ms); wins over the scenario's own",
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=RESULTS_DIR / "profiles",
        help="where profiles go (default: %(default)s)",
    )


def _run(args: argparse.Namespace) -> int:
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if args.repeat < 1:
        raise SystemExit("--repeat wants a count of at least 1")
    overrides = {}
    for setting in args.set:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set wants SETTING=VALUE, not {setting!r}")
        overrides[key.strip().lower()] = value
    run(
        names,
        smoke=args.smoke,
        out=args.out,
        profile=args.profile,
        profile_dir=args.profile_dir if args.profile else None,
        overrides=overrides,
        merge=args.merge,
        lean_workers=SERVERS[args.server],
        repeat=args.repeat,
    )
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
