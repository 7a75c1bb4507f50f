"""What a result carries besides its prediction: the item's ``custom_id``, the answer's ``usage``.

Pure, no I/O. For any protocol, an object item with a string ``custom_id`` (an OpenAI
Batch line) gets it echoed into its result, errors included, so the output file can name
every line; an answer that is an object with a ``usage`` object (OpenAI-compatible
servers send one) gets its token counts copied into the result, where ``tail``,
``status`` and the metrics add them up.

Most items and answers have neither: one bytes search over a work unit's items and one
over its answers rule them out before anything is parsed, and :func:`annotate` returns
None, so the writer keeps its fast path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

from schemas import Usage  # noqa: TC001 - msgspec reads it at run time

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True, slots=True)
class Annotation:
    """The extra fields of one item's result (None: absent)."""

    custom_id: str | None = None
    usage: Usage | None = None


NONE: Final = Annotation()


class _CustomId(msgspec.Struct):
    custom_id: str | None = None


class _Usage(msgspec.Struct):
    usage: Usage | None = None


_custom_id: Final = msgspec.json.Decoder(_CustomId)
_usage: Final = msgspec.json.Decoder(_Usage)


def custom_id_of(item: bytes | msgspec.Raw) -> str | None:
    """Return the item's own ``custom_id`` when it is an object holding a string one."""
    text = bytes(item)
    if b'"custom_id"' not in text:
        return None
    try:
        return _custom_id.decode(text).custom_id
    except msgspec.MsgspecError:
        return None  # not an object, or custom_id not a string: nothing to echo


def usage_of(prediction: bytes) -> Usage | None:
    """Return the token counts of an answer object's ``usage``, if it has a readable one."""
    if b'"usage"' not in prediction:
        return None
    try:
        return _usage.decode(prediction).usage
    except msgspec.MsgspecError:
        return None  # not an object, or usage not token counts: nothing to add up


def annotate(
    items: Sequence[bytes | msgspec.Raw], predictions: Sequence[bytes] | None
) -> list[Annotation] | None:
    """Return each item's annotation (predictions None: an error), or None if all are empty."""
    # find(), not ``in``: bytes.__contains__ first tries its argument as an integer, and
    # raising and clearing that TypeError costs more than the search (twice per unit).
    ids = b"".join(items).find(b'"custom_id"') >= 0
    usages = predictions is not None and b"".join(predictions).find(b'"usage"') >= 0
    if not ids and not usages:
        return None
    found: list[Annotation] = []
    any_found = False
    for position, item in enumerate(items):
        custom_id = custom_id_of(item) if ids else None
        usage = usage_of(predictions[position]) if usages and predictions is not None else None
        if custom_id is None and usage is None:
            found.append(NONE)
        else:
            any_found = True
            found.append(Annotation(custom_id, usage))
    return found if any_found else None
