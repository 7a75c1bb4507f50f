"""Poison isolation: split a work unit the model refused until the bad items stand alone.

With ``items_per_request`` k > 1, one malformed item makes many models refuse the whole
request (400, 422, a 500 with the same message every time, a wrong number of
predictions), and every item of the unit would share that error. When a unit's outcome
is such a *final* refusal of its input (:func:`worth_bisecting`), :func:`isolate` splits
it in halves and sends each half, recursively: a half that succeeds gets its
predictions, a half that is refused again is split again, and only an item refused
*alone* gets an error result, with the kind, status and message of its own answer.

Calls, for one bad item in a unit of n: at each level the left half is sent first; when
it succeeds the right half is known to hold the cause (the refusal is the model's
deterministic answer to its input), so it is split without being sent whole, and the
last single item is sent alone to be sure. That is one to two calls per level, at most
``2·ceil(log2 n)`` per bad item, about ``log2 n`` typically. A cap per unit
(``max_calls``, ``--max-bisect-calls``) bounds a unit whose items are all refused (a
model that refuses everything would otherwise cost ``2n - 1`` calls per unit): past it,
the parts not yet isolated keep the error of the part they came from, and its message
says that bisection stopped.

Which refusals are worth it: those that depend on the input. Statuses 400, 413 and 422,
an HTTP 500 judged final by repetition, ``wrong_count``, ``bad_item`` (refused by the
codec before any call) and ``response_too_large`` (halves answer less). Not 401, 403,
404 (the endpoint's configuration: every part would meet them), nor anything retried
until the budget ran out (a timeout says nothing about which item is bad).

Pure of I/O: the caller passes ``send``, which dispatches a part and returns its
:class:`~consumer.outcome.Outcome` (retries included); tests pass a function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from consumer.splitter import WorkUnit
from schemas.error_kinds import ResultErrorKind

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from consumer.outcome import Outcome

BISECT_STATUSES = frozenset({400, 413, 422, 500})
"""HTTP statuses of a final refusal that may be one item's fault (500: when repeated)."""

_BISECT_KINDS = frozenset(
    {ResultErrorKind.WRONG_COUNT, ResultErrorKind.BAD_ITEM, ResultErrorKind.RESPONSE_TOO_LARGE}
)

Send: TypeAlias = "Callable[[Sequence[bytes]], Awaitable[Outcome]]"


def worth_bisecting(outcome: Outcome, size: int) -> bool:
    """Whether a unit of ``size`` items with this ``outcome`` should be split."""
    if size < 2 or outcome.predictions is not None or not outcome.final:
        return False
    if outcome.error_kind in _BISECT_KINDS:
        return True
    return (
        outcome.error_kind == ResultErrorKind.HTTP_STATUS and outcome.http_status in BISECT_STATUSES
    )


@dataclass(slots=True)
class Isolation:
    """What bisecting one unit gave: its parts with their outcomes, and what it cost.

    ``parts`` cover the unit's items exactly once, in order; ``calls`` counts the parts
    sent (``attempts`` the HTTP requests they took, retries included); ``splits`` the
    units cut in two; ``isolated`` the items that got an error alone.
    """

    parts: list[tuple[WorkUnit, Outcome]] = field(default_factory=list)
    calls: int = 0
    attempts: int = 0
    splits: int = 0
    isolated: int = 0
    stopped: bool = False


async def isolate(unit: WorkUnit, outcome: Outcome, send: Send, max_calls: int) -> Isolation:
    """Bisect ``unit``, refused with ``outcome``, sending at most ``max_calls`` parts.

    ``unit.offset`` is kept: the parts' offsets are in the same frame (the chunk's).
    A unit not :func:`worth_bisecting` comes back whole with its outcome.
    """
    run = _Bisection(send, max_calls)
    if not worth_bisecting(outcome, len(unit.items)):
        return Isolation(parts=[(unit, outcome)])
    await run.split(unit, outcome)
    run.result.parts.sort(key=lambda part: part[0].offset)
    return run.result


class _Bisection:
    def __init__(self, send: Send, max_calls: int) -> None:
        self._send = send
        self._max_calls = max_calls
        self.result = Isolation()

    async def settle(self, unit: WorkUnit, outcome: Outcome) -> None:
        """Keep a sent part's outcome, or split the part when it is worth bisecting."""
        size = len(unit.items)
        if worth_bisecting(outcome, size):
            await self.split(unit, outcome)
            return
        if size == 1 and outcome.predictions is None:
            self.result.isolated += 1
        self.result.parts.append((unit, outcome))

    async def split(self, unit: WorkUnit, refusal: Outcome) -> None:
        """Send ``unit``'s halves (the right one only when needed), settling each."""
        if self.result.calls >= self._max_calls:
            self._stop(unit, refusal)
            return
        self.result.splits += 1
        half = len(unit.items) // 2
        left = WorkUnit(unit.offset, unit.items[:half])
        right = WorkUnit(unit.offset + half, unit.items[half:])
        left_outcome = await self._call(left)
        if left_outcome.predictions is not None and len(right.items) > 1:
            # The left half is fine: the cause is in the right one, no need to send it whole.
            self.result.parts.append((left, left_outcome))
            await self.split(right, refusal)
            return
        await self.settle(left, left_outcome)
        if self.result.calls >= self._max_calls:
            self._stop(right, refusal)
            return
        await self.settle(right, await self._call(right))

    async def _call(self, unit: WorkUnit) -> Outcome:
        self.result.calls += 1
        outcome = await self._send(unit.items)
        self.result.attempts += outcome.attempts
        return outcome

    def _stop(self, unit: WorkUnit, refusal: Outcome) -> None:
        """Give ``unit`` the refusal of the part it came from: the budget is spent."""
        self.result.stopped = True
        message = (
            f"{refusal.error_message or ''} (bisection stopped after {self.result.calls} "
            f"calls, --max-bisect-calls: the bad item is among these {len(unit.items)})"
        ).strip()
        self.result.parts.append((unit, refusal._replace(error_message=message)))
