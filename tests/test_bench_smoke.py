"""The benchmarks must not rot: every scenario runs at a tiny size and reports its figures.

No timing is asserted (the machine is shared); only that each scenario ran the real
pipeline to the end, with no error result, and produced every figure and goal it promises.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from bench.procs import Server
from bench.scenarios import SCENARIOS

PEER_READY = shutil.which("java") is not None and shutil.which("mvn") is not None

PROMISED = {
    "concurrency": {"efficiency", "bare_efficiency", "consumer_cpu_us_per_item", "cpu_vs_bare"},
    "naive": {"speedup_vs_naive", "cpu_ratio_vs_naive", "bare_speedup_vs_naive"},
    "sub-batched": {
        "items_per_s",
        "consumer_cpu_us_per_item",
        "bare_items_per_s",
        "bare_kafka_cpu_us_per_item",
        "cpu_vs_floors",
    },
    "latency": {"p50_ms", "p99_ms", "bare_p50_ms", "bare_p99_ms"},
    "memory": {"small_peak_rss_mib", "big_peak_rss_mib", "rss_ratio", "bare_rss_ratio"},
    "scaling": {"scaling_efficiency", "bare_scaling_efficiency", "two_replicas_items_per_s"},
    "adaptive": {
        "reject_adaptive_goodput_ratio",
        "reject_fixed_goodput_ratio",
        "queue_adaptive_goodput_ratio",
        "alone_adaptive_vs_fixed48",
    },
    # The peer needs java and mvn (the report says so where they are missing).
    "peer": {
        "items_per_s_vs_peer_1",
        "cpu_per_item_vs_peer_1",
        "items_per_s_vs_peer_100",
        "floor_items_per_s_vs_peer_1",
        "floor_cpu_per_item_vs_peer_100",
    }
    if PEER_READY
    else {"single_items"},
    "poison": {"bad_items", "extra_calls_per_bad_item", "today_good_item_errors"},
    "fair-latency": {"p50_ms", "idle_p50_ms", "today_p50_ms", "big_items_per_s"},
    "priorities": {"share_ratio", "today_share_ratio", "window_s"},
    "jobs": {
        "unrelated_results",
        "status_empty_ms",
        "collect_empty_ms",
        "status_ratio",
        "collect_ratio",
    },
    "exactly-once": {
        "sub_batched_eos_ratio",
        "one_item_eos_ratio",
        "sub_batched_eos_peak_rss_mib",
        "one_item_eos_peak_rss_mib",
    },
}
GOALS = {
    "concurrency": {"efficiency", "pipeline_vs_bare", "cpu_vs_bare"},
    "naive": {"speedup_vs_naive", "cpu_ratio_vs_naive"},
    "sub-batched": {"items_per_s", "consumer_cpu_us_per_item", "cpu_vs_floors"},
    "peer": {
        "items_per_s_vs_peer_1",
        "cpu_per_item_vs_peer_1",
        "peak_rss_vs_peer_1",
        "items_per_s_vs_peer_100",
    },
    "latency": {"p50_ms", "p99_ms"},
    "memory": {"rss_ratio"},
    "scaling": {"scaling_efficiency"},
    "adaptive": {
        "reject_adaptive_goodput_ratio",
        "reject_adaptive_share_429",
        "queue_adaptive_goodput_ratio",
        "queue_adaptive_p99_ratio",
        "alone_adaptive_vs_fixed48",
        *(
            f"{overload}_adaptive_{figure}"
            for overload in ("reject", "queue")
            for figure in ("halve_s", "restore_s", "outage_calls_per_replica_s", "recovery_s")
        ),
    },
    "poison": {"good_item_errors", "extra_calls_per_bad_item"},
    "fair-latency": {"max_ms", "p50_vs_idle", "big_throughput_loss"},
    "priorities": {"share_error", "low_longest_gap_s"},
    "jobs": {"status_ratio", "collect_ratio"},
    "exactly-once": {"sub_batched_eos_ratio", "one_item_eos_ratio"},
}


def run_smoke(kafka_bootstrap: str, out: Path, *args: str) -> dict[str, Any]:
    """Run ``python -m bench.run --smoke --out OUT ARGS...``; require exit 0; return the report."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = orjson.loads(out.read_bytes())
    return report


@pytest.mark.kafka
@pytest.mark.timeout(900)  # thirteen scenarios: about 200 s on a quiet machine, 320 s at load 9
def test_every_scenario_runs_in_smoke_mode(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``python -m bench.run --smoke`` runs every scenario and writes figures and table."""
    out = tmp_path / "report.json"
    report = run_smoke(kafka_bootstrap, out)
    assert report["smoke"] is True
    assert report["machine"]["nproc"] >= 1
    assert set(report["scenarios"]) == set(SCENARIOS) == set(PROMISED)
    for name, keys in PROMISED.items():
        figures = report["scenarios"][name]["figures"]
        assert keys <= set(figures), (name, figures)
        assert all(figures[key] > 0 for key in keys), (name, figures)
        assert figures.get("item_errors", 0) == 0, (name, figures)
        goals = {goal["figure"] for goal in report["scenarios"][name]["goals"]}
        assert goals == GOALS[name], (name, goals)
    table = out.with_suffix(".md").read_text()
    assert "| scenario | figure | measured | goal |" in table
    assert all(entry["title"] in table for entry in report["scenarios"].values())


def test_sampler_profiles_a_module_and_its_threads(tmp_path: Path) -> None:
    """``python -m bench.sampler -m MODULE`` runs it and writes stacks, tops and thread CPU."""
    (tmp_path / "busy.py").write_text(
        textwrap.dedent(
            """
            import sys
            import time

            def spin():
                end = time.monotonic() + 0.4
                n = 0
                while time.monotonic() < end:
                    n += 1
                return n

            spin()
            sys.exit(3)
            """,
        ),
    )
    prefix = tmp_path / "profile"
    done = subprocess.run(
        [sys.executable, "-m", "bench.sampler", "--out", str(prefix), "-m", "busy"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
        timeout=60,
    )
    assert done.returncode == 3, done.stderr  # the module's own exit code
    summary = orjson.loads(prefix.with_suffix(".json").read_bytes())
    main = summary["threads"]["MainThread"]
    assert main["busy_s"] > 0.1
    assert any(name == "busy.py:spin" for name, _, _ in main["top_inclusive"])
    assert summary["thread_cpu_s"]
    collapsed = prefix.with_suffix(".collapsed").read_text().splitlines()
    assert any(line.startswith("MainThread;") and "busy.py:spin" in line for line in collapsed)


def test_lean_server_answers_from_every_worker_and_stops_on_sigterm() -> None:
    """``python -m bench.lean_server --workers 2`` echoes v1 requests; SIGTERM stops all."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.lean_server", "--workers", "2"],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().decode().strip()
        workers = Server(url, server).pids()
        assert len(workers) == 2  # the parent and the one it forked
        for n in range(20):
            answer = requests.post(
                f"{url}/v1/models/m:predict", json={"instances": [{"i": n}]}, timeout=10
            )
            assert answer.json() == {"predictions": [{"i": n}]}
    finally:
        server.terminate()
        assert server.wait(timeout=15) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers[1:])


@pytest.mark.kafka
def test_repeat_reports_each_figures_median_and_keeps_every_repetition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``--repeat 3`` runs a scenario three times; figures are medians, goals judge them."""
    report = run_smoke(
        kafka_bootstrap, tmp_path / "report.json", "--scenario", "latency", "--repeat", "3"
    )
    entry = report["scenarios"]["latency"]
    repeats = entry["repeats"]
    assert len(repeats) == 3
    for key in ("p50_ms", "p99_ms", "bare_p50_ms"):
        assert entry["figures"][key] == sorted(r[key] for r in repeats)[1]
    for goal in entry["goals"]:
        value = entry["figures"][goal["figure"]]
        assert goal["met"] == (value <= goal["target"])
    assert entry["title"].endswith("median of 3")
