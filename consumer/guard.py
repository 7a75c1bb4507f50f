"""One endpoint's guard: its concurrency limit, its circuit breaker, and the waits they impose.

The dispatcher calls :meth:`EndpointGuard.enter` before each HTTP request and
:meth:`EndpointGuard.leave` after it. ``enter`` waits, in order:

1. while the endpoint is paused (its adaptive limit was refused at its minimum: see
   :attr:`consumer.adaptive.AdaptiveLimit.resume_at`);
2. while its circuit is open, or half-open with the probe on the wire
   (:class:`consumer.breaker.CircuitBreaker`);
3. for a place in its :class:`~consumer.limiter.Limiter` (``--max-in-flight``, or the
   adaptive limit between ``--min-in-flight`` and it), served round-robin across the
   units' fairness keys (their partitions): the adaptive controller only moves the
   limiter's capacity, the keyed limiter decides who gets the next place.

The first two waits are the endpoint's, not the work unit's: the dispatcher does not
count them against the unit's time budget, and a failed probe costs its unit no attempt.
A unit that got a place while the circuit opened gives it back and waits again. ``leave``
tells the adaptive limit and the breaker what the answer said (the adaptive limit also how
late the replica's event loop ran meanwhile: :mod:`consumer.looplag`), and logs what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from consumer.adaptive import AdaptiveConfig, AdaptiveLimit, Signal
from consumer.breaker import BreakerConfig, Circuit, CircuitBreaker, verdict_of
from consumer.limiter import Limiter
from consumer.limitlog import LimitReport
from consumer.looplag import LagMark, LoopLag

if TYPE_CHECKING:
    from collections.abc import Hashable

    from consumer.attempt import UnitClock
    from consumer.limiter import Place
    from consumer.metrics import Metrics
    from consumer.settings import Settings

log = logging.getLogger(__name__)

OVERLOAD_STATUSES = frozenset({429, 503})
CIRCUIT_GAUGE = {Circuit.CLOSED: 0, Circuit.HALF_OPEN: 1, Circuit.OPEN: 2}


@dataclass(slots=True)
class Ticket:
    """A place taken by :meth:`EndpointGuard.enter`; give it back with ``leave``."""

    probe: bool
    sent_at: float
    endpoint_wait_s: float
    """Time spent waiting while the endpoint was paused or its circuit open."""
    queue_wait_s: float
    """Time spent waiting for a place in the limiter."""
    lag_mark: LagMark | None = None
    """The loop-lag probe's counters when it was sent (adaptive limits only)."""


# A held place's ticket under a fixed limit, its waits on the unit's clock (enter_held).
COUNTED: Final = Ticket(probe=False, sent_at=0.0, endpoint_wait_s=0.0, queue_wait_s=0.0)


class EndpointGuard:
    """The limit and the circuit of one endpoint of one replica."""

    def __init__(  # noqa: PLR0913 - the endpoint, its limit, breaker, metrics and probe
        self,
        name: str,
        *,
        max_in_flight: int,
        adaptive: AdaptiveConfig | None,
        breaker: BreakerConfig,
        metrics: Metrics,
        loop_lag: LoopLag | None = None,
    ) -> None:
        """Guard endpoint ``name``: a fixed limit, or an adaptive one with ``adaptive``.

        An adaptive limit discounts the event loop's lateness, measured by ``loop_lag``
        (one probe may serve every endpoint of a replica; one of its own by default).
        """
        self.name = name
        self.adaptive = None if adaptive is None else AdaptiveLimit(adaptive)
        self.loop_lag = None if adaptive is None else loop_lag or LoopLag()
        start = max_in_flight if self.adaptive is None else self.adaptive.limit
        self.limiter = Limiter(start)
        self.breaker = CircuitBreaker(breaker)
        self.used = False  # a request was sent (or tried) through this guard
        self._changed = asyncio.Event()
        self._report = LimitReport(name, start, metrics)
        self._probes = 0
        self._metrics = metrics
        self._circuit_gauge = metrics.circuit_state.labels(name)
        self._circuit_gauge.set(0)

    @property
    def circuit(self) -> Circuit:
        """The state of the endpoint's circuit."""
        return self.breaker.state

    async def enter(
        self, key: Hashable = None, weight: float = 1.0, held: Place | None = None
    ) -> Ticket:
        """Wait until a request may be sent to the endpoint; return the place taken.

        ``key`` (the batch the unit came from, or its partition) is the limiter's fairness
        key: places are shared across keys by ``weight``, whatever the limit is. ``held``
        is a place the unit was given before it ran (:meth:`Limiter.submit`): it is used
        instead of waiting for one, unless the endpoint makes the unit wait first (the
        place is then given back meanwhile).
        """
        self.used = True
        endpoint_wait = queue_wait = 0.0
        if held is not None and held.held:
            queue_wait = time.monotonic() - held.since  # its wait for that place
        while True:
            started = time.monotonic()
            pause = self._pause_left(started)
            admission = self.breaker.admit(started) if pause <= 0 else None
            if admission is None or not admission.send:
                if held is not None:
                    held.release()  # no place is kept while the endpoint is waited for
                await self._wait_for_change(pause if admission is None else admission.wait_s)
                endpoint_wait += time.monotonic() - started
                continue
            if held is None or not held.take():
                try:
                    await self.limiter.acquire(key, weight)
                except BaseException:
                    if admission.probe:
                        self._abandon_probe()
                    raise
            sent_at = time.monotonic()
            queue_wait += sent_at - started
            if admission.probe or self.breaker.state is Circuit.CLOSED:
                if admission.probe:
                    self._probes += 1
                    self._circuit_gauge.set(CIRCUIT_GAUGE[Circuit.HALF_OPEN])
                mark = None if self.loop_lag is None else self.loop_lag.mark()
                return Ticket(admission.probe, sent_at, endpoint_wait, queue_wait, mark)
            self.limiter.release()  # the circuit opened while this unit waited for a place

    def enter_held(self, held: Place, clock: UnitClock | None = None) -> Ticket | None:
        """Return the ticket of a unit's held place when nothing makes it wait, else None.

        :meth:`enter` without a coroutine, when the endpoint is not paused and its circuit
        is closed. ``None``: call :meth:`enter`, which waits as the endpoint says. With
        ``clock``, the attempt is counted on it (as ``clock.sent(ticket)``), and under a
        fixed limit the ticket is the shared :data:`COUNTED`: only an adaptive limit reads
        a ticket's times (``leave`` and ``cancelled`` read only whether it is a probe).
        """
        if not held.held or self.breaker.state is not Circuit.CLOSED:
            return None
        now = time.monotonic()
        if self.adaptive is not None and self.adaptive.resume_at > now:
            return None
        held.held = False  # taken (as held.take(), inline: once per unit)
        self.used = True
        wait = now - held.since
        if clock is not None:  # as clock.sent(ticket), inline: once per unit
            clock.attempts += 1
            clock.charged += 1
            clock.queued += wait
            if clock.attempts == 1:
                clock.first_attempt = now
            if self.adaptive is None:  # nobody reads more than that it is no probe
                return COUNTED
        mark = None if self.loop_lag is None else self.loop_lag.mark()
        return Ticket(False, now, 0.0, wait, mark)  # noqa: FBT003 - not the probe (positional: per unit)

    def cancelled(self, ticket: Ticket) -> None:
        """Give the place back without an outcome (the unit was cancelled)."""
        self.limiter.release()
        if ticket.probe:
            self._abandon_probe()

    def leave(
        self,
        ticket: Ticket,
        status: int | None,
        *,
        timed_out: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        """Give the place back and take the answer in: an HTTP ``status``, or ``None``."""
        usual = (  # the usual answer: the breaker would change nothing (all_up)
            status is not None and 200 <= status < 300 and not ticket.probe and self.breaker.all_up
        )
        if usual and self.adaptive is None:
            self.limiter.release()  # nothing else to tell
            return
        now = time.monotonic()
        in_flight = self.limiter.in_use
        self.limiter.release()
        if not usual:
            before, since = self.breaker.state, self.breaker.open_since
            self.breaker.record(
                verdict_of(status), now, probe=ticket.probe, retry_after_s=retry_after_s
            )
            if self.breaker.state is not before:
                answer = (
                    "timeout" if timed_out else "no answer" if status is None else f"HTTP {status}"
                )
                self._circuit_changed(before, now, since, answer)
        if self.adaptive is not None:
            paused_before, cuts_before = self.adaptive.resume_at, self.adaptive.decreases
            lag = ticket.lag_mark
            self.adaptive.record(
                _signal(status, timed_out=timed_out),
                sent_at=ticket.sent_at,
                now=now,
                in_flight=in_flight,
                retry_after_s=retry_after_s,
                loop_lag_s=0.0
                if lag is None or self.loop_lag is None
                else self.loop_lag.since(lag),
            )
            if self.adaptive.decreases != cuts_before:
                self._limit_cut()
            self._limit_changed(self.adaptive.limit, now)
            if self.adaptive.resume_at != paused_before:
                self._wake()

    # --- waiting ---------------------------------------------------------------------------

    def _pause_left(self, now: float) -> float:
        return 0.0 if self.adaptive is None else self.adaptive.resume_at - now

    async def _wait_for_change(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(timeout_s, 0.001))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _abandon_probe(self) -> None:
        self.breaker.abandon_probe(time.monotonic())
        self._wake()

    # --- what changed ----------------------------------------------------------------------

    def _limit_cut(self) -> None:
        adaptive = self.adaptive
        if adaptive is not None and adaptive.last_cut is not None:
            self._report.cut(adaptive.last_cut, self.limiter.in_use, adaptive.no_load_rtt)

    def _limit_changed(self, limit: int, now: float) -> None:
        if limit != self.limiter.limit:
            self.limiter.limit = limit
            self._report.changed(limit, now, self.limiter.in_use)

    def _circuit_changed(
        self, before: Circuit, now: float, since: float | None, answer: str
    ) -> None:
        state = self.breaker.state
        self._circuit_gauge.set(CIRCUIT_GAUGE[state])
        self._wake()
        if before is Circuit.CLOSED:
            self._metrics.circuit_opened.labels(self.name).inc()
            log.warning(
                "circuit opened: requests to the endpoint stop, probing once per interval",
                extra={
                    "endpoint": self.name,
                    "last_answer": answer,
                    "probe_interval_s": self.breaker.config.probe_interval_s,
                },
            )
        elif state is Circuit.CLOSED:
            log.info(
                "circuit closed: the endpoint answers again",
                extra={
                    "endpoint": self.name,
                    "probes": self._probes,
                    "open_s": None if since is None else round(now - since, 1),
                },
            )
            self._probes = 0


def guards_for(settings: Settings, metrics: Metrics) -> dict[str, EndpointGuard]:
    """Return a guard per configured endpoint, as ``settings`` describe them."""
    adaptive, breaker = settings.adaptive_config(), settings.breaker_config()
    loop_lag = None if adaptive is None else LoopLag(gauge=metrics.loop_lag)  # one a replica
    return {
        name: EndpointGuard(
            name,
            max_in_flight=settings.max_in_flight,
            adaptive=adaptive,
            breaker=breaker,
            metrics=metrics,
            loop_lag=loop_lag,
        )
        for name in settings.endpoints
    }


def _signal(status: int | None, *, timed_out: bool) -> Signal:
    """Return what an answer says about capacity (see :class:`consumer.adaptive.Signal`)."""
    if timed_out:
        return Signal.TIMEOUT
    if status is None:
        return Signal.IGNORE
    if 200 <= status < 300:
        return Signal.OK
    return Signal.OVERLOAD if status in OVERLOAD_STATUSES else Signal.IGNORE
