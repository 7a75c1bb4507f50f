"""``batch-runner consume`` / ``python -m consumer``: run one consumer replica.

The only place that reads the environment and installs signal handlers. SIGTERM or
SIGINT stops fetching and drains (in-flight work gets ``--drain-timeout`` seconds, then
results are flushed and what is done is committed); a second signal stops at once
without committing unfinished work.

Exit codes: 0 after a clean stop, 1 when a result could not be delivered (nothing past
it was committed), 2 for a configuration error (before joining the group), 130 when
forced by a second signal.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException

from consumer import logs
from consumer.env_names import unknown_variables
from consumer.kafka_config import GROUP_PROTOCOLS
from consumer.pipeline import Pipeline
from consumer.protocols import PROTOCOLS
from consumer.settings import Settings
from schemas import DLQ_TOPIC, REQUESTS_TOPIC, RESULTS_TOPIC
from schemas.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    DeliveryError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = logging.getLogger("consumer")

GC_YOUNG = 50_000  # allocations between collections of the youngest generation

EXIT_FATAL = EXIT_FAILED  # a record not delivered (DeliveryError), a client error once running
EXIT_CONFIG = EXIT_BAD_INPUT  # unusable configuration (ConfigError) or cluster, at start-up
EXIT_FORCED = EXIT_INTERRUPTED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the replica's flags (each also settable as ``BATCH_RUNNER_<NAME>``)."""
    add = parser.add_argument
    add("--bootstrap-servers", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    add("--group-id", help="consumer group (default batch-runner)")
    add("--endpoint", help="default inference endpoint URL (env BATCH_RUNNER_ENDPOINT)")
    add("--protocol", choices=PROTOCOLS, help="protocol of --endpoint (default v1)")
    add(
        "--target",
        action="append",
        dest="targets",
        metavar="NAME=PROTOCOL:URL",
        help="a named endpoint requests may select with 'target' (repeatable)",
    )
    add(
        "--codec",
        action="append",
        metavar="[TARGET:]KEY=VALUE",
        help="how an endpoint's items and answers are shaped, e.g. rows=true, "
        "columns=a,b,c, datatype=FP32, output=label (repeatable; env BATCH_RUNNER_CODEC)",
    )
    add(
        "--headers-file",
        help='JSON {"target": {"Header": "value"}} sent with inference requests (secrets)',
    )
    add("--requests-topic", help=f"default {REQUESTS_TOPIC}")
    add("--results-topic", help=f"default {RESULTS_TOPIC}")
    add("--dlq-topic", help=f"default {DLQ_TOPIC}")
    add(
        "--status-done-list",
        action="store_true",
        default=None,
        help="also write batch statuses' done chunks as the list replicas before "
        "done_ranges read: for the first step of a rolling upgrade from them",
    )
    add("--items-per-request", type=int, help="items per HTTP request (default 1)")
    add("--max-items-per-request", type=int, help="cap for a request's own value (1000)")
    add(
        "--concurrency",
        choices=("fixed", "adaptive"),
        help="per endpoint: a limit that finds the model's capacity between "
        "--min-in-flight and --max-in-flight (adaptive, the default), or at most "
        "--max-in-flight requests (fixed)",
    )
    add("--max-in-flight", type=int, help="concurrent HTTP requests per endpoint (default 64)")
    add("--min-in-flight", type=int, help="adaptive: the limit's floor (default 1)")
    add(
        "--circuit-failures",
        type=int,
        help="requests in a row without an answer that open an endpoint's circuit (5; 0: off)",
    )
    add(
        "--circuit-error-share",
        type=float,
        help="share of the last 20 requests refused or unanswered that opens it (0.5)",
    )
    add(
        "--circuit-probe-interval",
        dest="circuit_probe_interval_s",
        type=float,
        help="seconds before an open circuit's first probe (1); each failed probe doubles it, "
        "up to 4x",
    )
    add("--request-timeout", dest="request_timeout_s", type=float, help="seconds (default 30)")
    add("--max-attempts", type=int, help="attempts per work unit (default 60)")
    add("--max-elapsed", dest="max_elapsed_s", type=float, help="seconds per unit (600)")
    add(
        "--max-same-error",
        type=int,
        help="the same HTTP 500 answer this many times is final (default 3; 0: off)",
    )
    add(
        "--fairness",
        choices=("batches", "partitions"),
        help="share request places among batches, weighted by priority (batches, the "
        "default), or among partitions only",
    )
    add(
        "--max-bisect-calls",
        type=int,
        help="calls to split a unit refused for its input until the bad items stand alone "
        "(default 32; 0: the whole unit gets the error)",
    )
    add("--max-buffered-items", type=int, help="pause fetching above this (default 10000)")
    add(
        "--max-result-bytes",
        type=int,
        help="largest record written; a bigger prediction is an error result (1000000)",
    )
    add("--commit-interval", dest="commit_interval_s", type=float, help="seconds (0.5)")
    add("--commit-timeout", dest="commit_timeout_s", type=float, help="seconds (10)")
    add(
        "--exactly-once",
        action="store_true",
        default=None,
        help="results and offsets in one transaction; read with isolation.level=read_committed",
    )
    add(
        "--transaction-interval",
        dest="transaction_interval_s",
        type=float,
        help="exactly-once: seconds between transaction commits (2)",
    )
    add(
        "--transaction-timeout",
        dest="transaction_timeout_s",
        type=float,
        help="exactly-once: seconds before the broker aborts a dead replica's transaction (10)",
    )
    add(
        "--resume-metadata-bytes",
        type=int,
        help="room for done items in each commit's metadata (4000; 0: no item-level resume)",
    )
    add("--drain-timeout", dest="drain_timeout_s", type=float, help="seconds (default 30)")
    add("--revoke-grace", dest="revoke_grace_s", type=float, help="seconds (default 10)")
    add("--group-protocol", choices=GROUP_PROTOCOLS, help="classic (default) or consumer")
    add("--session-timeout", dest="session_timeout_s", type=float, help="classic: seconds (10)")
    add(
        "--heartbeat-interval",
        dest="heartbeat_interval_s",
        type=float,
        help="classic: seconds (1)",
    )
    add("--group-instance-id", help="static membership id, e.g. the pod name (default none)")
    add(
        "--stall-timeout",
        dest="stall_timeout_s",
        type=float,
        help="seconds a partition with work may not move before it is a stall (60)",
    )
    add(
        "-X",
        dest="kafka_option",
        action="append",
        metavar="KEY=VALUE",
        help="librdkafka option for consumer and producer (like KAFKA_* env, repeatable)",
    )
    add("--metrics-port", type=int, help="/metrics, /healthz, /readyz (9100; -1: off)")
    add("--metrics-host", help="address the operations server binds (default 0.0.0.0)")
    add("--log-format", choices=("json", "text"), help="default json (text on a terminal)")
    add("--log-level", help="default INFO")


def settings_from_args(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    """Build :class:`Settings` from ``env`` and the parsed flags (flags win)."""
    overrides = {k: v for k, v in vars(args).items() if k not in {"handler", "command"}}
    if overrides.get("log_format") is None and "BATCH_RUNNER_LOG_FORMAT" not in env:
        overrides["log_format"] = "text" if sys.stderr.isatty() else "json"
    return Settings.from_env(env, **overrides)


async def serve(settings: Settings) -> int:
    """Run one replica until a signal; return the exit code."""
    pipeline = Pipeline(settings)
    tune_gc()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("stopping: draining in-flight work", extra={"signal": signum})
            pipeline.stop()
        else:
            log.warning("forced stop: unfinished work is not committed", extra={"signal": signum})
            pipeline.force()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await pipeline.run()
    except DeliveryError as exc:
        log.exception("stopped after a delivery failure", extra={"error": str(exc)})
        return EXIT_FATAL
    except (KafkaException, ConfigError) as exc:
        reason = exc.args[0].str() if isinstance(exc.args[0], KafkaError) else str(exc)
        if pipeline.source.joined:  # it ran: a failure, not a configuration to fix
            log.exception("stopped after a Kafka client error", extra={"error": reason})
            return EXIT_FATAL
        log.error("cannot start", extra={"error": reason})  # noqa: TRY400 - no traceback needed
        return EXIT_CONFIG
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return EXIT_FORCED if signals > 1 else EXIT_OK


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Everything built at start-up (modules, settings, the pipeline) lives as long as the
    replica: frozen, no collection walks it again. Work units make short-lived cycles
    (a failed attempt's traceback, aiohttp's request objects) by the thousand a second:
    collecting the youngest generation every ``GC_YOUNG`` allocations rather than
    Python's 700 frees them a little later for a fraction of the CPU.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the event loop factory ``name`` stands for (``None``: asyncio's own)."""
    if name == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 - optional where it does not build
        except ImportError:
            return None
        return uvloop.new_event_loop
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``batch-runner consume``."""
    env = dict(os.environ)
    try:
        settings = settings_from_args(args, env)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    logs.configure(settings.log_format, settings.log_level)
    for name, close in unknown_variables(env).items():
        log.warning(
            "ignoring an environment variable that is not a setting",
            extra={"variable": name, "did_you_mean": close},
        )
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            return runner.run(serve(settings))
    except KafkaException as exc:
        print(f"Kafka configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``consume`` to the ``batch-runner`` parser."""
    parser = subparsers.add_parser(
        "consume",
        help="run a consumer replica (scale by starting more with the same --group-id)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m consumer [flags]``."""
    parser = argparse.ArgumentParser(prog="python -m consumer", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
