"""The test server's behaviour and counters, as values: actions, config, stats, item keys.

An action is what the server does to one request (see the package docstring,
:mod:`tools.testservers.inference`); :class:`ServerConfig` holds the actions and latencies of a run,
:class:`ServerStats` what arrived and how it was answered.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec
import orjson

Action: TypeAlias = int | str
Overload: TypeAlias = Literal["reject", "queue"]

NAMED_ACTIONS: Final = frozenset({"ok", "reset", "hang", "truncated", "garbage", "wrong_count"})


def check_action(action: Action) -> None:
    """Raise :class:`ValueError` for an action the server cannot take."""
    if isinstance(action, int):
        if not 200 <= action <= 599:
            raise ValueError(f"HTTP status {action} is outside 200-599")
        return
    if action in NAMED_ACTIONS:
        return
    if action.startswith("delay:"):
        try:
            ms = float(action.removeprefix("delay:"))
        except ValueError:
            ms = -1.0
        if ms >= 0:
            return
    raise ValueError(
        f"unknown action {action!r} (an HTTP status, delay:<ms>, or one of "
        f"{', '.join(sorted(NAMED_ACTIONS))})"
    )


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the server behaves; :mod:`tools.testservers.inference` says what each field means."""

    latency_ms: float = 0.0
    latency_max_ms: float | None = None
    # The capacity model: K requests served at once (None: no limit); beyond K a request
    # is refused (429 with Retry-After) or waits its turn first come, first served.
    max_concurrency: int | None = None
    overload: Overload = "reject"
    # An outage: every model request's connection is reset (counted as "down").
    outage: bool = False
    retry_after_s: float = 1.0
    script: tuple[Action, ...] = ()
    item_scripts: dict[str, tuple[Action, ...]] = msgspec.field(default_factory=dict)
    poison_status: int = 500
    track_items: bool = True
    # Request headers whose values are counted (lower-case names), for auth and tracing tests.
    record_headers: tuple[str, ...] = ("authorization", "traceparent", "x-api-key")

    def __post_init__(self) -> None:
        """Refuse settings that cannot be acted on."""
        if self.latency_ms < 0 or (
            self.latency_max_ms is not None and self.latency_max_ms < self.latency_ms
        ):
            raise ValueError("latency_ms must be >= 0 and latency_max_ms >= latency_ms")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.overload not in {"reject", "queue"}:
            raise ValueError(f"overload must be reject or queue, not {self.overload!r}")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        check_action(self.poison_status)
        for action in self.script:
            check_action(action)
        for actions in self.item_scripts.values():
            for action in actions:
                check_action(action)


class ServerStats(msgspec.Struct, frozen=True, kw_only=True):
    """What the server received and how it answered, since start or the last reset.

    ``answers`` counts outcomes: HTTP statuses as strings (``"200"``, ``"429"``,
    ``"503"``...) and ``"reset"``, ``"hang"``, ``"truncated"``, ``"garbage"``,
    ``"wrong_count"``, ``"down"`` (reset during an ``outage``). ``rejected`` counts the
    429s sent for exceeding ``max_concurrency`` (also in ``answers["429"]``).
    ``max_in_flight`` is the most requests in progress at once, counting those then
    rejected or queued; ``serving`` and ``max_serving`` count only those admitted within
    the capacity, ``queued`` those waiting for it. ``attempts`` maps each
    :func:`item_key` to the number of requests that carried it (empty when
    ``track_items`` is off). ``request_sizes`` maps items per request to requests.
    ``latency_ms`` counts the 200 answers by their time in the server (arrival to answer,
    queueing included) in whole milliseconds.
    """

    requests: int
    items: int
    answers: dict[str, int]
    rejected: int
    in_flight: int
    max_in_flight: int
    attempts: dict[str, int]
    request_sizes: dict[int, int]
    protocols: dict[str, int]
    headers: dict[str, int] = msgspec.field(default_factory=dict)
    """``"name: value"`` of each recorded header (see ``record_headers``) -> requests."""
    serving: int = 0
    max_serving: int = 0
    queued: int = 0
    latency_ms: dict[int, int] = msgspec.field(default_factory=dict)


def item_key(item: object) -> str:
    """Return the key the server counts an item's attempts under: its compact JSON."""
    return orjson.dumps(item).decode()
