"""Unit tasks: a work unit given a place runs in a task, often the task of the unit before it.

A unit becomes a task only once its endpoint's limit gives it a place
(:meth:`~consumer.limiter.Limiter.submit`). Most places come from a unit that just got
its answer: the limiter hands the place on inside ``guard.leave``, in that unit's task,
which then writes its own results without waiting for anything. :class:`UnitTasks` lets
that task run the next unit too, in the same step of the loop, instead of creating a
task for it. On Python 3.11 each task costs its creation, its entry in asyncio's weak set
of all tasks (and the entry's removal), a pass of the loop before its first step and its
done callback: at one item per request, the largest piece of the pipeline's own work per
unit.

A unit handed to a task that does not come back for it within that step (its unit waits
for a retry's backoff, bisects, or ends with an error or a cancel) is started in a task
of its own by a check queued on the loop at the hand-over, at the loop's next pass: no
unit waits for another unit's backoff. One check serves every hand-over made before it
runs (a callback queued per hand-over was a handle and a call per unit). A unit whose
chunk was abandoned before it ran gives its place back and never runs, as a task
cancelled before its first step did.

A task knows its runner through a context variable set when it starts (a task runs in a
copy of the context it was created in, which it then owns). A callback or a task created
inside a unit task inherits the runner's value: a unit it hands on goes to that runner,
which takes it if it comes back for it in time, and otherwise the queued check starts it,
as for any runner that does not come back.

Cancels: a task is in its unit's ``chunk.tasks`` only while it runs that unit, and it
moves to the next unit within one step, so a cancel of a chunk's tasks (a revoke, a
cancelled batch) only ever reaches that chunk's units.
"""

from __future__ import annotations

import asyncio
import contextvars
from functools import partial
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from consumer.chunk import Chunk
    from consumer.limiter import Place


class Queued(Protocol):
    """A unit given a place: its chunk and the place it holds."""

    @property
    def chunk(self) -> Chunk:
        """The chunk the unit belongs to."""

    @property
    def place(self) -> Place:
        """The place the limiter gave it (held until its request takes it)."""


Q = TypeVar("Q", bound=Queued)
R = TypeVar("R")


class _Runner(Generic[Q]):
    """A unit task's current unit and the unit handed to it (``None``: none)."""

    __slots__ = ("next", "unit")

    def __init__(self, unit: Q) -> None:
        self.unit = unit
        self.next: Q | None = None


class UnitTasks(Generic[Q, R]):
    """Runs units that hold their place: in the task that handed the place on, or a new one."""

    def __init__(
        self,
        send: Callable[[Q], Awaitable[R] | None],
        answered: Callable[[Q, R], Awaitable[None] | None],
        finished: Callable[[Q, asyncio.Task[None]], None],
    ) -> None:
        """Run each unit: ``answered(unit, await send(unit))``; ``finished(unit, task)`` at the end.

        ``send`` returns what the unit awaits (its requests), or None when it is done
        without one (stopped); ``answered`` takes the result in and returns what is left
        to await, if anything (a bisection): the unit task awaits them itself, without a
        coroutine of its own per unit around them. ``finished`` gets the task's last unit
        (a cancel or an error ended it there).
        """
        self._send = send
        self._answered = answered
        self._finished = finished
        self._runners: dict[asyncio.Task[None], _Runner[Q]] = {}
        # The runner of the unit task running now: each task runs in a context of its own
        # (no asyncio.current_task(), plain Python on 3.11, per hand-over).
        self._running: contextvars.ContextVar[_Runner[Q] | None] = contextvars.ContextVar(
            f"unit-runner-{id(self)}", default=None
        )
        # Runners handed a unit since the last check (one check a loop pass for them all).
        self._handed: list[_Runner[Q]] = []

    def start(self, unit: Q) -> None:
        """Run ``unit`` (it holds its place): after the running unit task's unit, or anew."""
        runner = self._running.get()
        if runner is not None and runner.next is None:
            runner.next = unit
            handed = self._handed
            handed.append(runner)
            if len(handed) == 1:
                asyncio.get_running_loop().call_soon(self._check_handed)
            return
        self._spawn(unit)

    def _spawn(self, unit: Q) -> None:
        runner = _Runner(unit)
        task = asyncio.create_task(self._run(runner))
        self._runners[task] = runner
        unit.chunk.tasks.add(task)
        task.add_done_callback(partial(self._ended, runner))

    async def _run(self, runner: _Runner[Q]) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a coroutine run by a task always has one
            raise RuntimeError("unit tasks run in a task")
        unit = runner.unit
        self._running.set(runner)  # in this task's context only
        send, answered = self._send, self._answered
        while True:
            sending = send(unit)
            if sending is not None:
                rest = answered(unit, await sending)
                if rest is not None:
                    await rest
            unit.chunk.tasks.discard(task)
            if unit.place.held:  # it never used it (a stopped unit gave it back already)
                unit.place.release()
            handed = runner.next
            if handed is not None and not handed.chunk.abandoned:
                runner.next = None  # (as _take_next, inline: the usual case)
            else:
                handed = self._take_next(runner)
                if handed is None:
                    return
            unit = runner.unit = handed
            unit.chunk.tasks.add(task)

    def _take_next(self, runner: _Runner[Q]) -> Q | None:
        """Take the unit handed to ``runner`` (one of an abandoned chunk gives its place back)."""
        while (unit := runner.next) is not None:
            runner.next = None
            if not unit.chunk.abandoned:
                return unit
            unit.place.release()  # may hand the place to this runner again
        return None

    def _check_handed(self) -> None:
        """Check every runner handed a unit since the last check (see :meth:`_check`)."""
        handed, self._handed = self._handed, []
        for runner in handed:
            if runner.next is not None:  # (most runners came back for theirs)
                self._check(runner)

    def _check(self, runner: _Runner[Q]) -> None:
        """Start the unit handed to a task that did not come back for it, in a task of its own."""
        unit = self._take_next(runner)
        if unit is not None:
            self._spawn(unit)

    def _ended(self, runner: _Runner[Q], task: asyncio.Task[None]) -> None:
        del self._runners[task]
        self._finished(runner.unit, task)
        self._check(runner)

    @property
    def running(self) -> int:
        """How many unit tasks there are."""
        return len(self._runners)
