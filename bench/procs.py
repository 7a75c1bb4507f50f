"""The processes of a benchmark: the test server, consumer replicas, and what they cost.

CPU and memory come from each process's own accounting in ``/proc`` (user + system time
of all its threads; the kernel's peak resident set size), never from the harness's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from consumer import launch
from tools.localkafka.processes import terminate

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds process ``pid`` has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid: int) -> float:
    """Return the peak resident set size (``VmHWM``) of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_busy_seconds() -> float:
    """Return the CPU seconds all cores of the machine have spent busy since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICKS  # guest time is already inside user


class CpuMeter:
    """CPU used since a start: by groups of processes, by the harness, by the whole machine."""

    def __init__(self, groups: dict[str, Sequence[int]]) -> None:
        """Start counting now for ``groups`` (``{"consumer": [pid, ...], ...}``)."""
        self.groups = groups
        self._start: dict[str, float] = {}
        self._self = self._machine = self._wall = 0.0
        self.reset()

    def reset(self) -> None:
        """Start counting from now."""
        self._start = {name: _cpu_of(pids) for name, pids in self.groups.items()}
        self._self = time.process_time()
        self._machine = machine_busy_seconds()
        self._wall = time.monotonic()

    def read(self) -> dict[str, float]:
        """Return ``NAME_cpu_s`` per group, ``harness_cpu_s`` and ``machine_busy_cores``."""
        wall = max(time.monotonic() - self._wall, 1e-9)
        out = {
            f"{name}_cpu_s": _cpu_of(pids) - self._start[name] for name, pids in self.groups.items()
        }
        out["harness_cpu_s"] = time.process_time() - self._self
        out["machine_busy_cores"] = (machine_busy_seconds() - self._machine) / wall
        return out


def _cpu_of(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


@dataclass
class Server:
    """The test inference server running as a process of its own."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """Return its process id."""
        return self.process.pid

    def pids(self) -> list[int]:
        """Return its process id and those of the workers it forked."""
        found = [self.pid]
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
        return found

    @property
    def v1_endpoint(self) -> str:
        """Return the URL of its KServe v1 route (the protocol every scenario uses)."""
        return f"{self.url}/v1/models/bench:predict"


@contextlib.contextmanager
def inference_server(
    latency_ms: float,
    *,
    lean_workers: int = 0,
    port: int = 0,
    options: Sequence[str] = (),
) -> Iterator[Server]:
    """Run ``python -m tools.testservers.inference`` with a fixed latency; yield it; stop it.

    With ``lean_workers``, ``python -m bench.lean_server`` instead (same route, no
    bookkeeping) in that many processes. ``port``: the test server's (0: a free one);
    ``options``: more of its command-line options (``--capacity 48``).
    """
    command = [
        sys.executable,
        "-m",
        "bench.lean_server",
        "--latency-ms",
        str(latency_ms),
        "--workers",
        str(lean_workers),
    ]
    if not lean_workers:
        command = [
            sys.executable,
            "-m",
            "tools.testservers.inference",
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
            "--no-track-items",
            "--log-level",
            "WARNING",
            *options,
        ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        if process.stdout is None:
            raise RuntimeError("the test server's stdout is not a pipe")
        url = process.stdout.readline().decode().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the test server did not start (printed {url!r})")
        yield Server(url, process)
    finally:
        terminate(process)


class LogTail:
    """Read a replica's log (JSON lines) incrementally: each call returns the new events."""

    def __init__(self, path: Path) -> None:
        """Follow ``path`` from its start."""
        self.path = path
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        """Return the JSON objects of the complete lines written since the last call."""
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        events = []
        for line in data[:end].splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def ownership_change(event: dict[str, Any]) -> tuple[str, set[str]] | None:
    """Return ``("assigned" | "revoked" | "lost", partitions)`` of a rebalance log event."""
    kind = {
        "partitions assigned": "assigned",
        "partitions revoked": "revoked",
        "partitions lost": "lost",
    }.get(str(event.get("event")))
    if kind is None:
        return None
    return kind, set(event.get("partitions") or ())


@dataclass
class Replica:
    """One ``python -m consumer`` process and its log (JSON lines)."""

    process: subprocess.Popen[bytes]
    log: Path
    owned: set[str] = field(default_factory=set)
    assigned_at: float | None = None  # wall time of its latest assignment
    _tail: LogTail | None = None

    def refresh(self) -> None:
        """Read new log lines: follow its assigned partitions; fail if it exited."""
        if self._tail is None:
            self._tail = LogTail(self.log)
        for event in self._tail.read():
            change = ownership_change(event)
            if change is None:
                continue
            kind, partitions = change
            if kind == "assigned":
                self.owned |= partitions
                self.assigned_at = float(event.get("ts", time.time()))
            else:
                self.owned -= partitions
        if self.process.poll() is not None:
            raise RuntimeError(f"a consumer exited early:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        """Return the end of its log."""
        return self.log.read_text(errors="replace")[-chars:]


def start_replica(
    env: dict[str, str],
    workdir: Path,
    wrapper: Sequence[str] = (),
) -> Replica:
    """Start ``python -m consumer`` with ``env``, optionally under a profiler ``wrapper``.

    ``wrapper`` goes between the interpreter and ``-m consumer`` (``-m cProfile -o FILE``).
    """
    log = workdir / f"consumer-{uuid.uuid4().hex[:8]}.log"
    return Replica(launch.start_replica(env, log, wrapper=wrapper), log)


def wait_assigned(replicas: Sequence[Replica], partitions: set[str], timeout_s: float) -> float:
    """Wait until ``replicas`` own ``partitions`` between them, each some; return when.

    The time returned is the wall time of the latest assignment among them: from then on
    every partition has a replica fetching it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for replica in replicas:
            replica.refresh()
        owned = [r.owned for r in replicas]
        shared = sum(len(o) for o in owned) == len(set().union(*owned))
        if set().union(*owned) == partitions and all(owned) and shared:
            return max(r.assigned_at or 0.0 for r in replicas)
        if time.monotonic() > deadline:
            logs = "\n---\n".join(r.tail() for r in replicas)
            raise TimeoutError(f"replicas own {owned}, not {sorted(partitions)}:\n{logs}")
        time.sleep(0.02)


def stop_all(replicas: Sequence[Replica]) -> None:
    """SIGTERM every replica at once (they drain in parallel), then wait for each."""
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.terminate()
    for replica in replicas:
        terminate(replica.process)
