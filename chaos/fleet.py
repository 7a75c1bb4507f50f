"""Consumer replicas as processes of their own, by member slot: started, signalled, restarted.

A *member* is a slot (``r0``, ``r1``...), as a pod of a Deployment or StatefulSet is;
each process started for it is an :class:`Incarnation` (``r1#0``, then ``r1#1`` after a
restart). With static membership every incarnation of a slot gets the same
``group.instance.id`` (``<group>-<member>``), as a StatefulSet pod keeps its name.

Each incarnation is followed through its log (JSON lines, :class:`bench.procs.LogTail`):
the partitions it owns and when (``partitions assigned``/``revoked``/``lost``), the port
of its operations server, and the times of its error-level lines. How it ended (the
signal the harness sent, if any, and its exit code) decides whether the exit was expected.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.procs import LogTail, ownership_change, start_replica

if TYPE_CHECKING:
    from pathlib import Path

PARTITION = re.compile(r"\[(\d+)\]$")
ERROR_LEVELS = frozenset({"error", "critical"})
TRACEBACK = "Traceback (most recent call last)"
NEVER_RETRIEVED = "Task exception was never retrieved"
MAX_POLL = "maximum poll interval"  # librdkafka's MAXPOLL: "Application maximum poll interval"
# Exit codes the harness expects after its own signal: SIGTERM drains and exits 0.
EXPECTED_EXIT = {"SIGTERM": 0, "SIGKILL": -signal.SIGKILL}


def partition_number(label: str) -> int | None:
    """Return ``p`` of a partition as the consumer logs it (``topic[p]``)."""
    found = PARTITION.search(label)
    return int(found.group(1)) if found else None


@dataclass
class Incarnation:
    """One process of a member slot and what its log says about it."""

    member: str
    number: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float
    tail: LogTail
    ops_port: int | None = None
    owned: set[int] = field(default_factory=set)
    changes: list[tuple[float, str, tuple[int, ...]]] = field(default_factory=list)
    error_times: list[float] = field(default_factory=list)
    signals: list[tuple[float, str]] = field(default_factory=list)
    ended: float | None = None  # wall time the harness saw it gone
    exit_code: int | None = None
    drained: bool = False  # exited, and its log read to the end
    escalated: bool = False  # SIGTERM was not enough: it got SIGKILL after the wait
    consuming: bool = False  # its log says it joined (it had installed its signal handlers)

    @property
    def name(self) -> str:
        """``member#number``."""
        return f"{self.member}#{self.number}"

    def alive(self) -> bool:
        """Return whether the process still runs (as last seen)."""
        return self.exit_code is None

    def refresh(self) -> None:
        """Read its new log lines; notice its exit (a dead process owns nothing)."""
        if self.drained:
            return
        code = self.process.poll()  # before reading: after an exit the log is complete
        for event in self.tail.read():
            ts = float(event.get("ts", time.time()))
            if str(event.get("level")) in ERROR_LEVELS:
                self.error_times.append(ts)
            if event.get("event") == "operations server listening":
                self.ops_port = int(event.get("port", 0)) or None
            elif event.get("event") == "consuming":
                self.consuming = True
            change = ownership_change(event)
            if change is None:
                continue
            kind, labels = change
            numbers = tuple(sorted(n for n in map(partition_number, labels) if n is not None))
            self.changes.append((ts, kind, numbers))
            if kind == "assigned":
                self.owned.update(numbers)
            else:
                self.owned.difference_update(numbers)
        if code is not None:
            self.exit_code = code
            self.ended = time.time()
            self.drained = True
            if self.owned:
                self.changes.append((self.ended, "exited", tuple(sorted(self.owned))))
                self.owned = set()

    def owned_at(self, when: float) -> set[int]:
        """Return the partitions its log says it owned at wall time ``when``."""
        owned: set[int] = set()
        for ts, kind, numbers in self.changes:
            if ts > when:
                break
            if kind == "assigned":
                owned.update(numbers)
            else:
                owned.difference_update(numbers)
        return owned

    def expected_exit(self) -> bool:
        """Whether it ended as the harness asked: 0 after SIGTERM, killed after SIGKILL.

        A replica that needed SIGKILL because it did not exit after SIGTERM did not. One
        that SIGTERM killed while it was starting (no ``consuming`` line yet: its handlers
        were not installed, it held no work) did.
        """
        if self.exit_code is None:
            return True
        if not self.signals or self.escalated:
            return False  # it stopped by itself, or did not stop on SIGTERM
        last = self.signals[-1][1]
        if last == "SIGTERM" and self.exit_code == -signal.SIGTERM and not self.consuming:
            return True  # SIGTERM while starting, before its handlers: it held no work
        return self.exit_code == EXPECTED_EXIT.get(last)

    def log_summary(self) -> dict[str, Any]:
        """Count what its whole log holds: tracebacks, never-retrieved task errors, etc."""
        text = self.log.read_text(errors="replace")
        lines = text.splitlines()
        return {
            "incarnation": self.name,
            "exit_code": self.exit_code,
            "signals": [name for _, name in self.signals],
            "expected_exit": self.expected_exit(),
            "sigkill_after_sigterm": self.escalated,
            "stopped_while_starting": not self.consuming and self.exit_code is not None,
            "tracebacks": text.count(TRACEBACK),
            "never_retrieved": text.count(NEVER_RETRIEVED),
            "error_lines": len(self.error_times),
            "max_poll_lines": sum(MAX_POLL in line.lower() for line in lines),
            "raw_lines": sum(1 for line in lines if line.strip() and not line.startswith("{")),
            "lost_events": sum(kind == "lost" for _, kind, _ in self.changes),
            "log": str(self.log),
        }


@dataclass(frozen=True)
class Snapshot:
    """Who owns which partition now, and where each live incarnation's ops server is."""

    owners: dict[int, tuple[str, ...]]
    ops_ports: dict[str, int]


class Fleet:
    """The replicas of one scenario. Safe to use from the scenario and sampler threads."""

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        *,
        group: str,
        static_membership: bool = False,
    ) -> None:
        """Prepare replicas with environment ``env``; nothing runs yet."""
        self.env = env
        self.workdir = workdir
        self.group = group
        self.static_membership = static_membership
        self.incarnations: list[Incarnation] = []
        self._lock = threading.RLock()

    def start(self, member: str, **extra_env: str) -> Incarnation:
        """Start a new process for ``member`` (a restart if it had one before)."""
        with self._lock:
            number = sum(i.member == member for i in self.incarnations)
            env = {**self.env, **extra_env}
            if self.static_membership:
                env["BATCH_RUNNER_GROUP_INSTANCE_ID"] = f"{self.group}-{member}"
            replica = start_replica(env, self.workdir)
            incarnation = Incarnation(
                member, number, replica.process, replica.log, time.time(), LogTail(replica.log)
            )
            self.incarnations.append(incarnation)
            return incarnation

    def current(self, member: str) -> Incarnation | None:
        """Return the live incarnation of ``member``, if any."""
        with self._lock:
            for incarnation in reversed(self.incarnations):
                if incarnation.member == member and incarnation.process.poll() is None:
                    return incarnation
        return None

    def live(self) -> list[Incarnation]:
        """Return the incarnations still running, oldest first."""
        with self._lock:
            return [i for i in self.incarnations if i.process.poll() is None]

    def signal(self, incarnation: Incarnation, signum: signal.Signals) -> None:
        """Send ``signum`` to ``incarnation`` and note it (its log is read first)."""
        with self._lock:
            incarnation.refresh()
            incarnation.signals.append((time.time(), signum.name))
            with contextlib.suppress(ProcessLookupError):
                incarnation.process.send_signal(signum)

    def kill(self, incarnation: Incarnation) -> None:
        """SIGKILL ``incarnation`` and reap it."""
        self.signal(incarnation, signal.SIGKILL)
        incarnation.process.wait(timeout=30)
        with self._lock:
            incarnation.refresh()

    def terminate(self, incarnations: list[Incarnation], timeout_s: float) -> None:
        """SIGTERM ``incarnations`` at once; SIGKILL those still running after ``timeout_s``."""
        for incarnation in incarnations:
            self.signal(incarnation, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for incarnation in incarnations:
            try:
                incarnation.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                incarnation.escalated = True
                self.kill(incarnation)
        self.refresh()

    def refresh(self) -> None:
        """Read every incarnation's new log lines."""
        with self._lock:
            for incarnation in self.incarnations:
                incarnation.refresh()

    def snapshot(self) -> Snapshot:
        """Refresh, then return the owners of each partition and the live ops ports."""
        with self._lock:
            self.refresh()
            owners: dict[int, list[str]] = {}
            ports = {}
            for incarnation in self.incarnations:
                if not incarnation.alive():
                    continue
                for partition in incarnation.owned:
                    owners.setdefault(partition, []).append(incarnation.name)
                if incarnation.ops_port:
                    ports[incarnation.name] = incarnation.ops_port
            return Snapshot({p: tuple(o) for p, o in owners.items()}, ports)

    def kill_all(self) -> None:
        """SIGKILL whatever still runs (clean-up after a harness failure)."""
        for incarnation in self.live():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.kill(incarnation)


def http_get(port: int, path: str, timeout_s: float = 1.0) -> tuple[int, bytes] | None:
    """GET ``http://127.0.0.1:PORT/PATH``; return the status and body, or None if no answer."""
    return _http("GET", port, path, None, timeout_s)


def http_post(
    port: int, path: str, body: bytes, timeout_s: float = 5.0
) -> tuple[int, bytes] | None:
    """POST JSON ``body`` to ``http://127.0.0.1:PORT/PATH``; return status and body, or None."""
    return _http("POST", port, path, body, timeout_s)


def _http(
    method: str, port: int, path: str, body: bytes | None, timeout_s: float
) -> tuple[int, bytes] | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def metric_value(text: bytes, name: str) -> float | None:
    """Return the sum of the samples of metric ``name`` in a Prometheus exposition."""
    total: float | None = None
    prefix = name.encode()
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        rest = line[len(prefix) :]
        if rest[:1] not in {b" ", b"{"}:
            continue  # another metric whose name starts with this one
        with contextlib.suppress(ValueError, IndexError):
            total = (total or 0.0) + float(line.rsplit(b" ", 1)[1])
    return total
