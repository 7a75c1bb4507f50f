"""A lean identity server for one comparison: how much of a bound is the test server's own cost.

``python -m bench.lean_server --latency-ms 20 [--workers N]`` serves the KServe v1 route
like ``tools.testservers.inference`` (``{"instances": [...]}`` answered by
``{"predictions": [...]}`` after the latency) but does nothing else: no counters, no
scripts, no per-item parsing.
With ``--workers N`` it forks N processes that accept on one listening socket, so no one
event loop serialises a burst of answers. It prints its URL, then serves until SIGTERM
or SIGINT (passed on to the workers). ``bench.run --server lean|lean2`` uses it instead
of the test server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys

import orjson
from aiohttp import web

OPEN = b'{"predictions":'


async def serve(latency_s: float, sock: socket.socket, *, announce: bool) -> None:
    """Serve on the listening ``sock`` until a signal."""

    async def predict(request: web.Request) -> web.Response:
        body = await request.read()
        instances = orjson.loads(body)["instances"]
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        return web.Response(
            body=OPEN + orjson.dumps(instances) + b"}", content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/v1/models/{name}:predict", predict)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    if announce:
        host, port = sock.getsockname()[:2]
        sys.stdout.write(f"http://{host}:{port}\n")
        sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.lean_server``."""
    parser = argparse.ArgumentParser(prog="python -m bench.lean_server", description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes accepting")
    args = parser.parse_args(argv)
    sock = socket.create_server((args.host, args.port), backlog=1024)
    sock.setblocking(False)  # noqa: FBT003 - the socket API
    workers = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            asyncio.run(serve(args.latency_ms / 1000, sock, announce=False))
            os._exit(0)
        workers.append(pid)
    try:
        asyncio.run(serve(args.latency_ms / 1000, sock, announce=True))
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in workers:
            os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
