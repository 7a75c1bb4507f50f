"""Per-request timeouts without a timer per request: one check of every deadline per tick.

aiohttp's own total timeout costs each request a timer handle, a timer context and the
bookkeeping of both. :class:`Deadlines` keeps the deadline of each request on the wire
in a dict (the task that sent it → when it must have its answer) and, while any is on
the wire, checks them every ``tick_s`` with one timer for all (a check reads the
deadlines that passed and the first that did not: they are kept in the order they fall
due). A task past its deadline is cancelled, as ``asyncio.timeout`` would, and
:meth:`Deadlines.expired` tells the request's own ``except CancelledError`` that the
cancel was the timeout's, so it turns into a timeout failure; a cancel from anyone else
(a revoke, a cancelled batch, a shutdown) stays a cancel, also when both come at once.

A request so times out between its timeout and its timeout plus one tick: with the
default 30 s timeout and a 0.1 s tick, at most 0.3% late.
"""

from __future__ import annotations

import asyncio
import types
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

TICK_S: Final = 0.1
"""How often the deadlines are checked while a request is on the wire."""

# Each loop's running task, as asyncio.current_task reads it: on Python 3.11 that is a
# Python function around a lookup in this dict (C's own, kept by the C tasks as they
# step), read here directly; where current_task is C itself (3.12+), None (it is called).
_RUNNING: Mapping[asyncio.AbstractEventLoop, asyncio.Task[object]] | None = (
    getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(asyncio.current_task, types.FunctionType)
    else None
)


class Deadlines:
    """The deadlines of the requests on the wire, checked once per tick."""

    def __init__(self, timeout_s: float, *, tick_s: float = TICK_S) -> None:
        """Give each request ``timeout_s``; check every ``tick_s`` (on the loop's clock)."""
        if timeout_s <= 0 or tick_s <= 0:
            raise ValueError("timeout_s and tick_s must be > 0")
        self.timeout_s = timeout_s
        self._tick_s = tick_s
        # In the order the requests started, which is the order they are due: one timeout
        # for all, on the loop's clock (a task's next request is a new entry, at the end).
        self._due: dict[asyncio.Task[object], float] = {}
        self._fired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> asyncio.Task[object]:
        """Start the current task's request clock; return the task (for :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop) if _RUNNING is None else _RUNNING.get(loop)
        if task is None:
            raise RuntimeError("a request deadline needs a running task")
        self._due[task] = loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = loop.call_later(self._tick_s, self._check, loop)
        return task

    def stop(self, task: asyncio.Task[object]) -> None:
        """Forget the task's request (answered, failed or cancelled).

        A timeout's cancel that the request never saw as such (the HTTP client turned
        it into another error) is undone, so the task is not left counted as cancelled.
        """
        self._due.pop(task, None)
        if task in self._fired:
            self._fired.discard(task)
            task.uncancel()

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether a cancel of ``task`` was its timeout and nothing else (then undone).

        Call it in the request's ``except asyncio.CancelledError``: True means the
        request timed out and the task goes on; False, re-raise.
        """
        if task not in self._fired:
            return False
        self._fired.discard(task)
        return task.uncancel() == 0

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        late = []
        for task, due in self._due.items():  # in the order they are due (see __init__)
            if due > now:
                break
            late.append(task)
        for task in late:
            del self._due[task]
            self._fired.add(task)
            task.cancel()
        if self._due:
            self._timer = loop.call_later(self._tick_s, self._check, loop)
