"""The ``v1`` protocol: ``{"instances": [...]}`` answered by ``{"predictions": [...]}``.

KServe v1, TensorFlow Serving's row format and MLflow speak it; the request's key may be
``inputs`` instead (option ``v1_key``), and an answer's ``outputs`` is read where it has
no ``predictions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from consumer.protocols.codec import (
    JSON_CONTENT_TYPE,
    BadResponse,
    describe,
    require_items,
    wrong_count,
)
from consumer.protocols.options import DEFAULT_OPTIONS, CodecOptions
from consumer.protocols.shaping import maybe_unwrap, text_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from consumer.protocols.codec import JSONText


class _V1Response(msgspec.Struct):
    predictions: list[msgspec.Raw] | None = None
    outputs: list[msgspec.Raw] | None = None


_v1_response: Final = msgspec.json.Decoder(_V1Response)


class V1Codec:
    """``v1``: ``{"instances": [...]}`` answered by ``{"predictions": [...]}``."""

    name: Final = "v1"
    content_type: Final = JSON_CONTENT_TYPE

    def __init__(self, options: CodecOptions = DEFAULT_OPTIONS) -> None:
        """Shape items and predictions as ``options`` say (default: as they are)."""
        self.options = options
        self._rows = options.rows_for("v1")
        self._unwrap = options.unwrap_for("v1")
        self._head = b'{"' + options.v1_key.encode() + b'":['

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return ``{"instances":[item,...]}`` by concatenation (items are not re-read)."""
        if not items:
            require_items(items)  # raises: a request needs at least one item
        texts: Sequence[JSONText] = items
        if self._rows:
            texts = text_rows(items, self.options.columns)
        return self._head + b",".join(texts) + b"]}"

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the elements of the body's ``predictions`` (or ``outputs``) array."""
        try:
            answer = _v1_response.decode(body)
        except msgspec.MsgspecError as exc:
            raise BadResponse(describe(exc)) from exc
        predictions = answer.predictions if answer.predictions is not None else answer.outputs
        if predictions is None:
            raise BadResponse('unexpected response shape: no "predictions" (or "outputs") array')
        if len(predictions) != count:
            raise wrong_count(count, len(predictions))
        # map(): bytes() of each element without a Python frame per prediction.
        found = [bytes(predictions[0])] if count == 1 else list(map(bytes, predictions))
        return maybe_unwrap(found, unwrap_them=True) if self._unwrap else found
