"""The batch request: its type, decoder and encoder (``batch-request.v1.json``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec
import orjson

from schemas.decoding import (
    DEFAULT_LIMITS,
    InvalidMessage,
    Limits,
    check_depth,
    check_duplicates,
    check_size,
    check_utf8,
    parse,
    top_level_decoder,
)
from schemas.fields import (
    BATCH_REQUEST_V1,
    BatchId,
    MetaValue,
    NonNegative,
    Positive,
    Priority,
    Target,
    position_problem,
)

if TYPE_CHECKING:
    from collections.abc import Sequence


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One chunk of a batch, on ``batch-requests`` with key = ``batch_id``.

    ``items`` hold the exact JSON text of each item (opaque to the runner). Item ``i`` of
    this chunk is item ``start + i`` of the batch; ``total`` counts the whole batch's items
    and ``chunk`` of ``chunks`` numbers this message within the batch. ``deadline`` (Unix
    seconds): items not sent to the model by then get an ``expired`` error. A retry
    (``attempt`` 2 or more) resends some items of the batch: ``start``/``total``/``chunk``
    place the items among the attempt's items and ``indexes[i]`` is item ``i``'s index in
    the batch. Optional fields written as ``null`` read as absent.
    """

    schema: Literal["batch-request/v1"]
    batch_id: BatchId
    chunk: NonNegative
    chunks: Positive
    start: NonNegative
    total: Positive
    items: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]
    target: Target | None = None
    items_per_request: Positive | None = None
    priority: Priority | None = None
    metadata: dict[str, MetaValue] | None = None
    submitted_at: float | None = None
    deadline: float | None = None
    attempt: Positive | None = None
    indexes: list[NonNegative] | None = None

    def index(self, position: int) -> int:
        """Return the batch index of this chunk's item ``position``."""
        if self.indexes is not None:
            return self.indexes[position]
        return self.start + position


_request_decoder: Final = msgspec.json.Decoder(BatchRequest)
_encoder: Final = msgspec.json.Encoder()
_REQUEST_VERSIONS: Final = f"this reader understands {BATCH_REQUEST_V1}"


def _check_positions(request: BatchRequest) -> None:
    problem = position_problem(
        request.chunk, request.chunks, request.start, len(request.items), request.total
    )
    if problem is not None:
        raise InvalidMessage("inconsistent", problem)


def decode_batch_request(data: bytes, limits: Limits = DEFAULT_LIMITS) -> BatchRequest:
    """Decode and validate one batch request; raise :class:`InvalidMessage` if it is not one."""
    check_size(data, limits)
    request = parse(_request_decoder, data, _REQUEST_VERSIONS)
    if len(request.items) > limits.max_items:
        raise InvalidMessage(
            "limits",
            f"items: {len(request.items)} items exceed the limit of {limits.max_items}",
        )
    if request.metadata is not None and len(request.metadata) > limits.max_metadata_entries:
        raise InvalidMessage(
            "limits",
            f"metadata: more than {limits.max_metadata_entries} entries",
        )
    check_utf8(data, request.items)
    keys = top_level_decoder.decode(data)
    check_depth(data, keys, request.items, limits)
    check_duplicates(data, keys)
    _check_positions(request)
    if request.indexes is not None and len(request.indexes) != len(request.items):
        raise InvalidMessage(
            "inconsistent",
            f"indexes: {len(request.indexes)} indexes for {len(request.items)} items",
        )
    return request


def item_values(request: BatchRequest) -> list[Any]:
    """Return the request's items as Python values (the service itself never needs this).

    Raise :class:`InvalidMessage` (``limits``) for an item Python cannot hold as a value
    (a number beyond a double's range such as ``1e400``, which the contract passes on).
    """
    values = []
    for index, item in enumerate(request.items):
        try:
            values.append(orjson.loads(bytes(item)))
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage("limits", f"items[{index}]: {exc}") from None
    return values


def encode_batch_request(  # noqa: PLR0913 - one keyword per field of the message
    *,
    batch_id: str,
    items: Sequence[bytes | msgspec.Raw],
    start: int,
    total: int,
    chunk: int,
    chunks: int,
    target: str | None = None,
    items_per_request: int | None = None,
    metadata: dict[str, str] | None = None,
    submitted_at: float | None = None,
    priority: int | None = None,
    deadline: float | None = None,
    attempt: int | None = None,
    indexes: list[int] | None = None,
) -> bytes:
    """Encode one batch request chunk; ``items`` are each one value's JSON text.

    Raise ``ValueError`` for positions no reader would accept (see the contract's rules);
    the caller vouches for the rest (a valid ``batch_id``, items that are JSON).
    """
    problem = position_problem(chunk, chunks, start, len(items), total)
    if problem is not None:
        raise ValueError(problem)
    request = BatchRequest(
        schema=BATCH_REQUEST_V1,
        batch_id=batch_id,
        chunk=chunk,
        chunks=chunks,
        start=start,
        total=total,
        items=[item if isinstance(item, msgspec.Raw) else msgspec.Raw(item) for item in items],
        target=target,
        items_per_request=items_per_request,
        priority=priority,
        metadata=metadata,
        submitted_at=submitted_at,
        deadline=deadline,
        attempt=attempt,
        indexes=indexes,
    )
    return _encoder.encode(request)
