"""The chaos suite: every scenario runs at smoke size and its correctness figures hold.

Each scenario is run the way a user runs it (``batch-runner chaos --smoke --scenario
NAME``, a process of its own) against the session's broker (the broker scenarios start
and kill one of their own). What is asserted is what must hold whatever the timing: the
scenario ran and finished by itself, no item or chunk summary is missing from the
results topic, every replica exited as the harness asked (0 after SIGTERM). Timings,
duplicates and stuck partitions are figures to report, never asserted here.

The derivations of the figures from a timeline are pure and tested on hand-made samples.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from confluent_kafka import OFFSET_INVALID, TopicPartition

from chaos import figures as fig
from chaos.fleet import metric_value, partition_number
from chaos.ledger import wait_end_offsets
from chaos.scenarios import SCENARIOS
from chaos.timeline import Sample

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


@pytest.mark.kafka
@pytest.mark.serial
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_at_smoke_size_loses_nothing_and_finishes(
    name: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``batch-runner chaos --smoke`` runs the scenario to its end with no item missing."""
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "tools.cli", "chaos", "--smoke", "--scenario", name]
    harness = subprocess.Popen(
        [*command, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )
    try:
        stdout, stderr = harness.communicate(timeout=270)
    except subprocess.TimeoutExpired:
        harness.terminate()  # the harness stops what it started on SIGTERM
        stdout, stderr = harness.communicate(timeout=90)
    assert harness.returncode == 0, stdout[-4000:] + stderr[-4000:]
    report: dict[str, Any] = orjson.loads(out.read_bytes())
    entry = report["scenarios"][name]
    figures = entry["figures"]
    assert figures["finished"], (figures, entry["actions"])
    assert figures["missing_items"] == 0, entry["detail"]["missing_examples"]
    assert figures["missing_summaries"] == 0, figures
    assert figures["unexpected_exits"] == 0, entry["detail"]["replicas"]
    assert figures["final_read_complete"], figures
    unmet = [goal for goal in entry["must_hold"] if not goal["met"]]
    assert not unmet, (unmet, figures)
    assert (tmp_path / "timelines" / f"{name}.json").exists()
    assert f"| {name} | must hold |" in out.with_suffix(".md").read_text()


# --- figures from hand-made timelines ---------------------------------------------------


def sample(
    t: float,
    committed: Sequence[int] | None,
    end: Sequence[int] | None = (10, 10),
    *,
    owners: Sequence[Sequence[str]] = (("a",), ("a",)),
    newest: Sequence[float] = (0.0, 0.0),
    health: dict[str, int | None] | None = None,
) -> Sample:
    """Return a two-partition sample (offsets None: the broker did not answer)."""
    return Sample(
        t=t,
        committed=tuple(committed) if committed is not None else None,
        end=tuple(end) if committed is not None and end is not None else None,
        results=(0, 0),
        newest=tuple(newest),
        owners=tuple(tuple(o) for o in owners),
        health=health or {},
        stalled={},
    )


def test_a_stall_is_lag_with_a_committed_offset_that_does_not_move() -> None:
    """A stall runs from its first sample to the sample where the offset moves (resolved)."""
    samples = [sample(0, (0, 10)), sample(1, (0, 10)), sample(5, (0, 10)), sample(6, (4, 10))]
    assert fig.stalls(samples, [0, 1]) == [
        fig.Stall(0, 0, 6, resolved=True, committed=0),
        fig.Stall(0, 6, 6, resolved=False, committed=4),
    ]


def test_samples_without_offsets_neither_end_nor_start_a_stall() -> None:
    """While the broker does not answer, a stall goes on; no lag, no stall."""
    samples = [sample(0, (2, 10)), sample(3, None), sample(9, None), sample(10, (2, 10))]
    (stall,) = [s for s in fig.stalls(samples, [0, 1]) if s.partition == 0]
    assert (stall.start, stall.end, stall.resolved) == (0, 10, False)
    assert [s for s in fig.stalls(samples, [0, 1]) if s.partition == 1] == []


def test_stuck_means_the_stall_timeout_outside_fault_windows() -> None:
    """Stall time inside a fault window is explained; what is left decides stuck."""
    samples = [sample(t, (0, 10)) for t in range(0, 71, 5)]
    found = [s for s in fig.stalls(samples, [0]) if s.partition == 0]
    assert [s.partition for s in fig.stuck_partitions(found, [], 60)] == [0]
    outage = fig.Window(10, 30, "broker down")
    assert fig.stuck_partitions(found, [outage], 60) == []
    assert fig.longest_stall(found, 0, 70, [outage]) == 50
    assert fig.longest_stall(found, 60, 100) == 10  # clipped to the span asked about


def test_ownerless_time_counts_lag_without_a_live_owner() -> None:
    """A partition with lag and no owner from 0 to 5 s; one without lag is not counted."""
    nobody: Sequence[Sequence[str]] = ((), ())
    samples = [
        sample(0, (0, 10), owners=nobody),
        sample(2, (0, 10), owners=nobody),
        sample(4, (0, 10), owners=nobody),
        sample(5, (1, 10)),
    ]
    assert fig.ownerless(samples, [0], 0, 10) == 5
    assert fig.ownerless(samples, [1], 0, 10) == 0
    assert fig.ownerless(samples, [0], 3, 10) == 2  # clipped to the span asked about


def test_progress_after_a_kill_is_a_commit_past_the_baseline_or_a_newer_result() -> None:
    """The first commit above the offset seen after the kill, or a result made after it."""
    samples = [sample(0, (3, 3)), sample(1, (3, 10)), sample(2, (5, 10)), sample(9, (8, 10))]
    assert fig.progress_after(samples, 0, 0.5) == 1.5
    by_result = [sample(1, (3, 10)), sample(4, (3, 10), newest=(4.0, 0.0))]
    assert fig.progress_after(by_result, 0, 0.5) == 3.5
    assert fig.progress_after([sample(1, (3, 10)), sample(4, (3, 10))], 0, 0.5) is None


def test_recovery_after_an_outage_uses_the_offset_from_before_it() -> None:
    """Partitions with lag when the broker went down: time from its return to progress."""
    samples = [
        sample(0, (2, 3), (3, 3)),
        sample(1, None),
        sample(20, (2, 3), (3, 3)),
        sample(23, (3, 3), (3, 3)),
    ]
    assert fig.recovery(samples, [0, 1], t0=19, baseline_at=0.5) == {0: 4}  # 1 had no lag
    assert fig.slowest({0: 4.0, 1: None}) is None
    assert fig.median([1.0, None, 3.0]) == 2.0


def test_an_end_offset_answered_as_invalid_is_no_end_offset() -> None:
    """A busy broker may answer ListOffsets with OFFSET_INVALID (-1001) and no error.

    Taken as the end, a partition looked without lag (its recovery went unmeasured in a
    full ``inference-faults`` run) and the final read would have stopped at once.
    """
    answers: dict[TopicPartition, Future[Any]] = {}
    for partition, offset in ((0, 50), (1, OFFSET_INVALID)):
        answer: Future[Any] = Future()
        answer.set_result(TopicPartition("t", partition, offset))
        answers[TopicPartition("t", partition)] = answer
    with pytest.raises(ValueError, match=r"no end offset for partitions \[1\]"):
        wait_end_offsets(answers, 1.0)
    del answers[TopicPartition("t", 1)]
    assert wait_end_offsets(answers, 1.0) == {0: 50}


def test_all_committed_means_every_committed_offset_at_its_end_for_the_whole_window() -> None:
    """The harness stops waiting for its reader only after 20 s with nothing left to do."""
    done = [sample(t, (10, 10)) for t in range(25)]
    assert fig.committed_to_the_end_for(done, 20.0)
    assert not fig.committed_to_the_end_for(done[:15], 20.0)
    lagging = [*done[:10], sample(10, (9, 10)), *done[11:]]
    assert not fig.committed_to_the_end_for(lagging, 20.0)
    away = [*done[:12], sample(12, None), *done[13:]]
    assert not fig.committed_to_the_end_for(away, 20.0)


def test_healthz_and_error_rates() -> None:
    """The first 503 after a moment; error lines per second in a window."""
    samples = [
        sample(0, (0, 1), health={"a#0": 200}),
        sample(5, (0, 1), health={"a#0": 503}),
    ]
    assert fig.first_status(samples, "a#0", after=1) == 4
    assert fig.first_status(samples, "b#0", after=1) is None
    assert fig.rate([1.0, 2.0, 30.0], 0, 10) == 0.2


def test_log_and_metric_parsing() -> None:
    """Partitions as the consumer logs them; a metric summed over its labelled samples."""
    assert partition_number("bench-x-req[12]") == 12
    assert partition_number("no partition") is None
    text = (
        b"# HELP batch_runner_stalled_partitions x\n"
        b"batch_runner_stalled_partitions 2.0\n"
        b"batch_runner_stalled_partitions_total 9.0\n"
        b'batch_runner_paused_partitions{topic="t"} 1.0\n'
        b'batch_runner_paused_partitions{topic="u"} 1.0\n'
    )
    assert metric_value(text, "batch_runner_stalled_partitions") == 2.0
    assert metric_value(text, "batch_runner_paused_partitions") == 2.0
    assert metric_value(text, "batch_runner_missing") is None


def test_cli_without_the_chaos_package_says_it_runs_from_a_checkout() -> None:
    """Installed from the wheel (no ``chaos`` package), ``batch-runner chaos`` says why."""
    blocked = (
        "import sys\n"
        "class NoChaos:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'chaos':\n"
        "            raise ModuleNotFoundError(\"No module named 'chaos'\", name='chaos')\n"
        "sys.meta_path.insert(0, NoChaos())\n"
        "from tools.cli.main import main\n"
        "main(['chaos', '--smoke'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "`batch-runner chaos` runs from a source checkout" in done.stderr
