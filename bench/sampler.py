"""A small statistical profiler: run a module and sample its threads' stacks on a timer.

``python -m bench.sampler --out PREFIX -m consumer`` runs ``python -m consumer`` as usual
and, when it exits, writes:

- ``PREFIX.collapsed``: one line per distinct stack, ``thread;outer;...;inner MICROSECONDS``
  (the input of flame graph tools such as ``flamegraph.pl`` or speedscope);
- ``PREFIX.json``: per thread, the seconds each function spent on top of the stack (own
  time, its C calls included) and anywhere on it (inclusive time), with idle waits (the
  event loop's ``select``, a worker thread's queue) counted apart; and the CPU seconds
  each OS thread used, from ``/proc/self/task`` (librdkafka's ``rdk:*`` threads show
  there, not in Python stacks).

How: a wall-clock interval timer (``SIGALRM``) interrupts the main thread, where the
event loop runs; the handler runs at the next bytecode boundary, so time inside a C call
(``produce()``, a socket write) is charged to the Python frame that made it, and a
blocking ``select`` is interrupted at once. Each sample is weighted by the time since
the previous one. Other threads are sampled at the same moments, but only where they
let go of the interpreter lock (their shares are indicative; their CPU is exact).
Unlike cProfile there is no cost per call, so per-item functions are not inflated. The
timer wakes an asyncio loop's signal pipe each time: keep the interval at a few ms.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import runpy
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from types import FrameType

TICKS = os.sysconf("SC_CLK_TCK")
# A thread whose innermost frame is one of these is waiting, not working.
IDLE_LEAVES = frozenset(
    {
        "selectors.py:EpollSelector.select",
        "threading.py:Condition.wait",
        "threading.py:Event.wait",
        "queue.py:Queue.get",
        "queue.py:SimpleQueue.get",
        "thread.py:_worker",
    },
)
TOP = 40
CPU_READ_INTERVAL_S = 0.25


def frame_name(frame: FrameType) -> str:
    """Return ``file.py:Qualified.name`` for a frame."""
    code = frame.f_code
    return f"{Path(code.co_filename).name}:{code.co_qualname}"


def stack_of(frame: FrameType | None) -> tuple[str, ...]:
    """Return the stack from the outermost frame to ``frame``."""
    names = []
    while frame is not None:
        names.append(frame_name(frame))
        frame = frame.f_back
    return tuple(reversed(names))


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Return ``{tid: (OS thread name, cpu seconds)}`` for every thread of this process."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
            out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def _table(seconds: dict[str, float], busy: float) -> list[list[object]]:
    top = sorted(seconds.items(), key=lambda kv: -kv[1])[:TOP]
    return [[f, round(t, 4), round(t / busy, 4) if busy else 0.0] for f, t in top]


class Sampler:
    """Samples every thread's stack on each ``SIGALRM`` of an interval timer."""

    def __init__(self, interval_s: float) -> None:
        """Prepare; :meth:`start` (in the main thread) arms the timer."""
        self.interval_s = interval_s
        self.stacks: dict[tuple[str, tuple[str, ...]], float] = collections.defaultdict(float)
        self.cpu: dict[int, tuple[str, float]] = {}
        self.names: dict[int, str] = {}  # native thread id -> Python thread name
        self.samples = 0
        self.started = self._last = time.monotonic()
        self._next_cpu = 0.0

    def start(self) -> None:
        """Install the handler and arm the timer (call from the main thread)."""
        signal.signal(signal.SIGALRM, self._sample)
        signal.setitimer(signal.ITIMER_REAL, self.interval_s, self.interval_s)

    def stop(self) -> None:
        """Disarm the timer and take the last CPU readings."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        self._read_cpu()

    def _read_cpu(self) -> None:
        for thread in threading.enumerate():
            if thread.native_id is not None:
                self.names[thread.native_id] = thread.name
        for tid, reading in thread_cpu().items():
            self.cpu[tid] = reading  # the latest reading: threads may end before we do

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        weight, self._last = now - self._last, now
        self.samples += 1
        main = threading.main_thread().ident
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, other in sys._current_frames().items():  # noqa: SLF001 - sampling
            if ident != main:
                self.stacks[names.get(ident, str(ident)), stack_of(other)] += weight
        # the interrupted frame itself, minus this handler
        self.stacks["MainThread", stack_of(frame)] += weight
        if now >= self._next_cpu:
            self._read_cpu()
            self._next_cpu = now + CPU_READ_INTERVAL_S

    def summary(self) -> dict[str, Any]:
        """Return per thread the top functions (seconds, share of busy time) and CPU."""
        threads: dict[str, Any] = {}
        by_thread: dict[str, dict[tuple[str, ...], float]] = collections.defaultdict(
            lambda: collections.defaultdict(float),
        )
        for (name, stack), seconds in self.stacks.items():
            by_thread[name][stack] += seconds
        for name, stacks in by_thread.items():
            total = sum(stacks.values())
            idle = sum(t for s, t in stacks.items() if s and s[-1] in IDLE_LEAVES)
            own: dict[str, float] = collections.defaultdict(float)
            inclusive: dict[str, float] = collections.defaultdict(float)
            for stack, seconds in stacks.items():
                if not stack or stack[-1] in IDLE_LEAVES:
                    continue
                own[stack[-1]] += seconds
                for function in set(stack):
                    inclusive[function] += seconds
            threads[name] = {
                "sampled_s": round(total, 3),
                "idle_s": round(idle, 3),
                "busy_s": round(total - idle, 3),
                "top_own": _table(own, total - idle),
                "top_inclusive": _table(inclusive, total - idle),
            }
        cpu: dict[str, float] = collections.defaultdict(float)
        for tid, (comm, seconds) in self.cpu.items():
            cpu[self.names.get(tid, comm)] += seconds
        return {
            "interval_ms": self.interval_s * 1000,
            "samples": self.samples,
            "seconds": round(time.monotonic() - self.started, 3),
            "thread_cpu_s": {k: round(v, 2) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
            "threads": threads,
        }

    def write(self, prefix: Path) -> None:
        """Write ``prefix.collapsed`` (weights in microseconds) and ``prefix.json``."""
        prefix.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            ";".join((name.replace(" ", "_"), *stack)) + f" {round(seconds * 1e6)}"
            for (name, stack), seconds in sorted(self.stacks.items(), key=lambda kv: -kv[1])
        ]
        prefix.with_suffix(".collapsed").write_text("\n".join(lines) + "\n")
        prefix.with_suffix(".json").write_bytes(
            orjson.dumps(self.summary(), option=orjson.OPT_INDENT_2),
        )


def main(argv: list[str] | None = None) -> int:
    """Run ``-m MODULE ARGS...`` under the sampler; write the profile when it exits."""
    parser = argparse.ArgumentParser(prog="python -m bench.sampler", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output path prefix")
    parser.add_argument("--interval-ms", type=float, default=2.0, help="sampling period")
    parser.add_argument("-m", dest="module", required=True, help="the module to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the module's arguments")
    args = parser.parse_args(argv)
    sampler = Sampler(args.interval_ms / 1000)
    sys.argv = [args.module, *args.args]
    sampler.start()
    code: int | str | None = 0
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        sampler.stop()
        sampler.write(args.out)
    return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
