"""Real third-party model servers serving the iris model: MLServer and KServe.

``batch-runner serve-model`` is this project's own server and accepts every shape the
consumer sends; real servers are stricter, so the consumer is also tested against them.
Each is installed from PyPI, with pinned versions, into a virtual environment of its own
under the project's cache (``tools.localkafka.broker.cache_root()/model-servers/``, keyed by
name, version, Python and the pins), with ``uv venv`` and ``uv pip install``. The iris
model is trained there by the server's own scikit-learn, the way ``serve-model`` trains
it (``real_server_scripts/train_iris.py``). The first run installs (a minute or so with
an empty uv cache); later runs find the environment ready and only start the server.
An install that fails raises :class:`RealServerError` saying what failed and why: the
tests that use these servers fail loudly rather than skip.

- **MLServer** 1.7.1 with ``mlserver-sklearn``: the reference Open Inference Protocol
  (v2) server in Python. ``uvloop`` is pinned to 0.21: with 0.22 and later MLServer's
  inference workers die at start-up ("There is no current event loop").
- **KServe** 0.21.0's ``ModelServer`` with a model class reading inputs the way KServe's
  sklearn runtime does (``real_server_scripts/kserve_iris.py``; that runtime is not on
  PyPI), serving v1 and v2.

:func:`running` starts one on free loopback ports and stops it (its whole process group)
afterwards. ``batch-runner real-server mlserver|kserve`` runs one in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from schemas.errors import ToolError
from tools.localkafka.broker import cache_root, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from consumer.protocols import ProtocolName

__all__ = [
    "KSERVE",
    "MLSERVER",
    "SERVERS",
    "RealServer",
    "RealServerError",
    "ServerKind",
    "environment",
    "running",
]

SCRIPTS: Final = Path(__file__).resolve().parent / "real_server_scripts"
MODEL_NAME: Final = "iris"
INSTALL_TIMEOUT_S: Final = 900.0
READY_TIMEOUT_S: Final = 180.0


class RealServerError(ToolError):
    """A real model server could not be installed or started; the message says why."""


@dataclass(frozen=True)
class ServerKind:
    """One real model server: what to install and which protocols it serves."""

    name: str
    title: str
    version: str
    requirements: tuple[str, ...]
    protocols: tuple[ProtocolName, ...]

    def key(self) -> str:
        """Return the cache directory name: name, version, Python, and a digest of the pins."""
        python = f"py{sys.version_info.major}{sys.version_info.minor}"
        digest = hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:10]
        return f"{self.name}-{self.version}-{python}-{digest}"


MLSERVER: Final = ServerKind(
    name="mlserver",
    title="MLServer",
    version="1.7.1",
    requirements=(
        "mlserver==1.7.1",
        "mlserver-sklearn==1.7.1",
        "scikit-learn==1.9.1",
        "joblib",
        "uvloop==0.21.0",
    ),
    protocols=("v2",),
)
KSERVE: Final = ServerKind(
    name="kserve",
    title="KServe",
    version="0.21.0",
    requirements=("kserve==0.21.0", "scikit-learn==1.9.1", "joblib"),
    protocols=("v1", "v2"),
)
SERVERS: Final = {kind.name: kind for kind in (MLSERVER, KSERVE)}


# --- installing ---------------------------------------------------------------------------


def _run(argv: list[str], what: str, kind: ServerKind, root: Path) -> None:
    try:
        done = subprocess.run(  # noqa: S603 - our own fixed commands
            argv,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RealServerError(
            f"could not {what} for {kind.title} {kind.version} in {root}: {exc}",
        ) from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-3000:]
        raise RealServerError(
            f"could not {what} for {kind.title} {kind.version} in {root} "
            f"(exit {done.returncode}); its output ends with:\n{output}",
        )


def _uv() -> str:
    # ``uv run`` tells its children where it is; otherwise look on PATH.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise RealServerError(
            "`uv` was not found on PATH: the real model servers are installed with it "
            "(pip install uv, or see https://docs.astral.sh/uv/)",
        )
    return uv


def _python(root: Path) -> Path:
    return root / "venv" / "bin" / "python"


def model_path(root: Path) -> Path:
    """Return the trained iris model of the environment at ``root``."""
    return root / "model" / "model.joblib"


def environment(kind: ServerKind) -> Path:
    """Return the directory of ``kind``'s ready environment, installing it first if needed.

    Safe to call from several processes at once (a file lock serialises the install).
    Raises :class:`RealServerError` if the install or the training fails.
    """
    base = cache_root() / "model-servers"
    root = base / kind.key()
    marker = root / "ready.json"
    if marker.is_file():
        return root
    base.mkdir(parents=True, exist_ok=True)
    with (base / f"{kind.key()}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():  # another process finished it while we waited
            return root
        shutil.rmtree(root, ignore_errors=True)  # a half-made one from an interrupted run
        uv = _uv()
        started = time.monotonic()
        print(  # noqa: T201 - a slow first step deserves a word on the terminal
            f"installing {kind.title} {kind.version} into {root} (once)",
            file=sys.stderr,
            flush=True,
        )
        _run(
            [uv, "venv", "--quiet", "--python", sys.executable, str(root / "venv")],
            "create a venv",
            kind,
            root,
        )
        _run(
            [uv, "pip", "install", "--quiet", "--python", str(_python(root)), *kind.requirements],
            f"install {' '.join(kind.requirements)} from PyPI",
            kind,
            root,
        )
        model_path(root).parent.mkdir(parents=True)
        _run(
            [str(_python(root)), str(SCRIPTS / "train_iris.py"), str(model_path(root))],
            "train the iris model",
            kind,
            root,
        )
        marker.write_text(
            json.dumps(
                {
                    "requirements": kind.requirements,
                    "install_seconds": round(time.monotonic() - started, 1),
                },
            ),
        )
    return root


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealServer:
    """A running real model server serving the iris model."""

    kind: ServerKind
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def endpoint(self, protocol: ProtocolName) -> str:
        """Return the URL the consumer posts to for ``protocol``."""
        if protocol not in self.kind.protocols:
            served = ", ".join(self.kind.protocols)
            raise ValueError(f"{self.kind.title} serves {served}, not {protocol}")
        if protocol == "v1":
            return f"{self.url}/v1/models/{MODEL_NAME}:predict"
        return f"{self.url}/v2/models/{MODEL_NAME}/infer"

    def log(self) -> str:
        """Return what the server wrote to its log so far."""
        return self.log_path.read_text(errors="replace")


def _mlserver_argv(root: Path, workdir: Path, port: int) -> list[str]:
    """Write MLServer's settings and its model's settings; return its command."""
    repository = workdir / "models"
    (repository / MODEL_NAME).mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "metrics_dir": str(workdir / "metrics"),
    }
    (repository / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_path(root)), "version": "1"},
    }
    (repository / MODEL_NAME / "model-settings.json").write_text(json.dumps(model_settings))
    return [str(root / "venv" / "bin" / "mlserver"), "start", str(repository)]


def _kserve_argv(root: Path, port: int) -> list[str]:
    return [
        str(_python(root)),
        str(SCRIPTS / "kserve_iris.py"),
        "--model_name",
        MODEL_NAME,
        "--model_path",
        str(model_path(root)),
        "--http_port",
        str(port),
        "--grpc_port",
        str(free_port()),
        "--enable_grpc",
        "false",
    ]


def _stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group (its workers too); SIGKILL it after ``grace_s``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind by a dead parent
    if process.poll() is None:
        process.wait(timeout=10)


def _wait_ready(server: RealServer, timeout_s: float) -> None:
    ready = f"{server.url}/v2/models/{MODEL_NAME}/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RealServerError(
                f"{server.kind.title} exited with {server.process.returncode} before it was "
                f"ready; its log ends with:\n{server.log()[-3000:]}",
            )
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(ready, timeout=2) as answer,  # noqa: S310 - loopback URL
        ):
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise RealServerError(
        f"{server.kind.title} was not ready at {ready} within {timeout_s:.0f}s; its log "
        f"ends with:\n{server.log()[-3000:]}",
    )


@contextlib.contextmanager
def running(
    kind: ServerKind,
    workdir: Path | None = None,
    *,
    port: int = 0,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[RealServer]:
    """Install ``kind`` if needed, start it on ``port`` (0: a free one), yield it when ready.

    Its files and log go to ``workdir`` (default: a temporary directory, removed after).
    The server is stopped when the block ends.
    """
    root = environment(kind)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{kind.name}-")))
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        argv = _mlserver_argv(root, workdir, port) if kind is MLSERVER else _kserve_argv(root, port)
        log_path = workdir / f"{kind.name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - our own fixed command
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,
            )
        try:
            server = RealServer(kind, f"http://127.0.0.1:{port}", process, log_path)
            _wait_ready(server, ready_timeout_s)
            yield server
        finally:
            _stop(process)


# --- the command --------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    kind = SERVERS[args.server]

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        with running(kind, Path(args.workdir) if args.workdir else None, port=args.port) as server:
            print(f"{kind.title} {kind.version} serving {MODEL_NAME!r} at {server.url}")  # noqa: T201
            for protocol in kind.protocols:
                print(f"  {protocol}: {server.endpoint(protocol)}")  # noqa: T201
            sys.stdout.flush()
            server.process.wait()
            print(f"{kind.title} exited with {server.process.returncode}", file=sys.stderr)  # noqa: T201
            return 1
    except RealServerError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 130


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``real-server`` to the ``batch-runner`` parser."""
    parser = subparsers.add_parser(
        "real-server",
        help="install (once) and run MLServer or KServe serving the iris model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("server", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--workdir", help="where its files and log go (default: a temporary dir)")
    parser.set_defaults(handler=_serve)
