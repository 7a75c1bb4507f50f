"""Which ``BATCH_RUNNER_*`` variables a replica reads, and which it would ignore (typos).

The list follows the code: :func:`known_variables` builds settings from a minimal
environment that records every name looked up in it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from consumer.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Recorder(Mapping[str, str]):
    """A read-only environment that remembers every name looked up in it."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def known_variables() -> frozenset[str]:
    """Return the ``BATCH_RUNNER_*`` names :meth:`Settings.from_env` reads.

    Found by building settings from a minimal environment that records each lookup, so
    the list follows the code rather than being kept by hand.
    """
    env = _Recorder(
        {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "BATCH_RUNNER_ENDPOINT": "http://model/"},
    )
    Settings.from_env(env)
    return frozenset(name for name in env.asked if name.startswith("BATCH_RUNNER_"))


# Read by other commands of the project, and by its tests and checks, not by a replica.
OTHER_COMMANDS_VARIABLES = frozenset(
    {
        "BATCH_RUNNER_CACHE_DIR",  # the local broker's jars, the model servers, Docker images
        "BATCH_RUNNER_QUICK_TESTS",  # make unit: property tests with fewer examples
        # docker-compose.yml and the Docker check
        "BATCH_RUNNER_KAFKA_IMAGE",
        "BATCH_RUNNER_PYTHON_IMAGE",
        "BATCH_RUNNER_BUILD_NETWORK",
        "BATCH_RUNNER_KAFKA_PORT",
        "BATCH_RUNNER_MODEL_PORT",
        "BATCH_RUNNER_DEBIAN_MIRROR",
    },
)


def unknown_variables(env: Mapping[str, str]) -> dict[str, str | None]:
    """Return the ``BATCH_RUNNER_*`` names in ``env`` a replica ignores.

    Each maps to the closest name a replica does read (a likely typo), or None.
    """
    prefix = "BATCH_RUNNER_"
    known = sorted(name.removeprefix(prefix) for name in known_variables())
    unknown: dict[str, str | None] = {}
    for name in sorted(env):
        if not name.startswith(prefix) or name in OTHER_COMMANDS_VARIABLES:
            continue
        suffix = name.removeprefix(prefix)
        if suffix not in known:
            # Compared without the shared prefix, which would make every name look close.
            close = difflib.get_close_matches(suffix, known, n=1)
            unknown[name] = prefix + close[0] if close else None
    return unknown
