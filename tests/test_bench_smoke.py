"""The benchmarks must not rot: every scenario runs at a tiny size and reports its figures.

No timing is asserted (the machine is shared); only that each scenario ran the real
pipeline to the end and produced every figure it promises.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import orjson
import pytest

from bench.run import SCENARIOS

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.kafka

PROMISED = {
    "concurrency": {
        "pipeline_efficiency",
        "bare_aiohttp_efficiency",
        "pipeline_consumer_cpu_us_per_item",
    },
    "naive": {"speedup_vs_naive", "cpu_ratio_vs_naive", "bare_aiohttp_items_per_s"},
    "sub-batched": {
        "pipeline_items_per_s",
        "pipeline_consumer_cpu_us_per_item",
        "bare_aiohttp_items_per_s",
    },
    "latency": {"p50_ms", "p99_ms"},
    "memory": {"small_peak_rss_mb", "big_peak_rss_mb", "rss_ratio"},
    "scaling": {"one_replica_items_per_s", "two_replicas_items_per_s", "scaling_efficiency"},
}


def test_every_scenario_runs_in_smoke_mode(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``python -m bench.run --smoke`` runs all six scenarios and writes their figures."""
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = orjson.loads(out.read_bytes())
    assert report["smoke"] is True
    assert report["machine"]["cpus"] >= 1
    assert set(report["scenarios"]) == set(SCENARIOS) == set(PROMISED)
    for name, keys in PROMISED.items():
        figures = report["scenarios"][name]
        assert keys <= set(figures), (name, figures)
        assert all(figures[key] > 0 for key in keys), (name, figures)
