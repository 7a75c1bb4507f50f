"""The cluster watch: an outage is logged once when it starts, summarised, and once when it ends."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError

from consumer.connectivity import QUIET_S, ClusterWatch

if TYPE_CHECKING:
    import pytest

REFUSED = (
    "FAIL [batch-runner-consumer-g#consumer-1] [thrd:127.0.0.1:9092/1]: 127.0.0.1:9092/1: "
    "Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        """Start at zero."""
        self.now = 0.0

    def __call__(self) -> float:
        """Return the current time."""
        return self.now


def reachable(watch: ClusterWatch) -> bool:
    """Read the watch's state (a call, so that type checkers do not narrow it)."""
    return watch.reachable


def librdkafka_record(text: str, level: int = logging.ERROR) -> logging.LogRecord:
    """Return a log record as confluent-kafka makes one of a librdkafka log line."""
    return logging.LogRecord("librdkafka", level, __file__, 0, text, (), None)


def watch_events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """Return the (level, message) pairs the watch logged."""
    return [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "consumer.connectivity"
    ]


def test_an_outage_is_one_error_a_summary_per_period_and_one_recovery_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A thousand connection failures in 65 s make one error, two summaries, one recovery.

    Every failure line is swallowed; the recovery line says how long and how many.
    """
    caplog.set_level(logging.INFO)
    clock = Clock()
    watch = ClusterWatch(summary_every_s=30.0, clock=clock)
    passed = 0
    for step in range(1000):
        clock.now = step * 0.065
        passed += watch.filter(librdkafka_record(REFUSED))
    assert passed == 0
    assert not reachable(watch)
    clock.now = 70.0
    watch.answered()
    assert reachable(watch)
    events = watch_events(caplog)
    assert events[0] == ("ERROR", "the Kafka cluster is unreachable: retrying")
    assert events[1:-1] == [("WARNING", "the Kafka cluster is still unreachable")] * 2
    assert events[-1] == ("INFO", "the Kafka cluster answers again")
    last = next(r for r in reversed(caplog.records) if r.name == "consumer.connectivity")
    assert last.__dict__["failed_attempts"] == 1000
    assert last.__dict__["down_s"] == 70.0


def test_other_lines_pass_and_a_stale_sign_of_life_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Non-connection lines pass through; a sign of life right after a failure is not trusted.

    Statistics taken just before a broker went still show it up: within the quiet period
    they do not end the outage; afterwards they do. error_cb's connection codes count too,
    other errors are not the watch's business.
    """
    caplog.set_level(logging.INFO)
    clock = Clock()
    watch = ClusterWatch(clock=clock)
    assert watch.filter(librdkafka_record("COMMITFAIL [c#consumer-1] [thrd:main]: oops"))
    assert watch.filter(librdkafka_record(REFUSED, logging.INFO))  # info-level: not a failure
    assert reachable(watch)
    assert watch.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert not watch.error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))
    up = {"127.0.0.1:9092/1": {"state": "UP", "nodeid": 1}}
    clock.now = QUIET_S / 2
    watch.statistics(up)
    assert not reachable(watch)
    clock.now = QUIET_S + 0.1
    watch.statistics({"127.0.0.1:9092/bootstrap": {"state": "UP", "nodeid": -1}})
    assert not reachable(watch)  # a bootstrap connection is not a broker answering
    watch.statistics(up)
    assert reachable(watch)
    assert [level for level, _ in watch_events(caplog)] == ["ERROR", "INFO"]
