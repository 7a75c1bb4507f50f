"""How late the replica's own event loop runs: the part of a round trip that is not the server's.

A busy or CPU-starved replica notices an answer late: the socket is readable, but the
loop is still running other callbacks, or the process is not scheduled at all. The
adaptive limit would read that delay as a queue in the server and cut its limit
(:mod:`consumer.adaptive`), though the server is idle. :class:`LoopLag` measures the
delay with one timer: every ``tick_s`` it asks to be called back and notes how much
later than asked it ran (on ``time.monotonic()``, not the loop's clock: uvloop's clock
is read once per loop pass, so a callback late within a pass would look punctual).

A request takes a :meth:`LoopLag.mark` when it is sent and asks :meth:`LoopLag.since`
when its answer is in: the *least* lateness of the ticks in between (of the last tick
before it, for a request shorter than a tick). That is the lag the loop had all through
the request's life, which every answer then waiting shared; a lag that came and went
delayed some answers and not others, and the adaptive limit, which judges a round by
its fastest answer, already looks past it. The timer runs only while requests use it:
a tick with no mark or reading since the one before is the last, and the next mark
starts it again.

A tick costs a timer callback (100 a second at the default 10 ms); an idle loop's timer
fires within about a millisecond of its time (uvloop's timers have millisecond
resolution), so an idle replica's discount is at most that.

Given a gauge, the probe exports its last tick's lateness (:attr:`LoopLag.current_s`,
read when the gauge is scraped: ``batch_runner_event_loop_lag_seconds``): a replica
starved of CPU shows there, not only in its slower answers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from prometheus_client import Gauge

TICK_S: Final = 0.010
"""How often the loop's lateness is measured while requests are on the wire."""
RECENT: Final = 64
"""How many ticks are remembered: a request's lag is read over its last 64 ticks at most."""


class LagMark(NamedTuple):
    """The probe's counters when a request was sent (see :meth:`LoopLag.mark`)."""

    ticks: int


class LoopLag:
    """The event loop's lateness, sampled by one timer while requests are on the wire."""

    def __init__(self, *, tick_s: float = TICK_S, gauge: Gauge | None = None) -> None:
        """Sample every ``tick_s`` seconds once :meth:`mark` is first called on a loop.

        ``gauge``, if given, reads :attr:`current_s` whenever it is collected.
        """
        if not tick_s > 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.tick_s = tick_s
        self.ticks = 0  # ticks measured so far
        self.last_s = 0.0  # the last tick's lateness
        self._recent: deque[float] = deque(maxlen=RECENT)  # the last ticks' lateness
        self._due: float | None = None  # when the pending tick should run (None: no timer)
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the timer is on
        self._used = False  # a mark or a reading since the last tick
        if gauge is not None:
            gauge.set_function(lambda: self.current_s)

    @property
    def current_s(self) -> float:
        """The last tick's lateness (seconds); 0 while the timer is stopped (loop idle)."""
        return self.last_s if self._due is not None else 0.0

    def mark(self) -> LagMark:
        """Return the counters now (a request is sent); start the timer if it is stopped."""
        self._used = True
        loop = asyncio.get_running_loop()
        if self._due is None or loop is not self._loop:
            self.last_s = 0.0  # the loop was idle (or is another): the last tick is stale
            self._schedule(loop)
        return LagMark(self.ticks)

    def since(self, mark: LagMark) -> float:
        """Return the least lateness (seconds) of the ticks after ``mark``.

        With no tick since ``mark`` (a request shorter than a tick), the last tick's; 0
        if the timer has stopped meanwhile (nothing was sent or answered for a tick).
        """
        self._used = True
        ticks = min(self.ticks - mark.ticks, len(self._recent))
        if ticks > 0:
            return min(self._recent[-n] for n in range(1, ticks + 1))
        return self.last_s if self._due is not None else 0.0  # stopped: the loop was idle

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due = time.monotonic() + self.tick_s
        loop.call_later(self.tick_s, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop or self._due is None:
            return  # a timer left on a loop the probe has moved away from
        due, self._due = self._due, None
        self.last_s = max(time.monotonic() - due, 0.0)
        self.ticks += 1
        self._recent.append(self.last_s)
        if self._used and not loop.is_closed():
            self._used = False
            self._schedule(loop)
