"""Pure parts of the consumer: settings (codec options too), the splitter, the limiter."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import pytest

from consumer.endpoints import DEFAULT_TARGET, Endpoint, parse_target
from consumer.env_names import known_variables, unknown_variables
from consumer.limiter import Limiter
from consumer.logs import JsonFormatter, TextFormatter
from consumer.outcome import Outcome
from consumer.protocols import CodecOptions
from consumer.settings import Settings
from consumer.splitter import WorkUnit, items_per_request, split, split_missing
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

BASE_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "BATCH_RUNNER_ENDPOINT": "http://127.0.0.1:8080/v1/models/iris:predict",
}


def test_split_keeps_order_and_covers_every_item() -> None:
    """Units are consecutive, of the asked size, the last one shorter, nothing lost."""
    items = [str(i).encode() for i in range(10)]
    units = split(items, 3)
    assert [u.offset for u in units] == [0, 3, 6, 9]
    assert [list(u.items) for u in units] == [items[0:3], items[3:6], items[6:9], items[9:]]
    with pytest.raises(ValueError, match="size must be >= 1"):
        split(items, 0)


def test_split_makes_the_work_units_the_named_tuple_makes() -> None:
    """``split`` builds its units without ``WorkUnit``'s Python ``__new__``: the same units."""
    items = [str(i).encode() for i in range(5)]
    units = split(items, 2)
    assert all(type(unit) is WorkUnit for unit in units)
    assert units == [WorkUnit(0, items[0:2]), WorkUnit(2, items[2:4]), WorkUnit(4, items[4:])]
    assert units[1].offset == 2
    assert units[1].items == items[2:4]
    resumed = split_missing(items, ((1, 3),), 2)
    assert resumed == [WorkUnit(0, items[0:1]), WorkUnit(3, items[3:5])]
    assert split_missing(items, (), 2) == units


def test_outcome_fields_are_in_the_order_the_dispatcher_builds_an_answer_with() -> None:
    """The dispatcher builds an answered unit's ``Outcome`` as a plain tuple of its fields.

    (``tuple.__new__(Outcome, (predictions, attempts, latency_ms, None, None, None,
    queue_ms, False))``, once per unit): this pins that order and the defaults it spells out.
    """
    assert Outcome._fields == (
        "predictions",
        "attempts",
        "latency_ms",
        "error_kind",
        "error_message",
        "http_status",
        "queue_ms",
        "final",
    )
    fields = ([b"1"], 1, 2.5, None, None, None, 0.5, False)
    assert tuple.__new__(Outcome, fields) == Outcome([b"1"], 1, 2.5, queue_ms=0.5)


def test_items_per_request_respects_default_and_cap() -> None:
    """A request's own unit size is used but capped; absent, the default applies."""
    assert items_per_request(None, 1, 100) == 1
    assert items_per_request(50, 1, 100) == 50
    assert items_per_request(5000, 1, 100) == 100
    assert items_per_request(0, 1, 100) == 1


def test_settings_from_env_passes_kafka_options_through() -> None:
    """KAFKA_* variables become dotted librdkafka options for consumer and producer."""
    env = {
        **BASE_ENV,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512",
        "BATCH_RUNNER_MAX_IN_FLIGHT": "7",
    }
    settings = Settings.from_env(env)
    assert settings.max_in_flight == 7
    assert settings.consumer_config()["security.protocol"] == "SASL_SSL"
    assert settings.producer_config()["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert settings.consumer_config()["enable.auto.commit"] is False
    assert settings.producer_config()["enable.idempotence"] is True
    assert settings.endpoints[DEFAULT_TARGET].protocol == "v1"


def test_settings_describe_the_adaptive_limit_and_the_breaker() -> None:
    """``concurrency=adaptive`` bounds the limit by min/max in flight; the breaker follows too."""
    env = {**BASE_ENV, "BATCH_RUNNER_CONCURRENCY": "adaptive", "BATCH_RUNNER_MIN_IN_FLIGHT": "4"}
    settings = Settings.from_env(env, max_in_flight=32, circuit_failures=0)
    adaptive = settings.adaptive_config()
    assert adaptive is not None
    assert (adaptive.min_limit, adaptive.max_limit) == (4, 32)
    assert not settings.breaker_config().enabled
    assert Settings.from_env(BASE_ENV).adaptive_config() is not None  # adaptive: the default
    fixed = {**BASE_ENV, "BATCH_RUNNER_CONCURRENCY": "fixed"}
    assert Settings.from_env(fixed).adaptive_config() is None


def test_settings_targets_from_env_and_flags() -> None:
    """Named targets come from BATCH_RUNNER_TARGETS and --target; flags override env."""
    env = {**BASE_ENV, "BATCH_RUNNER_TARGETS": "a=raw:http://h:1/predict, b=v2:http://h:2/x"}
    settings = Settings.from_env(env, targets=["b=v1:http://other/p"], max_in_flight=3)
    assert settings.endpoints["a"] == Endpoint("a", "http://h:1/predict", "raw")
    assert settings.endpoints["b"] == Endpoint("b", "http://other/p", "v1")
    assert settings.endpoint_for(None) is settings.endpoints[DEFAULT_TARGET]
    assert settings.endpoint_for("nope") is None
    assert settings.max_in_flight == 3


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ({"BATCH_RUNNER_ENDPOINT": "http://x/p"}, {}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "h:1"}, {}, "no inference endpoint is configured"),
        (BASE_ENV, {"max_in_flight": 0}, "max_in_flight must be > 0"),
        (BASE_ENV, {"protocol": "grpc"}, "protocol 'grpc' is not one of raw, v1, v2"),
        ({**BASE_ENV, "BATCH_RUNNER_ENDPOINT": "ftp://x"}, {}, "is not an http"),
        ({**BASE_ENV, "BATCH_RUNNER_MAX_IN_FLIGHT": "many"}, {}, "is not a number"),
        ({**BASE_ENV, "KAFKA_ENABLE_AUTO_COMMIT": "true"}, {}, "cannot be overridden"),
        (BASE_ENV, {"targets": ["broken"]}, "expected NAME=PROTOCOL:URL"),
        (BASE_ENV, {"max_attempts": 0}, "max_attempts"),
        (BASE_ENV, {"concurrency": "elastic"}, "concurrency 'elastic': use fixed or adaptive"),
        (BASE_ENV, {"min_in_flight": 65}, "min_in_flight must be between 1 and max_in_flight"),
        (BASE_ENV, {"min_in_flight": 0}, "min_in_flight must be between 1"),
        (BASE_ENV, {"circuit_error_share": 2.0}, "circuit breaker: error_share"),
        (BASE_ENV, {"circuit_probe_interval_s": 0}, "circuit breaker: probe_interval_s"),
        (
            BASE_ENV,
            {"exactly_once": True, "transaction_interval_s": 10.0},
            "transaction_interval_s must be below transaction_timeout_s",
        ),
    ],
)
def test_bad_configuration_fails_with_a_clear_message(
    env: dict[str, str],
    overrides: dict[str, object],
    message: str,
) -> None:
    """Each configuration mistake raises ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env, **overrides)


def test_parse_target_defaults_to_v1() -> None:
    """A target without a protocol prefix is a v1 endpoint; URLs keep their colons."""
    assert parse_target("m=http://h:8080/v1/models/m:predict") == Endpoint(
        "m",
        "http://h:8080/v1/models/m:predict",
        "v1",
    )


async def test_limiter_bounds_concurrency_and_follows_a_live_limit() -> None:
    """Never more holders than the limit; raising the limit admits waiters at once."""
    limiter = Limiter(2)
    peak = 0
    release = asyncio.Event()

    async def hold() -> None:
        nonlocal peak
        async with limiter:
            peak = max(peak, limiter.in_use)
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(5)]
    await asyncio.sleep(0)
    assert limiter.in_use == 2
    assert limiter.waiting == 3
    limiter.limit = 4
    assert limiter.in_use == 4
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 4
    assert limiter.in_use == 0


async def test_limiter_cancelled_waiter_does_not_leak_a_place() -> None:
    """A waiter cancelled while queued leaves the count unchanged."""
    limiter = Limiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.in_use == 0
    assert limiter.waiting == 0


async def test_limiter_waiter_cancelled_then_skipped_by_a_release_raises_only_cancel() -> None:
    """A waiter cancelled, then passed over by a release before it runs, only re-raises.

    The release pops the cancelled waiter from the queue (and skips it); the waiter's
    handler must not then fail to remove it (a ValueError that asyncio reported as
    "Task exception was never retrieved" on every revoke of busy partitions).
    """
    limiter = Limiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    limiter.release()  # runs before the waiter's CancelledError handler
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_use == 0
    assert limiter.waiting == 0
    await limiter.acquire()
    assert limiter.in_use == 1


def test_group_settings_reach_the_consumer_and_stay_off_the_producer() -> None:
    """Group protocol, session, heartbeat and static membership shape the consumer only.

    The classic protocol gets cooperative-sticky and the session and heartbeat settings;
    KIP-848's ``consumer`` protocol refuses those (the broker owns them), so they are left
    out. Consumer-only pass-through options never reach the producer, which would warn.
    """
    env = {**BASE_ENV, "BATCH_RUNNER_GROUP_INSTANCE_ID": "replica-7"}
    classic = Settings.from_env(env, kafka_option=["max.poll.interval.ms=20000"])
    conf = classic.consumer_config()
    assert conf["group.protocol"] == "classic"
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["session.timeout.ms"] == 10_000
    assert conf["heartbeat.interval.ms"] == 1_000
    assert conf["group.instance.id"] == "replica-7"
    assert conf["max.poll.interval.ms"] == "20000"
    assert classic.max_poll_interval_s == 20.0
    assert classic.effective_revoke_grace_s == 5.0  # capped at a quarter of it
    assert "max.poll.interval.ms" not in classic.producer_config()
    assert "group.instance.id" not in classic.producer_config()
    kip848 = Settings.from_env({**BASE_ENV, "BATCH_RUNNER_GROUP_PROTOCOL": "consumer"})
    conf = kip848.consumer_config()
    assert conf["group.protocol"] == "consumer"
    for key in ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"):
        assert key not in conf
    with pytest.raises(ConfigError, match="group_protocol 'eager'"):
        Settings.from_env({**BASE_ENV, "BATCH_RUNNER_GROUP_PROTOCOL": "eager"})
    with pytest.raises(ConfigError, match="at most a third of session_timeout_s"):
        Settings.from_env({**BASE_ENV, "BATCH_RUNNER_HEARTBEAT_INTERVAL_S": "5"})


def test_settings_repr_hides_credentials() -> None:
    """Neither Kafka options nor endpoint headers appear in the settings' repr."""
    env = {
        **BASE_ENV,
        "KAFKA_SASL_PASSWORD": "hunter2-secret",
        "BATCH_RUNNER_ENDPOINT_HEADERS": '{"Authorization": "Bearer tok-secret"}',
    }
    settings = Settings.from_env(env)
    assert settings.endpoints[DEFAULT_TARGET].headers == {"Authorization": "Bearer tok-secret"}
    assert "hunter2-secret" not in repr(settings)
    assert "tok-secret" not in repr(settings)


def test_log_redaction_masks_secret_keys_and_url_credentials() -> None:
    """Values under secret-looking keys and user:password@ in URLs are masked in logs."""
    record = logging.LogRecord("t", logging.INFO, "", 0, "connect to http://u:pw@h/x", (), None)
    record.sasl_password = "hunter2"  # noqa: S105 - a fake
    record.details = {"api_key": "abc", "token": "t", "ok": "visible"}
    line = JsonFormatter().format(record)
    assert "hunter2" not in line
    assert "abc" not in line
    assert ":pw@" not in line
    event = json.loads(line)
    assert event["event"] == "connect to http://***@h/x"
    assert event["details"]["ok"] == "visible"
    text = TextFormatter().format(record)
    assert "hunter2" not in text


def test_headers_for_an_unknown_target_are_a_configuration_error(tmp_path: Path) -> None:
    """A headers file naming a target that is not configured is rejected at start-up."""
    path = tmp_path / "h.json"
    path.write_text('{"nope": {"Authorization": "x"}}')
    with pytest.raises(ConfigError, match="target 'nope', which does not exist"):
        Settings.from_env({**BASE_ENV, "BATCH_RUNNER_HEADERS_FILE": str(path)})


def test_unknown_batch_runner_variables_are_found_with_the_likely_intended_name() -> None:
    """A typo'd setting is reported (the replica logs it), real and other tools' names not."""
    env = {
        "BATCH_RUNNER_MAX_INFLIGHT": "8",  # typo of MAX_IN_FLIGHT
        "BATCH_RUNNER_NOTHING_LIKE_IT": "1",
        "BATCH_RUNNER_MAX_IN_FLIGHT": "8",
        "BATCH_RUNNER_HEADERS_FILE": "/etc/h.json",
        "BATCH_RUNNER_CACHE_DIR": "/cache",  # the local broker's jar cache
        "KAFKA_SASL_MECHANISM": "PLAIN",
    }
    assert unknown_variables(env) == {
        "BATCH_RUNNER_MAX_INFLIGHT": "BATCH_RUNNER_MAX_IN_FLIGHT",
        "BATCH_RUNNER_NOTHING_LIKE_IT": None,
    }


# --- codec options ------------------------------------------------------------------------


def test_codec_options_come_from_the_variable_and_the_flags_per_target() -> None:
    """``[TARGET:]KEY=VALUE`` entries: none for the default endpoint; flags after the variable."""
    env = {
        **BASE_ENV,
        "BATCH_RUNNER_TARGETS": "ml=v2:http://ml/v2/models/iris/infer ks=v1:http://ks/p",
        "BATCH_RUNNER_CODEC": "rows=true 'ml:columns=a, b' ml:datatype=fp32 ks:rows=true",
    }
    settings = Settings.from_env(env, codec=["ml:datatype=FP64", "ks:v1_key=inputs"])
    default, ml, ks = (settings.endpoints[name].codec for name in (DEFAULT_TARGET, "ml", "ks"))
    assert default == CodecOptions(rows=True)
    assert ml == CodecOptions(columns=("a", "b"), datatype="FP64")
    assert ks == CodecOptions(rows=True, v1_key="inputs")
    assert "BATCH_RUNNER_CODEC" in known_variables()


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        ("nope:rows=true", "codec options are configured for target 'nope', which does not exist"),
        ("datatype=FP32", "endpoint 'default': codec option 'datatype' applies to the v2"),
        ("rows", r"codec option 'rows': expected \[TARGET:\]KEY=VALUE"),
        ("rows=perhaps", "endpoint 'default': rows='perhaps': use true or false"),
        ("'rows=true", "BATCH_RUNNER_CODEC: No closing quotation"),
    ],
)
def test_bad_codec_options_fail_at_start_up(codec: str, message: str) -> None:
    """A codec option for a missing target, the wrong protocol or of a bad value is refused."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE_ENV, "BATCH_RUNNER_CODEC": codec})


def test_max_same_error_is_a_setting_of_the_retry_policy() -> None:
    """``BATCH_RUNNER_MAX_SAME_ERROR`` reaches the policy; a negative count is refused."""
    settings = Settings.from_env({**BASE_ENV, "BATCH_RUNNER_MAX_SAME_ERROR": "5"})
    assert settings.retry_policy().max_same_error == 5
    assert Settings.from_env(BASE_ENV).retry_policy().max_same_error == 3
    with pytest.raises(ConfigError, match="max_same_error must be >= 0"):
        Settings.from_env(BASE_ENV, max_same_error=-1)
