"""``python -m tools.testservers.inference``: the test server as a process, until SIGTERM or SIGINT.

It prints its URL on standard output, then serves; ``/_control`` scripts it from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from tools.testservers.inference.config import ServerConfig, check_action
from tools.testservers.inference.server import TestInferenceServer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tools.testservers.inference.config import Action

log = logging.getLogger(__name__)


def _action(text: str) -> Action:
    action: Action = int(text) if text.strip().isdigit() else text.strip()
    check_action(action)
    return action


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.testservers.inference",
        description="An identity inference server that misbehaves as told, for tests and "
        "benchmarks. Prints its URL, then serves until SIGTERM or SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency per request")
    parser.add_argument(
        "--latency-max-ms", type=float, help="random latency, uniform in [latency-ms, this]"
    )
    parser.add_argument(
        "--capacity",
        "--max-concurrency",
        dest="max_concurrency",
        type=int,
        help="K: requests served at once (default: no limit)",
    )
    parser.add_argument(
        "--overload",
        choices=["reject", "queue"],
        default="reject",
        help="beyond K: answer 429 with Retry-After (reject), or wait first come, first "
        "served (queue) (default: %(default)s)",
    )
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds")
    parser.add_argument(
        "--script",
        type=lambda text: tuple(_action(a) for a in text.split(",") if a.strip()),
        default=(),
        help="actions for the first requests, comma-separated (e.g. 503,reset,ok)",
    )
    parser.add_argument("--poison-status", type=int, default=500, help="for fail=permanent")
    parser.add_argument(
        "--no-track-items", action="store_true", help="skip per-item attempt counts (faster)"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    return parser


async def _serve_forever(server: TestInferenceServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        log.info("test inference server listening on %s", server.url)
        await stop.wait()
    log.info("test inference server stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the test server as a process until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    config = ServerConfig(
        latency_ms=args.latency_ms,
        latency_max_ms=args.latency_max_ms,
        max_concurrency=args.max_concurrency,
        overload=args.overload,
        retry_after_s=args.retry_after,
        script=args.script,
        poison_status=args.poison_status,
        track_items=not args.no_track_items,
    )
    asyncio.run(_serve_forever(TestInferenceServer(config, host=args.host, port=args.port)))
    return 0
