"""Unit tasks (consumer/units.py): a unit given a place runs in the task that handed it on.

Real limiter, places and chunks; the units' work is a coroutine that takes its place and
gives it back as the dispatcher does (``guard.enter`` takes a held place, ``guard.leave``
releases it), optionally waiting before or after.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consumer.chunk import Chunk
from consumer.limiter import Limiter, Place
from consumer.units import UnitTasks
from schemas import decode_batch_request, encode_batch_request

if TYPE_CHECKING:
    from collections.abc import Awaitable


def make_chunk(offset: int) -> Chunk:
    """Return a one-item chunk received at offset ``offset``."""
    data = encode_batch_request(
        batch_id=f"b{offset}", items=[b'{"i":0}'], start=0, total=1, chunk=0, chunks=1
    )
    return Chunk(("requests", 0), offset, decode_batch_request(data), [], 0, 1)


@dataclass(eq=False)
class Unit:
    """A queued unit: its chunk, its place, what it does once it has sent."""

    name: str
    chunk: Chunk
    place: Place
    wait_after_s: float = 0.0  # a retry's backoff after giving the place back
    after_release: list[Chunk] = field(default_factory=list)  # chunks abandoned right then
    stopped: bool = False  # answered without a request (a cancelled batch, say)

    def __call__(self) -> bool:
        """Start the unit (the limiter gave it a place); decline for an abandoned chunk."""
        if self.chunk.abandoned:
            return False
        self.place.held = True
        RUN.units.start(self)
        return True


class Run:
    """The units' work, the order they ran in, and each one's task."""

    def __init__(self, limit: int) -> None:
        """Share ``limit`` places."""
        self.limiter = Limiter(limit)
        self.ran: list[tuple[str, asyncio.Task[object] | None]] = []
        self.finished: list[tuple[str, bool]] = []
        self.units: UnitTasks[Unit, str] = UnitTasks(self.send, self.answered, self.ended)
        self.gate = asyncio.Event()
        self.answers: list[tuple[str, str]] = []

    def send(self, unit: Unit) -> Awaitable[str] | None:
        """Return the unit's request, or None for a stopped unit (its place given back)."""
        if unit.stopped:
            self.ran.append((unit.name, None))
            unit.place.release()
            return None
        return self.process(unit)

    async def process(self, unit: Unit) -> str:
        """Take the place, wait for the gate (the answer), give it back."""
        self.ran.append((unit.name, asyncio.current_task()))
        assert unit.place.take()
        await self.gate.wait()
        self.limiter.release()
        for chunk in unit.after_release:
            chunk.abandoned = True
        return f"answer of {unit.name}"

    def answered(self, unit: Unit, answer: str) -> Awaitable[None] | None:
        """Note the answer; return the unit's wait after it (a retry's backoff), if any."""
        self.answers.append((unit.name, answer))
        return asyncio.sleep(unit.wait_after_s) if unit.wait_after_s else None

    def ended(self, unit: Unit, task: asyncio.Task[None]) -> None:
        """Note the task's last unit and whether a cancel ended it."""
        unit.chunk.tasks.discard(task)
        unit.place.release()
        self.finished.append((unit.name, task.cancelled()))

    def submit(
        self, name: str, chunk: Chunk, wait_after_s: float = 0.0, *, stopped: bool = False
    ) -> Unit:
        """Queue a unit of ``chunk`` for a place."""
        unit = Unit(name, chunk, Place(self.limiter, 0.0), wait_after_s, stopped=stopped)
        self.limiter.submit(unit)
        return unit


RUN: Run


async def settle() -> None:
    """Let the loop run every ready callback a few times over."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_units_handed_on_run_one_after_another_in_the_same_task() -> None:
    """With one place, three units run in one task, in order, and no other task is made."""
    global RUN  # noqa: PLW0603 - the units' start reaches the run of this test
    RUN = Run(1)
    chunk = make_chunk(0)
    for name in "abc":
        RUN.submit(name, chunk)
    RUN.gate.set()
    await settle()
    assert [name for name, _ in RUN.ran] == ["a", "b", "c"]
    assert len({task for _, task in RUN.ran}) == 1
    assert RUN.answers == [(name, f"answer of {name}") for name in "abc"]
    assert RUN.finished == [("c", False)]
    assert RUN.units.running == 0
    assert not chunk.tasks
    assert RUN.limiter.in_use == 0


async def test_a_unit_stopped_before_its_request_hands_its_place_on_in_the_same_task() -> None:
    """A unit that needs no request (``send`` returns None) is not answered; the next runs."""
    global RUN  # noqa: PLW0603 - the units' start reaches the run of this test
    RUN = Run(1)
    chunk = make_chunk(0)
    RUN.submit("a", chunk)
    RUN.submit("b", chunk, stopped=True)
    RUN.submit("c", chunk)
    RUN.gate.set()
    await settle()
    assert [name for name, _ in RUN.ran] == ["a", "b", "c"]
    assert RUN.ran[1][1] is None  # never sent
    assert RUN.ran[0][1] is RUN.ran[2][1]  # "c" ran in the task of "a"
    assert RUN.answers == [("a", "answer of a"), ("c", "answer of c")]
    assert RUN.finished == [("c", False)]
    assert not chunk.tasks
    assert RUN.limiter.in_use == 0


async def test_a_unit_handed_to_a_task_that_waits_starts_in_a_task_of_its_own() -> None:
    """The next unit does not wait for the previous one's backoff: it gets a task at once."""
    global RUN  # noqa: PLW0603 - the units' start reaches the run of this test
    RUN = Run(1)
    chunk = make_chunk(0)
    RUN.submit("a", chunk, wait_after_s=30.0)
    RUN.submit("b", chunk)
    RUN.gate.set()
    await settle()
    assert [name for name, _ in RUN.ran] == ["a", "b"]
    first, second = (task for _, task in RUN.ran)
    assert first is not second
    assert RUN.finished == [("b", False)]  # "a" still waits out its backoff
    assert chunk.tasks == {first}
    assert first is not None
    first.cancel()
    await settle()
    assert RUN.finished == [("b", False), ("a", True)]


async def test_a_cancel_of_a_chunk_reaches_only_its_own_units() -> None:
    """A task in one chunk's units is cancelled; the unit it handed on runs to its end."""
    global RUN  # noqa: PLW0603 - the units' start reaches the run of this test
    RUN = Run(1)
    one, two = make_chunk(0), make_chunk(1)
    RUN.submit("a", one, wait_after_s=30.0)
    RUN.submit("b", two)
    RUN.gate.set()
    await settle()
    one.cancel()  # a revoke of the first message: its running unit is cancelled
    await settle()
    assert sorted(RUN.finished) == [("a", True), ("b", False)]
    assert [name for name, _ in RUN.ran] == ["a", "b"]


async def test_a_unit_of_an_abandoned_chunk_gives_its_place_back_and_never_runs() -> None:
    """Abandoned between being handed on and running: its place goes to the next unit."""
    global RUN  # noqa: PLW0603 - the units' start reaches the run of this test
    RUN = Run(1)
    one, two = make_chunk(0), make_chunk(1)
    # "a" gives its place back, "b" is handed to its task, and "b"'s chunk is abandoned
    # before the task comes back for it.
    a = RUN.submit("a", one)
    a.after_release.append(two)
    RUN.submit("b", two)
    RUN.submit("c", one)
    RUN.gate.set()
    await settle()
    assert [name for name, _ in RUN.ran] == ["a", "c"]
    assert RUN.finished == [("c", False)]
    assert RUN.limiter.in_use == 0
    assert RUN.limiter.waiting == 0


class LeftBehind(Run):
    """Units whose place is given back by a callback their task leaves behind."""

    async def process(self, unit: Unit) -> str:
        """Take the place; a callback scheduled here (in this task's context) frees it."""
        self.ran.append((unit.name, asyncio.current_task()))
        assert unit.place.take()
        asyncio.get_running_loop().call_later(0.01, self.limiter.release)
        return unit.name


async def test_a_place_freed_by_a_callback_of_an_ended_unit_task_still_starts_the_next() -> None:
    """A callback inherits the context of the unit task that scheduled it (its runner).

    When it frees a place after that task ended, the next unit is handed to a runner
    that never comes back for it: the queued check starts it in a task of its own.
    """
    global RUN  # noqa: PLW0603 - the units' start reaches the run of this test
    RUN = LeftBehind(1)
    chunk = make_chunk(0)
    for name in "ab":
        RUN.submit(name, chunk)
    await settle()
    assert [name for name, _ in RUN.ran] == ["a"]
    assert RUN.finished == [("a", False)]  # its task ended, its place still taken
    for _ in range(100):  # the callback frees it within 10 ms; then "b" runs
        await asyncio.sleep(0.005)
        if len(RUN.finished) == 2:
            break
    assert [name for name, _ in RUN.ran] == ["a", "b"]
    assert RUN.finished == [("a", False), ("b", False)]
    first, second = (task for _, task in RUN.ran)
    assert first is not second
