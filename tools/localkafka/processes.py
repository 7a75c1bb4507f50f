"""Stopping child processes the way the service expects to be stopped."""

from __future__ import annotations

import signal
import subprocess


def terminate(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM ``process`` (a replica drains and commits on it); SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
