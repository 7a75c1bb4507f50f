"""A consumer replica as a process of its own (``python -m consumer``), as users run it.

The demo, the tests' harness, the benchmarks and the chaos suite start replicas with
:func:`start_replica`, their environment built by :func:`replica_env`.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from schemas import TopicNames


def env_name(setting: str) -> str:
    """Return a setting's variable: ``kafka_linger_ms`` as is, others as ``BATCH_RUNNER_``."""
    name = setting.upper()
    return name if name.startswith("KAFKA_") else f"BATCH_RUNNER_{name}"


def replica_env(bootstrap: str, topics: TopicNames, **settings: object) -> dict[str, str]:
    """Return the variables of a replica on ``bootstrap`` serving ``topics``.

    ``settings`` (``group_id="g"``, ``max_in_flight=8``) become variables by
    :func:`env_name`.
    """
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BATCH_RUNNER_REQUESTS_TOPIC": topics.requests,
        "BATCH_RUNNER_RESULTS_TOPIC": topics.results,
        "BATCH_RUNNER_DLQ_TOPIC": topics.dlq,
        "BATCH_RUNNER_STATUS_TOPIC": topics.status,
        **{env_name(key): str(value) for key, value in settings.items()},
    }


def start_replica(
    env: Mapping[str, str],
    log: Path,
    *,
    wrapper: Sequence[str] = (),
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``python -m consumer`` with exactly ``env``; its output goes to ``log``.

    ``wrapper`` goes between the interpreter and ``-m consumer`` (``-m cProfile -o
    FILE``); ``new_session`` keeps a terminal's Ctrl-C from reaching the replica, so its
    starter stops it in order.
    """
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, *wrapper, "-m", "consumer"],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
