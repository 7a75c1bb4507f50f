"""Chaos scenario ``rolling-upgrade``: replicas of an older version replaced one by one.

The group starts on the code of an older commit (``UPGRADE_FROM``, or the environment's
``CHAOS_UPGRADE_FROM``), extracted from this checkout's git history and run with this
checkout's virtual environment. The upgrade then follows the README's two steps:

1. each old replica is replaced by a new one started with ``status_done_list`` (a new
   pod joins, then an old one gets SIGTERM, as a Deployment rolls). The first new
   replica is stopped again before the others come (a rollout paused and scaled back,
   or its node drained): its partitions, and the batch statuses it wrote, go back to
   old replicas, which must read them;
2. each of those is replaced by a new one without the setting.

Batches are placed round-robin, so most are counted through progress records. After the
final read the status topic is read from its beginning: every batch's latest status
must be final with exact counts, as in ``job-status``, and no replica may have ignored a
status record it could not read (``status_records_ignored``, from their logs). The status
records are counted by the form their done chunks take (``list`` from old replicas,
``both`` from the first step's, ``ranges`` from the second's). ``CHAOS_UPGRADE_STEPS=1`` rolls
straight to the new version without the first step (run it with a ``--label``): old
replicas then ignore the records new ones wrote. Chunks counted through progress records
are counted again from them, but a chunk counted only in an ignored status record (a
batch on its own status partition) is lost to the count, and its batch may never end.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.kafka_io import Backlog
from bench.scenarios import Goal
from chaos.jobs import STATUS_MUST, status_figures, status_trial, statuses_final

if TYPE_CHECKING:
    from chaos.fleet import Incarnation
    from chaos.trial import Context, Trial

# The last commit whose status records list their done chunks one by one (before
# ``done_ranges``). Move it to the last release before the next incompatible change.
UPGRADE_FROM = "025099c3fbb4e44b39f954b21cd1443a6f0c43aa"
CHECKOUT = Path(__file__).resolve().parents[1]
IGNORED = "an invalid record on the status topic"  # what a replica logs for one it cannot read


def old_code(ctx: Context, ref: str) -> dict[str, str]:
    """Extract ``ref``'s tree into the scenario's directory; return the env that runs it.

    ``PYTHONSAFEPATH`` keeps the working directory (this checkout) off ``sys.path``, so
    the packages on ``PYTHONPATH`` come before this checkout's editable install.
    """
    try:
        archive = subprocess.run(  # noqa: S603 - git with fixed arguments and a commit id
            ["git", "-C", str(CHECKOUT), "archive", "--format=tar", ref],  # noqa: S607 - git from PATH
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        msg = (
            f"rolling-upgrade runs the replicas of commit {ref} from this checkout's git "
            f"history, and cannot read it (a shallow clone, or no git?): "
            f"{detail.decode(errors='replace').strip() or exc}"
        )
        raise RuntimeError(msg) from None
    tree = ctx.workdir / f"old-{ref[:12]}"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(tree)}


class Rollout:
    """The replicas of the scenario, replaced one at a time the way a Deployment does."""

    def __init__(self, trial: Trial) -> None:
        """Run nothing yet."""
        self.trial = trial
        self.current: list[Incarnation] = []
        self.started = 0
        self.versions: dict[str, str] = {}

    def start(self, version: str, env: dict[str, str]) -> Incarnation | None:
        """Start a replica of ``version`` and wait until it is ready; None if it is not."""
        incarnation = self.trial.start(f"r{self.started}", **env)
        self.started += 1
        self.versions[incarnation.name] = version
        self.trial.note("version", incarnation=incarnation.name, version=version)
        if not self.trial.wait_for(
            partial(self.trial.ready, incarnation), 60, f"{incarnation.name} ready"
        ):
            return None
        self.current.append(incarnation)
        return incarnation

    def stop(self, incarnation: Incarnation) -> None:
        """Stop ``incarnation`` with SIGTERM (its drain included)."""
        self.trial.fleet.terminate([incarnation], 45.0)
        self.trial.note("SIGTERM", incarnation=incarnation.name, exit_code=incarnation.exit_code)
        self.current.remove(incarnation)

    def replace(
        self, version: str, env: dict[str, str], gap_s: float, limit: int | None = None
    ) -> bool:
        """Replace the replicas not of ``version`` (oldest first, at most ``limit``).

        Returns False if the work ended or a new replica did not become ready.
        """
        others = [i for i in self.current if self.versions[i.name] != version]
        for old in others[:limit]:
            self.trial.sleep(gap_s)
            if self.trial.complete() or self.start(version, env) is None:
                return False
            self.stop(old)
        return True


def rolling_upgrade(ctx: Context) -> dict[str, Any]:
    """Upgrade a working group from an older commit in two rolling steps; check statuses."""
    from chaos.scenarios import finished_entry, wind_down  # noqa: PLC0415 - the scenarios import this module

    ref = os.environ.get("CHAOS_UPGRADE_FROM", UPGRADE_FROM)
    two_steps = os.environ.get("CHAOS_UPGRADE_STEPS", "2") != "1"
    old = old_code(ctx, ref)
    first_step = {"BATCH_RUNNER_STATUS_DONE_LIST": "true" if two_steps else "false"}
    partitions, replicas, gap_s = 6, ctx.count(3, 2), ctx.size(4.0, 2.0)
    work = Backlog(ctx.count(120_000, 6_000), batches=ctx.count(36, 8), chunk_size=100)
    with status_trial(ctx, partitions, work) as trial:
        rollout = Rollout(trial)
        for _ in range(replicas):
            rollout.start("old", old)
        began = time.time()
        first = "new-list" if two_steps else "new"
        going = rollout.replace(first, first_step, gap_s, limit=1)
        if going:
            # The new replica works a while, then stops while old ones run: its
            # partitions, and the statuses it wrote, go back to them.
            trial.sleep(gap_s)
            rollout.stop(rollout.current[-1])
            trial.sleep(gap_s)
            going = not trial.complete() and rollout.start(first, first_step) is not None
        going = going and rollout.replace(first, first_step, gap_s)
        if going and two_steps:
            rollout.replace("new", {"BATCH_RUNNER_STATUS_DONE_LIST": "false"}, gap_s)
        wait = partial(statuses_final, trial, work, ctx.size(60, 30))
        figures = wind_down(ctx, trial, began, before_stop=wait)
        ignored = sum(
            i.log.read_text(errors="replace").count(IGNORED) for i in trial.fleet.incarnations
        )
        forms: dict[str, int] = {}
        exact = status_figures(trial, work, forms)
        figures |= {
            "upgraded_from": ref[:12],
            "steps": 2 if two_steps else 1,
            "replicas_started": {
                version: sum(v == version for v in rollout.versions.values())
                for version in sorted(set(rollout.versions.values()))
            },
            "restarts": sum(a["what"] == "SIGTERM" for a in trial.actions),
            "status_records_by_form": dict(sorted(forms.items())),
            "status_records_ignored": ignored,
            **exact,
        }
        return finished_entry(
            trial,
            f"rolling upgrade from {ref[:12]} in {figures['steps']} step(s): {replicas} "
            f"replicas, {partitions} partitions, {work.items:,} items in {work.batches} "
            "batches, a new replica stopped midway",
            figures,
            [Goal("duplicate_results", ">=", 0)],
            must=[Goal("status_records_ignored", "==", 0), *STATUS_MUST],
        )
