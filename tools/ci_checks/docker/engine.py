"""A Docker engine for the checks: the one that answers, or a private ``dockerd`` of our own.

Order: ``DOCKER_HOST`` if set (it must answer); else the default socket if an engine
answers there; else, as root with ``dockerd`` installed, a daemon started for the
duration of the check and stopped afterwards.

The private daemon listens on a socket of its own (``/run/kafka-batch-runner-docker``),
not on ``/var/run/docker.sock``: only the processes the check starts see it (through
``DOCKER_HOST``), so a test suite running beside it on the same machine does not switch
its broker to testcontainers. Its images and build cache live under the project's cache
directory (``~/.cache/kafka-batch-runner/docker``) and persist between runs. It runs
without iptables rules (``--iptables=false``: published ports go through Docker's
userland proxy, which is all the host needs) on a bridge of its own, ``kbr-docker0``,
which is removed with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tools.localkafka.broker import cache_root

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

RUN_DIR = Path("/run/kafka-batch-runner-docker")
DEFAULT_SOCKET = Path("/var/run/docker.sock")
BRIDGE = "kbr-docker0"
BRIDGE_ADDRESS = "172.28.255.1/24"
# Networks compose creates come from here, away from the bridge's.
ADDRESS_POOL = "base=172.29.0.0/16,size=24"
# Directories dockerd creates wherever it runs; removed again if it created them (empty).
SHARED_DIRS = (
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class EngineError(RuntimeError):
    """No Docker engine could be found or started; the message says what is missing."""


@dataclass
class Engine:
    """A Docker engine: where it listens and whether this process started it."""

    host: str
    started: bool
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # The SHARED_DIRS that did not exist before this engine started.
    created_dirs: list[Path] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The environment for ``docker`` and ``docker-compose`` on this engine."""
        return {**os.environ, "DOCKER_HOST": self.host}


def docker_cli() -> str:
    """Return the ``docker`` command-line client, or say how to get one."""
    path = shutil.which("docker")
    if path is None:
        raise EngineError("the docker client is missing (Debian: apt-get install docker.io)")
    return path


def answers(host: str, timeout_s: float = 10.0) -> bool:
    """Return whether the engine at ``host`` (a ``DOCKER_HOST`` value) answers."""
    try:
        done = subprocess.run(  # noqa: S603 - the docker client, fixed arguments
            [docker_cli(), "--host", host, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    return subprocess.run([ip, *args], capture_output=True, text=True, check=False)  # noqa: S603


def _bridge_exists() -> bool:
    return _ip("link", "show", BRIDGE).returncode == 0


def _create_bridge() -> None:
    for args in (
        ("link", "add", "name", BRIDGE, "type", "bridge"),
        ("addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE),
        ("link", "set", BRIDGE, "up"),
    ):
        done = _ip(*args)
        if done.returncode != 0:
            raise EngineError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _remove_bridge() -> None:
    if _bridge_exists():
        _ip("link", "delete", BRIDGE)


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def unmount_under(root: Path) -> None:
    """Unmount whatever is still mounted below ``root`` (network namespaces, a chroot's /proc)."""
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        umount = shutil.which("umount") or "/usr/bin/umount"
        for point in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
            subprocess.run([umount, "-l", point], capture_output=True, check=False)  # noqa: S603


def _processes_under(path: Path) -> list[int]:
    """Return the pids whose command line names ``path`` (our daemon's own processes)."""
    found: list[int] = []
    marker = str(path).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def start_private(log: Path) -> Engine:
    """Start ``dockerd`` on the private socket; return once it answers."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineError(
            "no Docker engine answers and dockerd is not installed "
            "(Debian: apt-get install docker.io), or set DOCKER_HOST to an engine",
        )
    if os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers, and starting dockerd needs root: "
            "start Docker yourself (DOCKER_HOST if not on the default socket)",
        )
    host = f"unix://{RUN_DIR / 'docker.sock'}"
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    data_root = cache_root() / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    if not _bridge_exists():
        _create_bridge()
    created = [d for d in SHARED_DIRS if not d.exists()]
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - dockerd from PATH, fixed arguments
            [
                dockerd,
                "--host",
                host,
                "--data-root",
                str(data_root),
                "--exec-root",
                str(RUN_DIR / "exec"),
                "--pidfile",
                str(RUN_DIR / "dockerd.pid"),
                "--iptables=false",
                "--bridge",
                BRIDGE,
                "--default-address-pool",
                ADDRESS_POOL,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    engine = Engine(host=host, started=True, log=log, process=process, created_dirs=created)
    if not _wait(lambda: process.poll() is not None or answers(host, 3), START_TIMEOUT_S) or (
        process.poll() is not None
    ):
        stop(engine)
        raise EngineError(f"dockerd did not start:\n{_tail(log)}")
    return engine


def stop(engine: Engine) -> None:
    """Stop an engine this process started (SIGTERM, SIGKILL after a grace period), tidy up.

    An engine found running is left alone.
    """
    if not engine.started:
        return
    pid = engine.process.pid if engine.process is not None else _pid_from_file()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if engine.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                engine.process.wait(timeout=STOP_TIMEOUT_S)
        else:
            _wait(lambda: not Path(f"/proc/{pid}").exists(), STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if engine.process is not None:
            engine.process.wait()
    # dockerd stops the containerd it started; anything of ours still running is a leak.
    for leftover in _processes_under(RUN_DIR):
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover, signal.SIGKILL)
    _remove_bridge()
    unmount_under(RUN_DIR)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    for directory in engine.created_dirs:  # deepest first, as listed
        with contextlib.suppress(OSError):
            directory.rmdir()


def _pid_from_file() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((RUN_DIR / "dockerd.pid").read_text().strip())
    return None


@contextlib.contextmanager
def docker_engine(log: Path, say: Callable[[str], None]) -> Iterator[Engine]:
    """Yield an engine that answers; stop it afterwards if it was started here."""
    configured = os.environ.get("DOCKER_HOST")
    private = f"unix://{RUN_DIR / 'docker.sock'}"
    if configured:
        if not answers(configured):
            raise EngineError(f"DOCKER_HOST={configured} does not answer")
        say(f"  using the Docker engine at {configured} (DOCKER_HOST)")
        yield Engine(host=configured, started=False)
        return
    if DEFAULT_SOCKET.exists() and answers(f"unix://{DEFAULT_SOCKET}"):
        say(f"  using the Docker engine at {DEFAULT_SOCKET}")
        yield Engine(host=f"unix://{DEFAULT_SOCKET}", started=False)
        return
    if Path(private.removeprefix("unix://")).exists() and answers(private):
        # A daemon of an earlier check that did not get to stop it: ours to stop now.
        say(f"  found the private dockerd of an earlier run at {private}; it is stopped after")
        engine = Engine(host=private, started=True, log=log)
    else:
        started = time.monotonic()
        engine = start_private(log)
        say(f"  started a private dockerd at {private} ({time.monotonic() - started:.1f}s)")
    try:
        yield engine
    finally:
        stop(engine)
        say("  stopped the private dockerd")
