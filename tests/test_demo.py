"""The one-command demo, run the way a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import orjson


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
    assert processes_with(marker) == set(), "the demo left a process running"
    assert set(Path(tempfile.gettempdir()).glob("batch-runner-demo-*")) == leftovers
