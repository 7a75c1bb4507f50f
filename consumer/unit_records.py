"""A work unit's result records: one per item, ok or error, each under the record limit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from consumer.annotations import annotate
from schemas import OkResultEncoder, ResultErrorKind, encode_error_result, encode_ok_result

if TYPE_CHECKING:
    from collections.abc import Sequence

    from consumer.annotations import Annotation
    from consumer.outcome import Outcome
    from consumer.splitter import WorkUnit
    from schemas import BatchRequest


def _indexes(request: BatchRequest, unit: WorkUnit) -> Sequence[int]:
    """Return the batch indexes of the unit's items (a retry's items carry theirs)."""
    if request.indexes is not None:
        return request.indexes[unit.offset : unit.offset + len(unit.items)]
    first = request.start + unit.offset
    return range(first, first + len(unit.items))


def encode_unit(
    request: BatchRequest, unit: WorkUnit, outcome: Outcome, limit: int
) -> tuple[list[bytes], int, list[Annotation] | None]:
    """Return the unit's result records, how many are errors, and the items' annotations.

    Records over ``limit`` bytes are replaced by ``result_too_large`` errors.
    """
    count = len(unit.items)
    predictions = outcome.predictions
    if count == 1 and predictions is not None:
        one = one_ok(request, unit, outcome, predictions[0], limit)
        if one is not None:
            return [one], 0, None
    at = _indexes(request, unit)
    notes = annotate(unit.items, predictions)
    if outcome.predictions is not None and notes is not None:
        values = [
            encode_ok_result(
                request,
                at[i],
                p,
                outcome.attempts,
                outcome.latency_ms,
                outcome.queue_ms,
                custom_id=notes[i].custom_id,
                usage=notes[i].usage,
            )
            for i, p in enumerate(outcome.predictions)
        ]
        errors = _replace_oversized(request, at, values, outcome, limit, notes)
    elif outcome.predictions is not None and count == 1:
        # One item over the limit (one_ok took the others): a result_too_large error.
        values = [
            encode_ok_result(
                request,
                at[0],
                outcome.predictions[0],
                outcome.attempts,
                outcome.latency_ms,
                outcome.queue_ms,
            )
        ]
        errors = _replace_oversized(request, at, values, outcome, limit, None)
    elif outcome.predictions is not None:
        encode = OkResultEncoder(request, outcome.attempts, outcome.latency_ms, outcome.queue_ms)
        values = encode.all(at, outcome.predictions)
        errors = _replace_oversized(request, at, values, outcome, limit, None)
    else:
        values = [
            encode_error_result(
                request,
                at[i],
                outcome.error_kind or ResultErrorKind.BAD_RESPONSE,
                outcome.error_message or "",
                outcome.http_status,
                outcome.attempts,
                outcome.latency_ms,
                outcome.queue_ms,
                custom_id=None if notes is None else notes[i].custom_id,
            )
            for i in range(count)
        ]
        errors = count
    return values, errors, notes


def one_ok(
    request: BatchRequest, unit: WorkUnit, outcome: Outcome, prediction: bytes, limit: int
) -> bytes | None:
    """Return the record of an answered one-item unit, or None for the general path.

    The usual case at one item per request, in one call: no ``custom_id`` in the item,
    no ``usage`` in the answer, the record under ``limit``. Anything else (None) takes
    the general path, which annotates it or turns it into a ``result_too_large`` error.
    """
    item = unit.items[0]
    if (
        bytes(item).find(b'"custom_id"') >= 0  # (find: see annotate)
        or prediction.find(b'"usage"') >= 0
    ):
        return None
    index = request.start + unit.offset if request.indexes is None else request.indexes[unit.offset]
    value = encode_ok_result(
        request, index, prediction, outcome.attempts, outcome.latency_ms, outcome.queue_ms
    )
    return value if len(value) <= limit else None


def _replace_oversized(  # noqa: PLR0913, PLR0917 - the unit, its records and the limit
    request: BatchRequest,
    at: Sequence[int],
    values: list[bytes],
    outcome: Outcome,
    limit: int,
    notes: list[Annotation] | None,
) -> int:
    """Turn results over the record limit into ``result_too_large`` errors; count them.

    The results topic would refuse such a record, and a refused record stops the
    replica: an error result tells the user instead, and the batch goes on.
    """
    if max(map(len, values), default=0) <= limit:
        return 0  # the usual case, told without a loop in Python
    replaced = 0
    for i, value in enumerate(values):
        if len(value) > limit:
            values[i] = encode_error_result(
                request,
                at[i],
                ResultErrorKind.RESULT_TOO_LARGE,
                f"the prediction makes a result record of {len(value)} bytes, over the "
                f"{limit}-byte limit (BATCH_RUNNER_MAX_RESULT_BYTES, or less if the "
                "results topic's max.message.bytes leaves less room)",
                None,
                outcome.attempts,
                outcome.latency_ms,
                outcome.queue_ms,
                custom_id=None if notes is None else notes[i].custom_id,
                usage=None if notes is None else notes[i].usage,  # tokens were spent
            )
            replaced += 1
    return replaced
