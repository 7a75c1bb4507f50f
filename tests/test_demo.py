"""The one-command demo, run the way a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.kafka  # the demo starts its own broker, or uses the session's


def processes_with(marker: str) -> set[int]:
    """Return the pids whose environment holds ``marker`` (inherited from the demo)."""
    found = set()
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ:
            found.add(int(entry.name))
    return found


def test_demo_runs_end_to_end_and_leaves_nothing_behind() -> None:
    """With nothing configured the demo starts its own broker, model and two replicas.

    It scores 10,003 items with no errors and an accuracy above 0.9 against the iris
    labels, predicts the original three rows as the original example did, exits 0, and
    every process it started is gone afterwards.
    """
    marker = f"demo-test-{uuid.uuid4().hex}"
    leftovers = set(Path(tempfile.gettempdir()).glob("batch-runner-demo-*"))
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["DEMO_TEST_MARKER"] = marker  # every process the demo starts inherits it
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "demo", "--json"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "kafka-batch-runner demo"
    summary = orjson.loads(lines[-1])
    assert summary["items"] == 10_003
    assert summary["errors"] == 0
    assert summary["accuracy"] > 0.9
    assert summary["scored"] == 10_003
    assert summary["original_predictions"] == ["setosa", "virginica", "versicolor"]
    assert summary["items_per_s"] > 0
    assert summary["p99_queue_ms"] >= summary["p50_queue_ms"] >= 0
    assert processes_with(marker) == set(), "the demo left a process running"
    assert set(Path(tempfile.gettempdir()).glob("batch-runner-demo-*")) == leftovers


@pytest.mark.parametrize(
    ("server", "protocol"),
    [("mlserver", "v2"), ("kserve", "v1"), ("kserve", "v2")],
)
def test_demo_flow_against_a_real_model_server(
    kafka_bootstrap: str, server: str, protocol: str
) -> None:
    """The demo's flow, the README's iris objects at 50 per request, on MLServer and KServe.

    A smaller batch than the demo's 10,000 (the note in docs/real-servers.md has those
    runs): 0 errors, the original three rows predicted as serve-model predicts them, and
    latency and queue figures in the summary.
    """
    done = subprocess.run(
        [
            sys.executable, "-m", "tools.cli", "demo", "--json", "--model-server", server,
            "--protocol", protocol, "--items", "500", "--items-per-request", "50",
        ],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["items"], summary["errors"], summary["scored"]) == (503, 0, 503)
    assert summary["original_predictions"] == ["setosa", "virginica", "versicolor"]
    assert summary["accuracy"] > 0.9
    assert summary["p99_queue_ms"] >= summary["p50_queue_ms"] >= 0
