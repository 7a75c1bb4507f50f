"""The chaos suite: faults injected into a working consumer group, figures reported.

``python -m chaos.run --scenario NAME|all [--smoke] [--out FILE]`` (``make chaos``,
``batch-runner chaos``). Each scenario runs replicas as ``python -m consumer``
processes against a Kafka broker (``KAFKA_BOOTSTRAP_SERVERS``, else one started for the
run; the broker scenarios always start their own, which they kill) and the test
inference server, injects its faults, and ends with a final read of the results topic:
missing, duplicate and error results per ``(batch_id, index)``, missing chunk
summaries, stuck partitions, recovery times (see ``chaos/README.md``). ``--out FILE``
writes the JSON report, the same figures as markdown beside it (``FILE`` with ``.md``)
and each scenario's progress timeline under ``timelines/`` beside it.

Replica settings for every scenario (to compare group protocols and membership):
``--set max_buffered_items=500`` (``BATCH_RUNNER_*``), ``--set kafka_group_protocol=consumer``
or ``-X group.protocol=consumer`` (librdkafka options, as ``KAFKA_*``),
``--static-membership`` (``group.instance.id`` per replica slot), ``--broker-set
group.consumer.session.timeout.ms=10000`` (the run then starts its own broker for every
scenario, with that property).

The exit code is 0 when every scenario ran to its end (whatever its figures), 1 when
one failed to run (its entry then holds the error). SIGTERM stops the run, and everything
it started, at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import os
import signal
import sys
import tempfile
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from bench.run import fmt, machine, machine_summary
from chaos.scenarios import SCENARIOS
from chaos.trial import Context
from tools.localkafka.broker import LocalKafka
from tools.localkafka.cluster import kafka_cluster

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = ["SCENARIOS", "main", "register", "run"]


def verdict(met: bool | None) -> str:  # noqa: FBT001 - a goal's met value
    """Return how a goal reads in the tables."""
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def print_scenario(name: str, entry: dict[str, Any]) -> None:
    """Print one scenario's figures, must-hold checks and goals."""
    print(f"== {name}: {entry.get('title', '')}", flush=True)
    if "error" in entry:
        print(f"   FAILED TO RUN: {entry['error']}", flush=True)
        return
    for key, value in entry["figures"].items():
        print(f"   {key:<40} {fmt(value)}")
    for kind in ("must_hold", "goals"):
        for goal in entry[kind]:
            value = entry["figures"][goal["figure"]]
            print(
                f"   {kind.replace('_', ' ')} {goal['figure']} {goal['op']} {fmt(goal['target'])}: "
                f"{fmt(value)} {verdict(goal['met'])}"
            )
    print(flush=True)


def markdown(report: dict[str, Any]) -> str:
    """Return the report as a markdown page: the machine, the checks, then every figure."""
    m = report["machine"]
    runs = report.get("runs", [])
    notes = _settings_notes(report) if len(runs) <= 1 else []  # else each run's line says
    lines = [
        "# Chaos figures" + (" (smoke sizes: timings meaningless)" if report["smoke"] else ""),
        *(f"\n**{note}**" for note in notes),
        "",
        (
            f"Machine: {machine_summary(m)}; the broker, the test server, the replicas and "
            "the harness share it. When each scenario ran, for how long and the 1-minute "
            "load average at its start are listed under the table. How each figure is "
            "measured: `chaos/README.md`."
        ),
        "",
        *(
            f"- run started {run['started']}, {run['seconds']:.0f} s: "
            f"{', '.join(run['scenarios'])}{_run_settings(run) if len(runs) > 1 else ''}"
            for run in runs
        ),
        "",
        "| scenario | check | figure | measured | wanted | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in report["scenarios"].items():
        if "error" in entry:
            lines.append(f"| {name} | ran | | failed: {entry['error'][:200]} | | MISSED |")
            continue
        first = True
        for kind, label in (("must_hold", "must hold"), ("goals", "goal")):
            for goal in entry[kind]:
                value = entry["figures"][goal["figure"]]
                lines.append(
                    f"| {name if first else ''} | {label} | {goal['figure']} | {fmt(value)} "
                    f"| {goal['op']} {fmt(goal['target'])} | {verdict(goal['met'])} |"
                )
                first = False
    lines += ["", "## Every figure", ""]
    for name, entry in report["scenarios"].items():
        if "error" in entry:
            continue
        shown = ", ".join(f"{k} {fmt(v)}" for k, v in entry["figures"].items())
        when = f"{entry.get('started', '?')}, {entry.get('seconds', 0):.0f} s, load "
        when += f"{entry.get('load_average_at_start', 0):.2f}"
        lines.append(f"- **{name}** ({entry['title']}; {when}): {shown}")
    return "\n".join(lines) + "\n"


def run(  # noqa: PLR0913 - one keyword per command-line option
    names: list[str],
    *,
    smoke: bool,
    out: Path | None,
    overrides: dict[str, str] | None = None,
    static_membership: bool = False,
    broker_properties: dict[str, str] | None = None,
    merge: bool = False,
    label: str = "",
    seed: int = 0,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the named scenarios; print and return their figures; write the report."""
    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "smoke": smoke,
        "overrides": overrides or {},
        "static_membership": static_membership,
        "broker_properties": broker_properties or {},
        "seed": seed,
        "scenarios": {},
    }
    with ExitStack() as stack:
        if workdir is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        else:
            tmp = workdir
            tmp.mkdir(parents=True, exist_ok=True)
        if broker_properties:
            broker = LocalKafka(extra_properties=dict(broker_properties))
            bootstrap = stack.enter_context(broker).bootstrap_servers
        else:
            bootstrap = stack.enter_context(kafka_cluster())
        ctx = Context(
            bootstrap,
            tmp,
            smoke,
            overrides=overrides or {},
            static_membership=static_membership,
            broker_properties=broker_properties or {},
            seed=seed,
            timelines=out.parent / "timelines" if out is not None else None,
        )
        for name in names:
            key = f"{name}[{label}]" if label else name
            ctx.scenario = key
            begun = dt.datetime.now(dt.UTC)
            load = os.getloadavg()[0]
            try:
                entry = SCENARIOS[name](ctx)
            except Exception as exc:  # noqa: BLE001 - reported; the other scenarios still run
                entry = {
                    "title": name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            entry["started"] = begun.isoformat(timespec="seconds")
            entry["seconds"] = round((dt.datetime.now(dt.UTC) - begun).total_seconds(), 1)
            entry["load_average_at_start"] = load
            report["scenarios"][key] = entry
            print_scenario(key, entry)
    report["seconds"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
    report["runs"] = [_run_summary(report)]
    if out is not None and merge and out.exists():
        previous = orjson.loads(out.read_bytes())
        if previous.get("smoke") == smoke:
            report["scenarios"] = {**previous.get("scenarios", {}), **report["scenarios"]}
            earlier = previous.get("runs") or [_run_summary(previous)]
            report["runs"] = [*earlier, *report["runs"]]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        out.with_suffix(".md").write_text(markdown(report))
        print(f"wrote {out} and {out.with_suffix('.md')}")
    return report


def _settings_notes(report: dict[str, Any]) -> list[str]:
    """Return what the one run of ``report`` changed from the defaults, one note each."""
    notes = []
    if report["overrides"]:
        notes.append(f"replica settings changed for every scenario: {report['overrides']}")
    if report["static_membership"]:
        notes.append("static membership: group.instance.id per replica slot")
    if report["broker_properties"]:
        notes.append(f"broker properties: {report['broker_properties']}")
    return notes


def _run_settings(run: dict[str, Any]) -> str:
    """Return what a run changed from the replicas' defaults, as a suffix ('' for none)."""
    changed = [f"{key}={value}" for key, value in sorted(run.get("overrides", {}).items())]
    if run.get("static_membership"):
        changed.append("static membership")
    changed += [f"broker {k}={v}" for k, v in sorted(run.get("broker_properties", {}).items())]
    return f" (settings: {', '.join(changed)})" if changed else " (default settings)"


def _run_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Return when a run started, how long it took, its scenarios and settings."""
    return {
        "started": report.get("started"),
        "seconds": round(float(report.get("seconds", 0)), 1),
        "load_average": report.get("machine", {}).get("load_average"),
        "scenarios": list(report.get("scenarios", {})),
        "overrides": report.get("overrides", {}),
        "static_membership": report.get("static_membership", False),
        "broker_properties": report.get("broker_properties", {}),
    }


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"{option} wants KEY=VALUE, not {item!r}")
        out[key.strip()] = value
    return out


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="all", choices=["all", *SCENARIOS])
    parser.add_argument("--smoke", action="store_true", help="small sizes (what CI runs)")
    parser.add_argument("--out", type=Path, help="JSON report path (a .md table goes beside)")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other scenarios of the report at --out"
    )
    parser.add_argument(
        "--label",
        default="",
        help="report the scenarios as NAME[LABEL] (runs of one scenario under several "
        "settings, with --merge, side by side)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a replica setting for every scenario: max_buffered_items=500 sets "
        "BATCH_RUNNER_MAX_BUFFERED_ITEMS, kafka_group_protocol=consumer sets "
        "KAFKA_GROUP_PROTOCOL; wins over the scenario's own",
    )
    parser.add_argument(
        "-X",
        dest="kafka_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka option for every replica (group.protocol=consumer)",
    )
    parser.add_argument(
        "--static-membership",
        action="store_true",
        help="give each replica slot a group.instance.id (<group>-<slot>), kept across restarts",
    )
    parser.add_argument(
        "--broker-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a broker property; the run then starts its own local broker for every scenario",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the faults (0)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the replicas' logs here (default: a temporary directory, removed)",
    )


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit, so every replica, server and broker is stopped."""
    raise SystemExit(128 + signum)


def _run(args: argparse.Namespace) -> int:
    faulthandler.enable()  # a crash in a native client prints where the harness was
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    overrides = {k.lower(): v for k, v in _pairs(args.set, "--set").items()}
    for key, value in _pairs(args.kafka_option, "-X").items():
        overrides["kafka_" + key.replace(".", "_").lower()] = value
    report = run(
        names,
        smoke=args.smoke,
        out=args.out,
        overrides=overrides,
        static_membership=args.static_membership,
        broker_properties=_pairs(args.broker_set, "--broker-set"),
        merge=args.merge,
        label=args.label,
        seed=args.seed,
        workdir=args.workdir,
    )
    return 1 if any("error" in e for e in report["scenarios"].values()) else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chaos`` to the ``batch-runner`` parser."""
    parser = subparsers.add_parser(
        "chaos",
        help="run the chaos suite (faults injected, figures reported)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _arguments(parser)
    parser.set_defaults(handler=_run)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m chaos.run``."""
    parser = argparse.ArgumentParser(
        prog="python -m chaos.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _arguments(parser)
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
