"""A discrete-event simulation of replicas with adaptive limits against a server of capacity K.

Simulated time only (no clock, no sleeping): the tests use it to check that the limit
algorithm of :mod:`consumer.adaptive` settles near a server's capacity, in both of the
test server's overload modes, and follows a change of capacity. Each client has an
endless backlog and sends whenever it has fewer requests in flight than its limit; the
server serves ``capacity`` requests at once for ``latency`` seconds each (plus a seeded
random jitter) and either refuses the rest at once (``reject``: a 429 with
``Retry-After``) or queues them first come, first served (``queue``). ``client_lag`` adds
a seeded random delay, up to that many seconds, between the server's answer and the
client reading it: a busy machine's event loops, which lengthen the client's round trip
without holding a place in the server.
"""

from __future__ import annotations

import collections
import heapq
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from consumer.adaptive import AdaptiveConfig, AdaptiveLimit, Signal

if TYPE_CHECKING:
    from collections.abc import Sequence

Overload = Literal["reject", "queue"]
NETWORK_RTT = 0.0002  # what a refusal costs: the round trip of an immediate answer
SERVED = "served"  # the event of the server finishing a request
STALL_CHANCE = 0.02  # with client_stall: the chance that an answer finds its client stalled


@dataclass
class Totals:
    """What happened during one stretch of simulated time."""

    ok: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def refused_share(self) -> float:
        """Refused answers among all answers."""
        return self.refused / max(1, self.ok + self.refused)

    def latency_percentile(self, pct: float) -> float:
        """Return the ``pct`` percentile of the ok round trip times (nearest rank)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


@dataclass
class _Client:
    limit: AdaptiveLimit
    in_flight: int = 0
    stalled_until: float = 0.0  # the client reads nothing before this time
    paused_until: float = 0.0  # the client sends nothing before this time (an open circuit)
    waking: bool = False  # a wake-up event is scheduled


class Simulation:
    """Clients with adaptive limits and one server, advanced in simulated seconds."""

    def __init__(
        self,
        config: AdaptiveConfig,
        *,
        clients: int,
        capacity: int,
        latency: float = 0.020,
        jitter: float = 0.002,
        overload: Overload = "reject",
        retry_after: float | None = 1.0,
        seed: int = 0,
        client_lag: float = 0.0,
        client_stall: float = 0.0,
        start_at: Sequence[float] = (),
    ) -> None:
        """Start ``clients`` clients against a server of ``capacity``.

        Client ``n`` sends its first requests at ``start_at[n]`` seconds, at 0 when not
        given (replicas that join while others already load the server).
        """
        self.capacity = capacity
        self.latency = latency
        self.jitter = jitter
        self.overload = overload
        self.retry_after = retry_after
        self.client_lag = client_lag
        self.client_stall = client_stall
        self.now = 0.0
        self.clients = [_Client(AdaptiveLimit(config)) for _ in range(clients)]
        self._random = random.Random(seed)  # noqa: S311 - simulated jitter
        # (when, tie-break, client, sent_at, signal); a signal of None wakes a paused client,
        # SERVED frees the server's place (the client reads the answer after its lag).
        self._events: list[tuple[float, int, int, float, Signal | str | None]] = []
        self._sequence = 0
        self._serving = 0
        self._queue: collections.deque[tuple[int, float]] = collections.deque()
        self._totals = Totals()
        for client in range(clients):
            if client < len(start_at) and start_at[client] > 0:
                self.clients[client].waking = True
                self._push(start_at[client], client, 0.0, None)
            else:
                self._fill(client)

    @property
    def limits(self) -> list[int]:
        """Each client's current limit."""
        return [c.limit.limit for c in self.clients]

    def outage(self, seconds: float, back_after: Sequence[float]) -> None:
        """Let ``seconds`` pass with no client sending; client ``n`` resumes ``back_after[n]`` on.

        As the circuit breakers of replicas after an outage: each resumes when its own
        probe finds the server back, at its own moment (the requests on the wire when it
        began are answered as usual: the simulated server stays up).
        """
        end = self.now + seconds
        for index, client in enumerate(self.clients):
            client.paused_until = end + back_after[index]
            client.waking = True
            self._push(client.paused_until, index, 0.0, None)
        self.run(seconds)

    def run(self, seconds: float) -> Totals:
        """Advance ``seconds`` of simulated time; return what was answered meanwhile."""
        self._totals = Totals()
        end = self.now + seconds
        while self._events and self._events[0][0] <= end:
            when, _, client, sent_at, signal = heapq.heappop(self._events)
            self.now = when
            if signal is None:
                self.clients[client].waking = False
                self._fill(client)
            elif signal == SERVED:
                self._served(client, sent_at)
            else:
                self._answer(client, sent_at, signal)
        self.now = end
        return self._totals

    def _push(self, when: float, client: int, sent_at: float, signal: Signal | str | None) -> None:
        self._sequence += 1
        heapq.heappush(self._events, (when, self._sequence, client, sent_at, signal))

    def _fill(self, index: int) -> None:
        client = self.clients[index]
        if self.now < client.paused_until:
            return  # its wake-up is scheduled (outage)
        if self.now < client.limit.resume_at:
            if not client.waking:
                client.waking = True
                self._push(client.limit.resume_at, index, 0.0, None)
            return
        while client.in_flight < client.limit.limit:
            client.in_flight += 1
            self._arrive(index, self.now)

    def _arrive(self, client: int, sent_at: float) -> None:
        if self._serving < self.capacity:
            self._serve(client, sent_at)
        elif self.overload == "reject":  # refused at once: after a network round trip
            self._push(self.now + NETWORK_RTT, client, sent_at, Signal.OVERLOAD)
        else:
            self._queue.append((client, sent_at))

    def _serve(self, client: int, sent_at: float) -> None:
        self._serving += 1
        took = self.latency + self._random.uniform(0.0, self.jitter)
        self._push(self.now + took, client, sent_at, SERVED)

    def _served(self, client: int, sent_at: float) -> None:
        self._serving -= 1
        while self._queue and self._serving < self.capacity:
            self._serve(*self._queue.popleft())
        reader = self.clients[client]
        if self.client_stall and self._random.random() < STALL_CHANCE:
            stall = self._random.uniform(0.0, self.client_stall)
            reader.stalled_until = max(reader.stalled_until, self.now + stall)
        lag = self._random.uniform(0.0, self.client_lag) if self.client_lag else 0.0
        self._push(max(self.now, reader.stalled_until) + lag, client, sent_at, Signal.OK)

    def _answer(self, index: int, sent_at: float, signal: Signal | str) -> None:
        client = self.clients[index]
        if signal is Signal.OK:
            self._totals.ok += 1
            self._totals.latencies.append(self.now - sent_at)
        else:
            self._totals.refused += 1
        client.limit.record(
            Signal(signal),
            sent_at=sent_at,
            now=self.now,
            in_flight=client.in_flight,
            retry_after_s=self.retry_after if signal is Signal.OVERLOAD else None,
        )
        client.in_flight -= 1
        self._fill(index)
