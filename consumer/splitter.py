"""Split one batch request chunk into work units of ``k`` items (pure, no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from consumer.resume import missing

if TYPE_CHECKING:
    from collections.abc import Sequence


class WorkUnit(NamedTuple):
    """Consecutive items sent in one inference request.

    ``offset`` is the position of the unit's first item within its chunk; the item's
    index in the whole batch is the chunk's ``start`` plus that. A named tuple: a chunk
    of 500 items at one item per request makes 500 (a frozen dataclass sets each field
    through ``object.__setattr__``).
    """

    offset: int
    items: Sequence[bytes]


def items_per_request(requested: int | None, default: int, maximum: int) -> int:
    """Return the unit size: the request's own value if given (capped), else the default."""
    if requested is None:
        return default
    return max(1, min(requested, maximum))


def split(items: Sequence[bytes], size: int) -> list[WorkUnit]:
    """Cut ``items`` into units of ``size`` items (the last may be shorter), in order."""
    if size < 1:
        raise ValueError("size must be >= 1")
    new = tuple.__new__  # WorkUnit(i, ...) without the named tuple's Python __new__: per unit
    return [new(WorkUnit, (i, items[i : i + size])) for i in range(0, len(items), size)]


def split_missing(
    items: Sequence[bytes], done: Sequence[tuple[int, int]], size: int
) -> list[WorkUnit]:
    """Cut the items not yet answered (outside the ``done`` ranges) into units of ``size``."""
    if not done:  # all of them: split's own units (no second unit made per unit)
        return split(items, size)
    return [
        WorkUnit(start + unit.offset, unit.items)
        for start, end in missing(done, len(items))
        for unit in split(items[start:end], size)
    ]
