"""The ``raw`` protocol: the item itself, or a JSON array of items; predictions likewise.

One item: the body is the item and the response body is its prediction. Several items:
the body is a JSON array of the items and the response a JSON array of predictions, in
order (a plain ``/predict`` API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from consumer.protocols.codec import (
    JSON_CONTENT_TYPE,
    BadResponse,
    describe,
    raw_list,
    raw_value,
    require_items,
    wrong_count,
)
from consumer.protocols.options import DEFAULT_OPTIONS, CodecOptions
from consumer.protocols.shaping import maybe_unwrap, text_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from consumer.protocols.codec import JSONText


class RawCodec:
    """``raw``: the item itself, or a JSON array of items; predictions likewise."""

    name: Final = "raw"
    content_type: Final = JSON_CONTENT_TYPE

    def __init__(self, options: CodecOptions = DEFAULT_OPTIONS) -> None:
        """Shape items and predictions as ``options`` say (default: as they are)."""
        self.options = options
        self._rows = options.rows_for("raw")
        self._unwrap = options.unwrap_for("raw")

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return the single item unchanged, or ``[item,item,...]`` for several."""
        require_items(items)
        texts: Sequence[JSONText] = items
        if self._rows:
            texts = text_rows(items, self.options.columns)
        if len(texts) == 1:
            return bytes(texts[0])
        return b"[" + b",".join(texts) + b"]"

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the body as the one prediction, or the elements of its JSON array."""
        if count == 1:
            try:
                return maybe_unwrap([bytes(raw_value.decode(body))], self._unwrap)
            except msgspec.MsgspecError as exc:
                raise BadResponse(describe(exc)) from exc
        try:
            predictions = raw_list.decode(body)
        except msgspec.ValidationError as exc:
            raise BadResponse(f"expected a JSON array of {count} predictions: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise BadResponse(describe(exc)) from exc
        if len(predictions) != count:
            raise wrong_count(count, len(predictions))
        return maybe_unwrap(list(map(bytes, predictions)), self._unwrap)
