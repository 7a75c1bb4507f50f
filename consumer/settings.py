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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from consumer.adaptive import AdaptiveConfig
from consumer.breaker import BreakerConfig
from consumer.endpoints import DEFAULT_TARGET, Endpoint, endpoints_from_env
from consumer.kafka_config import (
    CLASSIC_GROUP_ONLY,
    CONSUMER_DEFAULTS,
    CONSUMER_ONLY_OPTIONS,
    DEFAULT_MAX_POLL_INTERVAL_MS,
    GROUP_PROTOCOLS,
    PRODUCER_DEFAULTS,
    RESERVED_KAFKA_OPTIONS,
    GroupProtocol,
    kafka_options,
)
from consumer.retry import RetryPolicy
from consumer.setting_values import check_choices, coerce, positive
from schemas import DLQ_TOPIC, REQUESTS_TOPIC, RESULTS_TOPIC, STATUS_TOPIC
from schemas.errors import ConfigError

LOOPS = ("uvloop", "asyncio")  # the event loops a replica can run on

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one replica needs to know, validated at construction."""

    bootstrap_servers: str
    endpoints: Mapping[str, Endpoint]
    group_id: str = "batch-runner"
    requests_topic: str = REQUESTS_TOPIC
    results_topic: str = RESULTS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    status_topic: str = STATUS_TOPIC
    status_done_list: bool = False
    # Split: items per HTTP request unless a request asks for another value up to the max.
    items_per_request: int = 1
    max_items_per_request: int = 1000
    # Dispatch. Per endpoint: ``fixed`` keeps max_in_flight requests in flight at most;
    # ``adaptive`` moves the bound between min_in_flight and max_in_flight (consumer.adaptive).
    concurrency: Literal["fixed", "adaptive"] = "adaptive"
    max_in_flight: int = 64
    min_in_flight: int = 1
    # The circuit breaker per endpoint (consumer.breaker): open after this many requests
    # in a row without an answer (0: no breaker), or this share of the last 20 refused.
    circuit_failures: int = 5
    circuit_error_share: float = 0.5
    circuit_probe_interval_s: float = 1.0
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    max_response_bytes: int = 16 * 1024 * 1024
    max_attempts: int = 60
    max_elapsed_s: float = 600.0
    # The same HTTP 500 body this many times for one work unit is the model's final
    # answer to its input, not a passing fault (0: retry such answers like any 500).
    max_same_error: int = 3
    # Calls to bisect a unit refused for its input until the bad items stand alone (0: off).
    max_bisect_calls: int = 32
    # Who shares request places and the buffer: batches (by priority), or partitions only.
    fairness: Literal["batches", "partitions"] = "batches"
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # Backpressure: pause fetching while more items than this are buffered.
    max_buffered_items: int = 10_000
    # Commits and shutdown.
    commit_interval_s: float = 0.5
    commit_timeout_s: float = 10.0
    # Item-level resume: each commit's metadata says which items after the committed
    # offset are done, in at most this many bytes (the broker's offset.metadata.max.bytes
    # is 4096 by default); 0 turns it off (a taken-over message is redone whole).
    resume_metadata_bytes: int = 4000
    # Exactly-once: results and offsets in one transaction per commit (consumer.transactions),
    # one every transaction_interval_s (not commit_interval_s: each round costs a flush and
    # a commit marker); a killed replica's open transaction is aborted after the timeout.
    exactly_once: bool = False
    transaction_interval_s: float = 2.0
    transaction_timeout_s: float = 10.0
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
    # The event loop: uvloop (libuv) costs less CPU per request than asyncio's own.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"  # uvloop: asyncio if not installed

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
            positive(name, getattr(self, name))
        for name in ("max_buffered_items", "poll_batch", "max_response_bytes"):
            positive(name, getattr(self, name))
        for name in ("request_timeout_s", "connect_timeout_s", "commit_interval_s"):
            positive(name, getattr(self, name))
        for name in ("poll_timeout_s", "max_message_bytes", "max_result_bytes"):
            positive(name, getattr(self, name))
        positive("transaction_timeout_s", self.transaction_timeout_s)
        positive("transaction_interval_s", self.transaction_interval_s)
        if self.exactly_once and self.transaction_interval_s >= self.transaction_timeout_s:
            raise ConfigError("transaction_interval_s must be below transaction_timeout_s")
        self._check_dispatch()
        if self.items_per_request > self.max_items_per_request:
            raise ConfigError("items_per_request must not exceed max_items_per_request")
        if self.drain_timeout_s < 0 or self.revoke_grace_s < 0:
            raise ConfigError("drain_timeout_s and revoke_grace_s must be >= 0")
        for key in self.kafka_options:
            if key in RESERVED_KAFKA_OPTIONS:
                raise ConfigError(
                    f"Kafka option {key!r} is set by the service for at-least-once delivery "
                    "and cannot be overridden",
                )
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port {self.metrics_port}: use 0-65535, or -1 for none")
        check_choices(self, {"log_format": ("json", "text"), "event_loop": LOOPS})
        self._check_group()
        self.retry_policy()  # validates the retry settings

    def _check_dispatch(self) -> None:
        """Check the concurrency, circuit breaker and bisection settings."""
        check_choices(
            self, {"concurrency": ("fixed", "adaptive"), "fairness": ("batches", "partitions")}
        )
        if self.max_bisect_calls < 0:
            raise ConfigError(f"max_bisect_calls must be >= 0, got {self.max_bisect_calls}")
        if not 1 <= self.min_in_flight <= self.max_in_flight:
            raise ConfigError(
                f"min_in_flight must be between 1 and max_in_flight ({self.max_in_flight}), "
                f"got {self.min_in_flight}",
            )
        try:
            self.breaker_config()
        except ValueError as exc:
            raise ConfigError(f"circuit breaker: {exc}") from None

    def adaptive_config(self) -> AdaptiveConfig | None:
        """Return the adaptive limit's configuration, or ``None`` for a fixed limit."""
        if self.concurrency != "adaptive":
            return None
        return AdaptiveConfig(min_limit=self.min_in_flight, max_limit=self.max_in_flight)

    def breaker_config(self) -> BreakerConfig:
        """Return the circuit breaker's configuration (``ValueError`` if it is bad)."""
        return BreakerConfig(
            failures=self.circuit_failures,
            error_share=self.circuit_error_share,
            probe_interval_s=self.circuit_probe_interval_s,
        )

    def _check_group(self) -> None:
        """Check the group membership and liveness settings."""
        for name in ("commit_timeout_s", "session_timeout_s", "heartbeat_interval_s"):
            positive(name, getattr(self, name))
        positive("stall_timeout_s", self.stall_timeout_s)
        if self.resume_metadata_bytes < 0:
            raise ConfigError("resume_metadata_bytes must be >= 0 (0: no item-level resume)")
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
    def item_resume(self) -> bool:
        """Whether commits carry item-level resume metadata (not in exactly-once mode)."""
        return self.resume_metadata_bytes > 0 and not self.exactly_once

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
            **CONSUMER_DEFAULTS,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "group.protocol": self.group_protocol,
            "session.timeout.ms": round(self.session_timeout_s * 1000),
            "heartbeat.interval.ms": round(self.heartbeat_interval_s * 1000),
            "client.id": f"batch-runner-consumer-{self.group_id}",
        }
        if self.group_instance_id:
            conf["group.instance.id"] = self.group_instance_id
        if self.group_protocol == "consumer":
            for key in CLASSIC_GROUP_ONLY:
                del conf[key]
        conf.update(self.kafka_options)
        return conf

    def producer_config(self) -> dict[str, Any]:
        """Return the librdkafka producer configuration for results and dead letters."""
        conf: dict[str, Any] = {
            **PRODUCER_DEFAULTS,
            "bootstrap.servers": self.bootstrap_servers,
            # Room for the largest result or dead letter plus key, headers and framing.
            "message.max.bytes": max(self.max_message_bytes, self.max_result_bytes) + 64 * 1024,
            "client.id": f"batch-runner-producer-{self.group_id}",
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
        names = {f.name for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            if f.name in {"bootstrap_servers", "endpoints", "kafka_options"}:
                continue
            raw = env.get(f"BATCH_RUNNER_{f.name.upper()}")
            if raw is not None:
                values[f.name] = coerce(f.name, raw, f.type)
        values.update({k: v for k, v in given.items() if k in names})
        values["bootstrap_servers"] = given.get("bootstrap_servers") or env.get(
            "KAFKA_BOOTSTRAP_SERVERS",
            "",
        )
        values["kafka_options"] = kafka_options(env, given.get("kafka_option") or ())
        values["endpoints"] = endpoints_from_env(env, given)
        return cls(**values)
