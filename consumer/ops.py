"""The replica's small operations HTTP server: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while the process is alive and its event loop responsive (a
heartbeat task notices stalls), no fatal error happened, and no assigned partition with
work has stopped moving for ``--stall-timeout`` without a reason (its body lists each
partition's state). ``/readyz`` answers 200 once the replica has joined its group, while
the Kafka cluster and the inference endpoint answer (no long run of connection errors or
timeouts, no open circuit), and not while it drains for shutdown; its body names the
endpoints whose circuit is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from prometheus_client import CollectorRegistry

    from consumer.offsets import PartitionKey
    from consumer.progress import Stall

HEARTBEAT_S = 0.5
STALL_S = 5.0


class ReplicaStatus(Protocol):
    """What the operations server reads of a replica (the pipeline provides it)."""

    @property
    def fatal(self) -> BaseException | None:
        """The error that stopped the replica, if any."""
        ...

    @property
    def stopping(self) -> bool:
        """Whether the replica drains for shutdown."""
        ...

    @property
    def joined(self) -> bool:
        """Whether the replica has joined its consumer group."""
        ...

    @property
    def cluster_down_since(self) -> float | None:
        """Since when (``time.monotonic()``) the Kafka cluster is unreachable, or ``None``."""
        ...

    @property
    def model_answering(self) -> bool:
        """Whether the inference endpoints answer (no long run of unanswered requests)."""
        ...

    @property
    def open_circuits(self) -> Mapping[str, float]:
        """The endpoints whose circuit is open, with the seconds since it opened."""
        ...

    @property
    def stalls(self) -> Mapping[PartitionKey, Stall]:
        """The partitions found stalled at the last check."""
        ...

    @property
    def registry(self) -> CollectorRegistry:
        """The replica's Prometheus registry."""
        ...

    def refresh_gauges(self) -> None:
        """Bring the gauges up to date before a scrape."""

    def partition_states(self) -> dict[str, dict[str, object]]:
        """Each assigned partition's state, for the body of ``/healthz``."""
        ...


class OpsServer:
    """Serves the replica's metrics and health on ``host:port`` (port 0: a free one)."""

    def __init__(self, replica: ReplicaStatus, host: str, port: int) -> None:
        """Prepare the routes; nothing listens until :meth:`start`."""
        self._replica = replica
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.worst_lag_s = 0.0
        self._last_tick = time.monotonic()
        self.port = 0

    async def start(self) -> None:
        """Listen, and start the loop heartbeat."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(
                f"cannot listen on {self._host}:{self._port} for /metrics and probes: {exc} "
                "(set BATCH_RUNNER_METRICS_PORT, or -1 to turn the server off)",
            ) from None
        server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._port
        self._heartbeat = asyncio.create_task(self._beat(), name="loop-heartbeat")

    async def stop(self) -> None:
        """Stop listening."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._runner is not None:
            await self._runner.cleanup()

    async def _beat(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)
            now = time.monotonic()
            lag = now - before - HEARTBEAT_S
            self.worst_lag_s = max(lag, self.worst_lag_s * 0.9)
            self._last_tick = now

    def healthy(self) -> tuple[bool, str]:
        """Return whether the process is healthy, and why not."""
        if self._replica.fatal is not None:
            return False, f"fatal: {self._replica.fatal}"
        stalled = time.monotonic() - self._last_tick
        if stalled > STALL_S or self.worst_lag_s > STALL_S:
            return False, f"event loop stalled ({max(stalled, self.worst_lag_s):.1f}s)"
        stuck = {tp: s for tp, s in self._replica.stalls.items() if s.unhealthy}
        if stuck:
            names = ", ".join(f"{t}[{p}] ({s.seconds:.0f}s)" for (t, p), s in sorted(stuck.items()))
            return False, f"partitions stalled with work and no reason: {names}"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Return whether the replica is ready, and why not."""
        healthy, reason = self.healthy()
        if not healthy:
            return False, reason
        if self._replica.stopping:
            return False, "draining for shutdown"
        if not self._replica.joined:
            return False, "not yet joined the consumer group"
        down_since = self._replica.cluster_down_since
        if down_since is not None:
            return False, f"the Kafka cluster is unreachable ({time.monotonic() - down_since:.0f}s)"
        model = self._model_trouble()
        if model is not None:
            return False, model
        return True, "ok"

    def _model_trouble(self) -> str | None:
        """Say what is wrong with the inference endpoints, if anything."""
        circuits = self._replica.open_circuits
        if circuits:
            names = ", ".join(f"{name!r} ({s:.0f}s)" for name, s in sorted(circuits.items()))
            return f"circuit open to endpoint {names}: the model server is down or refusing"
        if not self._replica.model_answering:
            return "the inference endpoint does not answer"
        return None

    async def _metrics(self, _: web.Request) -> web.Response:
        self._replica.refresh_gauges()
        body = generate_latest(self._replica.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        ok, reason = self.healthy()
        body = {"status": reason, "partitions": self._replica.partition_states()}
        return web.json_response(body, status=200 if ok else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, reason = self.ready()
        circuits = {name: round(s, 1) for name, s in self._replica.open_circuits.items()}
        body = {"status": reason, "open_circuits": circuits}
        return web.json_response(body, status=200 if ok else 503)
