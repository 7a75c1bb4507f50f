"""Request deadlines: one check per tick for all requests, timeouts apart from other cancels."""

from __future__ import annotations

import asyncio
import types
from typing import TYPE_CHECKING

import pytest
import uvloop

from consumer import deadlines as deadlines_module
from consumer.deadlines import Deadlines

if TYPE_CHECKING:
    from collections.abc import Iterator


async def _request(deadlines: Deadlines, wait: asyncio.Event) -> str:
    """Stand for one attempt: wait on the 'wire', say how it ended."""
    task = deadlines.start()
    try:
        await wait.wait()
    except asyncio.CancelledError:
        if deadlines.expired(task):
            return "timeout"
        raise
    finally:
        deadlines.stop(task)
    return "answered"


async def test_a_request_past_its_deadline_times_out_and_the_others_are_answered() -> None:
    """Past its timeout a request ends as a timeout, within a tick; an answer in time wins."""
    deadlines = Deadlines(0.05, tick_s=0.01)
    never, soon = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    slow = asyncio.create_task(_request(deadlines, never))
    fast = asyncio.create_task(_request(deadlines, soon))
    await asyncio.sleep(0)
    soon.set()
    assert await fast == "answered"
    assert await slow == "timeout"
    assert loop.time() - started >= 0.05
    assert not slow.cancelling()  # the timeout's cancel was undone


async def test_a_cancel_from_elsewhere_stays_a_cancel_even_at_the_deadline() -> None:
    """A revoke's cancel is never mistaken for a timeout, alone or at the same moment."""
    deadlines = Deadlines(0.05, tick_s=0.01)
    alone = asyncio.create_task(_request(deadlines, asyncio.Event()))
    await asyncio.sleep(0)
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    both = asyncio.create_task(_request(deadlines, asyncio.Event()))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    # The deadline fires, and a revoke cancels the task before it runs again.
    deadlines._due[both] = loop.time()
    deadlines._check(loop)
    both.cancel()
    with pytest.raises(asyncio.CancelledError):
        await both
    assert not deadlines._due  # nothing left on the wire


async def test_a_timeout_turned_into_another_error_leaves_no_cancel_behind() -> None:
    """If the client turns the timeout's cancel into its own error, the cancel is undone."""
    deadlines = Deadlines(0.02, tick_s=0.01)

    async def client_that_converts() -> None:
        task = deadlines.start()
        try:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ConnectionResetError from None
        finally:
            deadlines.stop(task)

    task = asyncio.create_task(client_that_converts())
    with pytest.raises(ConnectionResetError):
        await task
    assert not task.cancelling()


def test_the_timeout_and_tick_must_be_positive() -> None:
    """A zero timeout or tick is refused."""
    with pytest.raises(ValueError, match="must be > 0"):
        Deadlines(0)
    with pytest.raises(ValueError, match="must be > 0"):
        Deadlines(1, tick_s=0)


class _CountingDue(dict[asyncio.Task[object], float]):
    """The deadlines' dict, counting the entries a check reads."""

    reads = 0

    def items(self) -> Iterator[tuple[asyncio.Task[object], float]]:  # type: ignore[override]
        for entry in super().items():
            self.reads += 1
            yield entry


async def test_a_check_reads_the_passed_deadlines_and_the_first_still_ahead_only() -> None:
    """One timeout for all: deadlines fall due in the order the requests started.

    A check so stops at the first deadline still ahead instead of reading every request
    on the wire (64 of them at each tick of a replica at its default limit).
    """
    deadlines = Deadlines(0.2, tick_s=0.05)
    due = deadlines._due = _CountingDue()  # counts what a check reads
    early, late = asyncio.Event(), asyncio.Event()
    first = [asyncio.create_task(_request(deadlines, early)) for _ in range(3)]
    await asyncio.sleep(0.1)
    later = [asyncio.create_task(_request(deadlines, late)) for _ in range(40)]
    assert [await task for task in first] == ["timeout"] * 3
    # The checks before the first three fell due read one entry each; the one that
    # cancelled them read them and the first of the later ones.
    assert due.reads <= 4 + 4
    late.set()
    assert [await task for task in later] == ["answered"] * 40


def test_the_running_task_is_read_where_asyncio_current_task_reads_it() -> None:
    """``start`` names the task running the request, as ``asyncio.current_task`` would.

    On Python 3.11 it reads the running tasks directly (``current_task`` is a Python
    function there); the task it names is the one a timeout cancels, in each of two
    tasks, on asyncio's loop and on uvloop's.
    """
    if isinstance(asyncio.current_task, types.FunctionType):
        assert deadlines_module._RUNNING is not None

    async def both() -> None:
        deadlines = Deadlines(30.0)

        async def one() -> tuple[object, object]:
            started = deadlines.start()
            deadlines.stop(started)
            return started, asyncio.current_task()

        for started, current in await asyncio.gather(one(), one()):
            assert started is current
        named = [started for started, _ in await asyncio.gather(one(), one())]
        assert named[0] is not named[1]

    asyncio.run(both())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(both())


async def test_a_deadline_outside_a_task_is_refused() -> None:
    """A request clock needs the task it would cancel: none running is an error."""
    deadlines = Deadlines(30.0)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException] = loop.create_future()

    def outside() -> None:
        try:
            deadlines.start()
        except RuntimeError as exc:
            done.set_result(exc)

    loop.call_soon(outside)
    assert "running task" in str(await done)
