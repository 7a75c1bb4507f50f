"""Frozen settings of one consumer replica, built once from the environment and the CLI.

Nothing else in the service reads ``os.environ``: ``consumer.__main__`` calls
:meth:`Settings.from_env` with the process environment and the parsed flags, and every
stage receives the values it needs.

Environment variables (CLI flags of ``batch-runner consume`` override them):

``KAFKA_BOOTSTRAP_SERVERS``
    the cluster (required).
``KAFKA_*`` (any other)
    passed through to librdkafka for both the consumer and the producer:
    ``KAFKA_SECURITY_PROTOCOL=SASL_SSL`` becomes ``security.protocol=SASL_SSL``,
    ``KAFKA_SASL_PASSWORD`` becomes ``sasl.password`` and so on.
``BATCH_RUNNER_ENDPOINT``, ``BATCH_RUNNER_PROTOCOL``
    the default inference endpoint (full URL to POST to) and its protocol
    (``raw``, ``v1`` or ``v2``).
``BATCH_RUNNER_TARGETS``
    named endpoints a request may select with ``target``: ``name=PROTOCOL:URL`` entries
    separated by whitespace or commas, e.g. ``iris=v1:http://models/v1/models/iris:predict``.
``BATCH_RUNNER_CODEC``
    how each endpoint's codec shapes items and reads predictions: ``[TARGET:]KEY=VALUE``
    entries separated by whitespace (shell quoting applies), without ``TARGET:`` for the
    default endpoint, e.g. ``rows=true kserve:columns=a,b,c mlserver:datatype=FP32``; the
    keys are :data:`consumer.protocols.OPTION_NAMES` (docs/contract.md describes them).
``BATCH_RUNNER_<FIELD>``
    every other field of :class:`Settings`, upper-cased (``BATCH_RUNNER_MAX_IN_FLIGHT=64``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

from consumer.protocols import (
    DEFAULT_OPTIONS,
    PROTOCOLS,
    CodecOptions,
    ProtocolName,
    codec_options,
    get_codec,
)
from consumer.retry import RetryPolicy
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

DEFAULT_TARGET = "default"
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# librdkafka options the service sets itself: a pass-through may not weaken them.
_RESERVED_KAFKA_OPTIONS = frozenset(
    {
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.idempotence",
        "acks",
        "group.id",
    },
)

# librdkafka options that only a consumer takes: the producer and the admin client would
# warn about each (CONFWARN) if they were passed through to them.
CONSUMER_ONLY_OPTIONS = frozenset(
    {
        "auto.commit.interval.ms",
        "auto.offset.reset",
        "check.crcs",
        "consume.callback.max.messages",
        "coordinator.query.interval.ms",
        "enable.partition.eof",
        "fetch.error.backoff.ms",
        "fetch.max.bytes",
        "fetch.message.max.bytes",
        "fetch.min.bytes",
        "fetch.queue.backoff.ms",
        "fetch.wait.max.ms",
        "group.instance.id",
        "group.protocol",
        "group.protocol.type",
        "group.remote.assignor",
        "heartbeat.interval.ms",
        "isolation.level",
        "max.partition.fetch.bytes",
        "max.poll.interval.ms",
        "partition.assignment.strategy",
        "queued.max.messages.kbytes",
        "queued.min.messages",
        "session.timeout.ms",
    },
)
# Options the consumer group protocol (KIP-848) refuses: the broker owns them there.
_CLASSIC_GROUP_ONLY = frozenset(
    {"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"},
)
GroupProtocol = Literal["classic", "consumer"]
GROUP_PROTOCOLS: tuple[GroupProtocol, ...] = ("classic", "consumer")
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000
RECONNECT_BACKOFF_MAX_MS = 2000


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An inference endpoint configured on the consumer (never taken from a message).

    ``headers`` (an ``Authorization`` token, say) are sent with every request to it; they
    come from the environment or a file, never from a message, and never appear in a repr.
    ``codec`` says how items are shaped for it and predictions read from its answers.
    """

    name: str
    url: str
    protocol: ProtocolName = "v1"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    codec: CodecOptions = DEFAULT_OPTIONS

    def __post_init__(self) -> None:
        """Validate the name, the URL and the protocol."""
        if not _TARGET_NAME.match(self.name):
            raise ConfigError(f"target name {self.name!r}: use letters, digits, '.', '_', '-'")
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"endpoint {self.name!r}: {self.url!r} is not an http:// or https:// URL",
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"endpoint {self.name!r}: protocol {self.protocol!r} is not one of "
                f"{', '.join(PROTOCOLS)}",
            )
        try:
            get_codec(self.protocol, self.codec)
        except ValueError as exc:
            raise ConfigError(f"endpoint {self.name!r}: {exc}") from None


def parse_target(spec: str) -> Endpoint:
    """Parse ``name=PROTOCOL:URL`` (or ``name=URL`` for protocol v1) into an :class:`Endpoint`."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ConfigError(f"target {spec!r}: expected NAME=PROTOCOL:URL")
    protocol, colon, url = rest.partition(":")
    if colon and protocol in PROTOCOLS:
        return Endpoint(name=name.strip(), url=url.strip(), protocol=protocol)
    return Endpoint(name=name.strip(), url=rest.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one replica needs to know, validated at construction."""

    bootstrap_servers: str
    endpoints: Mapping[str, Endpoint]
    group_id: str = "batch-runner"
    requests_topic: str = "batch-requests"
    results_topic: str = "batch-results"
    dlq_topic: str = "batch-requests.dlq"
    # Split: items per HTTP request unless a request asks for another value up to the max.
    items_per_request: int = 1
    max_items_per_request: int = 1000
    # Dispatch.
    max_in_flight: int = 64
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    max_response_bytes: int = 16 * 1024 * 1024
    max_attempts: int = 60
    max_elapsed_s: float = 600.0
    # The same HTTP 500 body this many times for one work unit is the model's final
    # answer to its input, not a passing fault (0: retry such answers like any 500).
    max_same_error: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # Backpressure: pause fetching while more items than this are buffered.
    max_buffered_items: int = 10_000
    # Commits and shutdown.
    commit_interval_s: float = 0.5
    commit_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    revoke_grace_s: float = 10.0
    # Group membership. ``classic`` (cooperative-sticky) with a short session timeout
    # hands a crashed replica's partitions on within seconds; ``consumer`` is KIP-848,
    # whose session timeout the broker sets (45 s by default). A group instance id
    # (static membership, e.g. the pod name) lets a restarted replica take its
    # partitions back at once, but a stopped one keeps them for the session timeout.
    group_protocol: GroupProtocol = "classic"
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    group_instance_id: str = ""
    # A partition with work that has not moved for this long is stalled: a health failure
    # unless something explains it (paused for backpressure, the model failing).
    stall_timeout_s: float = 60.0
    # Source latency knobs: how long one poll waits when idle, how many messages at once.
    poll_timeout_s: float = 0.5
    poll_batch: int = 500
    max_message_bytes: int = 1024 * 1024
    # Largest record value (with key) the replica writes, lowered at start-up to what the
    # results and DLQ topics' max.message.bytes leave room for. A bigger prediction becomes
    # a result_too_large error; a bigger invalid request a dead letter without its value.
    max_result_bytes: int = 1_000_000
    # Operations server (/metrics, /healthz, /readyz); port -1 turns it off, 0 picks one.
    metrics_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapers reach the pod's address
    metrics_port: int = 9100
    # May hold credentials (sasl.password, ssl.key.password): kept out of reprs.
    kafka_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    def __post_init__(self) -> None:  # noqa: C901 - one flat check per setting
        """Check every value; a bad one raises :class:`ConfigError` naming it."""
        if not self.bootstrap_servers:
            raise ConfigError("KAFKA_BOOTSTRAP_SERVERS (or --bootstrap-servers) is required")
        if not self.endpoints:
            raise ConfigError(
                "no inference endpoint is configured: set BATCH_RUNNER_ENDPOINT "
                "(or --endpoint URL) and/or BATCH_RUNNER_TARGETS (or --target NAME=PROTOCOL:URL)",
            )
        for name in ("items_per_request", "max_items_per_request", "max_in_flight"):
            _positive(name, getattr(self, name))
        for name in ("max_buffered_items", "poll_batch", "max_response_bytes"):
            _positive(name, getattr(self, name))
        for name in ("request_timeout_s", "connect_timeout_s", "commit_interval_s"):
            _positive(name, getattr(self, name))
        for name in ("poll_timeout_s", "max_message_bytes", "max_result_bytes"):
            _positive(name, getattr(self, name))
        if self.items_per_request > self.max_items_per_request:
            raise ConfigError("items_per_request must not exceed max_items_per_request")
        if self.drain_timeout_s < 0 or self.revoke_grace_s < 0:
            raise ConfigError("drain_timeout_s and revoke_grace_s must be >= 0")
        for key in self.kafka_options:
            if key in _RESERVED_KAFKA_OPTIONS:
                raise ConfigError(
                    f"Kafka option {key!r} is set by the service for at-least-once delivery "
                    "and cannot be overridden",
                )
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port {self.metrics_port}: use 0-65535, or -1 for none")
        if self.log_format not in {"json", "text"}:
            raise ConfigError(f"log_format {self.log_format!r}: use json or text")
        self._check_group()
        self.retry_policy()  # validates the retry settings

    def _check_group(self) -> None:
        """Check the group membership and liveness settings."""
        for name in ("commit_timeout_s", "session_timeout_s", "heartbeat_interval_s"):
            _positive(name, getattr(self, name))
        _positive("stall_timeout_s", self.stall_timeout_s)
        if self.group_protocol not in GROUP_PROTOCOLS:
            raise ConfigError(
                f"group_protocol {self.group_protocol!r}: use {' or '.join(GROUP_PROTOCOLS)}",
            )
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ConfigError(
                "heartbeat_interval_s must be at most a third of session_timeout_s "
                f"(got {self.heartbeat_interval_s:g} and {self.session_timeout_s:g})",
            )
        if self.max_poll_interval_s <= 0:
            raise ConfigError("max.poll.interval.ms must be > 0")
        raw = self.kafka_options.get("session.timeout.ms", self.session_timeout_s * 1000)
        try:
            session = float(raw)
        except ValueError:
            raise ConfigError(f"session.timeout.ms={raw!r} is not a number") from None
        if self.group_protocol == "classic" and self.max_poll_interval_s * 1000 < session:
            raise ConfigError(
                f"max.poll.interval.ms ({self.max_poll_interval_s * 1000:g}) must be at least "
                f"the session timeout ({session:g} ms): lower BATCH_RUNNER_SESSION_TIMEOUT_S",
            )

    def retry_policy(self) -> RetryPolicy:
        """Return the retry policy these settings describe."""
        try:
            return RetryPolicy(
                max_attempts=self.max_attempts,
                max_elapsed_s=self.max_elapsed_s,
                base_delay_s=self.backoff_base_s,
                max_delay_s=self.backoff_max_s,
                max_same_error=self.max_same_error,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    @property
    def max_poll_interval_s(self) -> float:
        """The ``max.poll.interval.ms`` of librdkafka (a pass-through option), in seconds.

        It is also the group's rebalance timeout: a member that takes longer to answer a
        rebalance is evicted, so the revoke grace and the rebalance callbacks stay well
        inside it.
        """
        raw = self.kafka_options.get("max.poll.interval.ms", DEFAULT_MAX_POLL_INTERVAL_MS)
        try:
            return float(raw) / 1000
        except ValueError:
            raise ConfigError(f"max.poll.interval.ms={raw!r} is not a number") from None

    @property
    def rebalance_callback_timeout_s(self) -> float:
        """How long a rebalance callback may wait for the pipeline (half the poll interval)."""
        return self.max_poll_interval_s / 2

    @property
    def effective_revoke_grace_s(self) -> float:
        """``revoke_grace_s``, capped at a quarter of ``max.poll.interval.ms``."""
        return min(self.revoke_grace_s, self.max_poll_interval_s / 4)

    def endpoint_for(self, target: str | None) -> Endpoint | None:
        """Return the endpoint a request's ``target`` names (the default when absent)."""
        return self.endpoints.get(target or DEFAULT_TARGET)

    def consumer_config(self) -> dict[str, Any]:
        """Return the librdkafka consumer configuration (pass-through options included)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "group.protocol": self.group_protocol,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": round(self.session_timeout_s * 1000),
            "heartbeat.interval.ms": round(self.heartbeat_interval_s * 1000),
            # Short fetch long-polls: measured 168k items/s sub-batched at 10 ms vs 100k at
            # 100 ms (the fetcher restarts sooner after each pause); latency p50 ~7-9 ms.
            "fetch.wait.max.ms": 10,
            # librdkafka prefetches up to 64 MiB by default: memory would follow the backlog.
            # 4 MiB keeps it following --max-buffered-items (peak RSS 1.14x between a 10k
            # and a 1M backlog, was 1.24x) at the same throughput, provided the fetcher does
            # not back off a whole second each time that queue fills (its default).
            "queued.max.messages.kbytes": 4096,
            "fetch.queue.backoff.ms": 5,
            "fetch.max.bytes": 16 * 1024 * 1024,
            "client.id": f"batch-runner-consumer-{self.group_id}",
            # After an outage, reconnect within 2 s of the broker's return (librdkafka
            # backs off up to 10 s by default); failed attempts are counted, not logged.
            "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
            "statistics.interval.ms": 5000,
        }
        if self.group_instance_id:
            conf["group.instance.id"] = self.group_instance_id
        if self.group_protocol == "consumer":
            for key in _CLASSIC_GROUP_ONLY:
                del conf[key]
        conf.update(self.kafka_options)
        return conf

    def producer_config(self) -> dict[str, Any]:
        """Return the librdkafka producer configuration for results and dead letters."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 1024 * 1024,
            "queue.buffering.max.messages": 500_000,
            # Room for the largest result or dead letter plus key, headers and framing.
            "message.max.bytes": max(self.max_message_bytes, self.max_result_bytes) + 64 * 1024,
            "client.id": f"batch-runner-producer-{self.group_id}",
            "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
            "statistics.interval.ms": 5000,
        }
        # Consumer-only options would make the producer warn: pass the rest through.
        conf.update(
            {k: v for k, v in self.kafka_options.items() if k not in CONSUMER_ONLY_OPTIONS},
        )
        return conf

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:  # noqa: ANN401
        """Build settings from ``env`` (usually ``os.environ``) and non-None ``overrides``.

        ``overrides`` uses the field names; ``endpoint``/``protocol``/``targets``
        (a list of ``NAME=PROTOCOL:URL`` strings), ``codec`` (a list of
        ``[TARGET:]KEY=VALUE``) and ``kafka_option`` (a list of ``key=value``) are
        accepted too, as the CLI passes them.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in {"bootstrap_servers", "endpoints", "kafka_options"}:
                continue
            raw = env.get(f"BATCH_RUNNER_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(f.name, raw, f.type)
        values.update({k: v for k, v in given.items() if k in _field_names(cls)})
        values["bootstrap_servers"] = given.get("bootstrap_servers") or env.get(
            "KAFKA_BOOTSTRAP_SERVERS",
            "",
        )
        values["kafka_options"] = kafka_options(env, given.get("kafka_option") or ())
        values["endpoints"] = _endpoints(env, given)
        return cls(**values)


def _field_names(cls: type[Settings]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0 (got {value})")


def _coerce(name: str, raw: str, annotation: object) -> object:
    kind = str(annotation)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"BATCH_RUNNER_{name.upper()}={raw!r} is not a number") from None
    return raw


def kafka_options(env: Mapping[str, str], cli_options: Sequence[str] = ()) -> dict[str, str]:
    """Return librdkafka options from ``KAFKA_*`` variables and ``key=value`` flags.

    ``KAFKA_SASL_PASSWORD`` becomes ``sasl.password``; ``KAFKA_BOOTSTRAP_SERVERS`` is left
    to the caller. Flags win over the environment.
    """
    options: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith("KAFKA_") and key != "KAFKA_BOOTSTRAP_SERVERS":
            options[key.removeprefix("KAFKA_").lower().replace("_", ".")] = value
    for item in cli_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Kafka option {item!r}: expected key=value")
        options[key.strip()] = value
    return options


def _json_object(source: str, text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"{source}: not valid JSON") from None  # never echo the content
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    return value


def _string_map(source: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{source}: must map header names to strings")
    return dict(value)


def _headers(env: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Collect per-target request headers from a JSON file and/or the environment.

    ``BATCH_RUNNER_HEADERS_FILE`` (or ``--headers-file``): ``{"target": {"Name": "value"}}``
    (``default`` for the default endpoint), e.g. a mounted Kubernetes Secret.
    ``BATCH_RUNNER_ENDPOINT_HEADERS``: ``{"Name": "value"}`` for the default endpoint.
    """
    out: dict[str, dict[str, str]] = {}
    path = given.get("headers_file") or env.get("BATCH_RUNNER_HEADERS_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"headers file {path}: {exc.strerror}") from None
        for target, headers in _json_object(f"headers file {path}", text).items():
            out[target] = _string_map(f"headers file {path}: {target!r}", headers)
    inline = env.get("BATCH_RUNNER_ENDPOINT_HEADERS")
    if inline:
        source = "BATCH_RUNNER_ENDPOINT_HEADERS"
        headers = _string_map(source, _json_object(source, inline))
        out.setdefault(DEFAULT_TARGET, {}).update(headers)
    return out


def _endpoints(env: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, Endpoint]:
    endpoints: dict[str, Endpoint] = {}
    url = given.get("endpoint") or env.get("BATCH_RUNNER_ENDPOINT")
    protocol = given.get("protocol") or env.get("BATCH_RUNNER_PROTOCOL") or "v1"
    if url:
        endpoints[DEFAULT_TARGET] = Endpoint(
            name=DEFAULT_TARGET,
            url=url,
            protocol=cast("ProtocolName", protocol),
        )
    specs = re.split(r"[\s,]+", env.get("BATCH_RUNNER_TARGETS", "").strip())
    specs += list(given.get("targets") or [])
    for spec in specs:
        if spec:
            endpoint = parse_target(spec)
            endpoints[endpoint.name] = endpoint
    for target, headers in _headers(env, given).items():
        if target not in endpoints:
            raise ConfigError(f"headers are configured for target {target!r}, which does not exist")
        endpoints[target] = dataclasses.replace(endpoints[target], headers=headers)
    for target, values in _codec_values(env, given).items():
        if target not in endpoints:
            raise ConfigError(
                f"codec options are configured for target {target!r}, which does not exist",
            )
        endpoint = endpoints[target]
        try:
            options = codec_options(endpoint.protocol, values)
        except ValueError as exc:
            raise ConfigError(f"endpoint {target!r}: {exc}") from None
        endpoints[target] = dataclasses.replace(endpoint, codec=options)
    return endpoints


def _codec_values(env: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Collect ``[TARGET:]KEY=VALUE`` codec options per target (flags after the variable).

    ``BATCH_RUNNER_CODEC`` holds entries separated by whitespace, split as a shell would
    (quotes keep spaces in a value); ``--codec`` gives one entry per flag. An entry
    without ``TARGET:`` is for the default endpoint; a later entry for the same key wins.
    """
    text = env.get("BATCH_RUNNER_CODEC", "")
    try:
        entries = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"BATCH_RUNNER_CODEC: {exc}") from None
    entries += list(given.get("codec") or [])
    out: dict[str, dict[str, str]] = {}
    for entry in entries:
        left, sep, value = entry.partition("=")
        target, colon, key = left.rpartition(":")
        if not sep or not key.strip():
            raise ConfigError(f"codec option {entry!r}: expected [TARGET:]KEY=VALUE")
        name = target.strip() if colon else DEFAULT_TARGET
        out.setdefault(name, {})[key.strip()] = value
    return out


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


# Read by other commands of the project (the local broker's jar cache), not by a replica.
OTHER_COMMANDS_VARIABLES = frozenset({"BATCH_RUNNER_CACHE_DIR"})


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
