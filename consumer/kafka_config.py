"""The librdkafka options the service sets, refuses and passes through.

``KAFKA_*`` variables and ``-X key=value`` flags reach librdkafka as they are
(:func:`kafka_options`), except the few the service sets itself for at-least-once
delivery (:data:`RESERVED_KAFKA_OPTIONS`); consumer-only options are kept off the producer
and the admin client, which would warn about each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# librdkafka options the service sets itself: a pass-through may not weaken them.
RESERVED_KAFKA_OPTIONS = frozenset(
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
CLASSIC_GROUP_ONLY = frozenset(
    {"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"},
)
GroupProtocol = Literal["classic", "consumer"]
GROUP_PROTOCOLS: tuple[GroupProtocol, ...] = ("classic", "consumer")
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000
RECONNECT_BACKOFF_MAX_MS = 2000

# The consumer's librdkafka settings that no setting of ours changes.
CONSUMER_DEFAULTS: Final[Mapping[str, object]] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    # Short fetch long-polls: the fetcher restarts sooner after each pause (the figures
    # are in bench/results/README.md, "Fetch settings").
    "fetch.wait.max.ms": 10,
    # librdkafka prefetches up to 64 MiB by default, so memory would follow the backlog;
    # 2 MiB keeps it following --max-buffered-items, provided the fetcher does not back
    # off a whole second each time that queue fills (its default). A full buffer keeps
    # this queue full (it is waited out, not paused: consumer/backpressure.py), so it is
    # half the 4 MiB it was while pauses emptied it (bench/results/README.md, perf9).
    "queued.max.messages.kbytes": 2048,
    "fetch.queue.backoff.ms": 5,
    "fetch.max.bytes": 16 * 1024 * 1024,
    # After an outage, reconnect within 2 s of the broker's return (librdkafka backs off
    # up to 10 s by default); failed attempts are counted, not logged.
    "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
    "statistics.interval.ms": 5000,
}

# The results and dead-letter producer's: idempotent, every replica acknowledges.
PRODUCER_DEFAULTS: Final[Mapping[str, object]] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 5,
    "batch.size": 1024 * 1024,
    "queue.buffering.max.messages": 500_000,
    "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
    "statistics.interval.ms": 5000,
}


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
