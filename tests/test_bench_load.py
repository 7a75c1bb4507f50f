"""The baselines' background load: CPU busy in other processes, not counted as the loop's."""

from __future__ import annotations

import resource
import time

from bench.baselines import beside_load


def _children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _own_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def test_the_load_runs_in_child_processes_and_stops_with_the_block() -> None:
    """Half a core for a second: the children used CPU, this process idled, none is left."""
    children, own = _children_cpu_s(), _own_cpu_s()
    with beside_load(0.5):
        time.sleep(1.0)
    spent = _children_cpu_s() - children
    assert spent > 0.2, f"the load used {spent:.2f} s of CPU for 0.5 cores over 1 s"
    assert _own_cpu_s() - own < spent / 2
    # The children were joined: their CPU is final, nothing spins any more.
    settled = _children_cpu_s()
    time.sleep(0.2)
    assert _children_cpu_s() == settled


def test_no_load_starts_no_process() -> None:
    """``beside_load(0)`` is a plain block: no child ever ran."""
    children = _children_cpu_s()
    with beside_load(0.0):
        time.sleep(0.05)
    assert _children_cpu_s() == children
