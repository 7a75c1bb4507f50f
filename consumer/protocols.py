"""Encode a work unit for the inference API and decode its answer (no I/O).

Items and predictions stay opaque: each is the exact JSON text of one value, carried as
``bytes`` (or a ``msgspec.Raw`` view), so the consumer never decodes and re-encodes what
a producer submitted. A codec only shapes the request body; the URL it is posted to is
the endpoint configured on the consumer.

Three protocols:

``raw``
    One item: the body is the item itself and the response body is its prediction.
    Several items: the body is a JSON array of the items and the response a JSON array of
    predictions, in order (a plain ``/predict`` API).
``v1``
    ``{"instances": [items...]}`` answered by ``{"predictions": [...]}`` (KServe v1,
    TensorFlow Serving, MLflow).
``v2``
    The Open Inference Protocol. When every item is an array of ``k`` numbers the request
    holds one ``FP64`` tensor ``input-0`` of shape ``[n, k]``; when every item is an object
    whose values are all numbers, with the same keys, one ``FP64`` tensor of shape ``[n]``
    per key, named after it; otherwise one ``BYTES`` tensor ``input-0`` of shape ``[n]``
    whose elements are the items' JSON text. The answer's first output (or the one named
    by ``output_name``) is split along its first dimension into ``n`` predictions: a scalar
    per item for shape ``[n]``, nested JSON arrays for shape ``[n, ...]``.

A response that cannot be turned into exactly one prediction per item raises
:class:`BadResponse`; the caller decides what that means for the items (the model
answered, so retrying the same request is unlikely to help).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias, get_args

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "PROTOCOLS",
    "BadResponse",
    "Codec",
    "JSONText",
    "ProtocolName",
    "RawCodec",
    "V1Codec",
    "V2Codec",
    "WrongCount",
    "get_codec",
]

ProtocolName: TypeAlias = Literal["raw", "v1", "v2"]
PROTOCOLS: Final[tuple[ProtocolName, ...]] = get_args(ProtocolName)

JSONText: TypeAlias = bytes | msgspec.Raw
"""The exact JSON text of one value."""

JSON_CONTENT_TYPE: Final = "application/json"


class BadResponse(Exception):  # noqa: N818 - names what went wrong, as the brief's API does
    """The inference API answered, but not with one prediction per item.

    Raised for bodies that are not JSON, lack the protocol's predictions field, carry
    the wrong number of predictions, or (``v2``) a tensor whose shape does not fit its
    data. The message says which.
    """


class Codec(Protocol):
    """How one protocol shapes a request body and reads predictions out of the answer."""

    @property
    def name(self) -> ProtocolName:
        """The protocol's name, as configured."""
        ...

    @property
    def content_type(self) -> str:
        """The request's ``Content-Type``."""
        ...

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return the request body for ``items`` (at least one)."""
        ...

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the JSON text of each of the ``count`` predictions in ``body``, in order.

        Raises :class:`BadResponse` if ``body`` does not hold exactly ``count`` of them.
        """
        ...


def _require_items(items: Sequence[JSONText]) -> None:
    if not items:
        raise ValueError("a request needs at least one item")


class WrongCount(BadResponse):
    """A well-formed answer with a different number of predictions than items (permanent)."""


def _wrong_count(count: int, got: int) -> BadResponse:
    return WrongCount(f"expected {count} predictions, got {got}")


def _describe(exc: msgspec.MsgspecError) -> str:
    if isinstance(exc, msgspec.ValidationError):
        return f"unexpected response shape: {exc}"
    return f"response is not valid JSON: {exc}"


_raw_value: Final = msgspec.json.Decoder(msgspec.Raw)
_raw_list: Final = msgspec.json.Decoder(list[msgspec.Raw])


class RawCodec:
    """``raw``: the item itself, or a JSON array of items; predictions likewise."""

    name: Final = "raw"
    content_type: Final = JSON_CONTENT_TYPE

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return the single item unchanged, or ``[item,item,...]`` for several."""
        _require_items(items)
        if len(items) == 1:
            return bytes(items[0])
        return b"[" + b",".join(items) + b"]"

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the body as the one prediction, or the elements of its JSON array."""
        if count == 1:
            try:
                return [bytes(_raw_value.decode(body))]
            except msgspec.MsgspecError as exc:
                raise BadResponse(_describe(exc)) from exc
        try:
            predictions = _raw_list.decode(body)
        except msgspec.ValidationError as exc:
            raise BadResponse(f"expected a JSON array of {count} predictions: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise BadResponse(_describe(exc)) from exc
        if len(predictions) != count:
            raise _wrong_count(count, len(predictions))
        return [bytes(p) for p in predictions]


class _V1Response(msgspec.Struct):
    predictions: list[msgspec.Raw]


_v1_response: Final = msgspec.json.Decoder(_V1Response)


class V1Codec:
    """``v1``: ``{"instances": [...]}`` answered by ``{"predictions": [...]}``."""

    name: Final = "v1"
    content_type: Final = JSON_CONTENT_TYPE

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return ``{"instances":[item,...]}`` by concatenation (items are not re-read)."""
        _require_items(items)
        return b'{"instances":[' + b",".join(items) + b"]}"

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the elements of the body's ``predictions`` array."""
        try:
            predictions = _v1_response.decode(body).predictions
        except msgspec.MsgspecError as exc:
            raise BadResponse(_describe(exc)) from exc
        if len(predictions) != count:
            raise _wrong_count(count, len(predictions))
        return [bytes(p) for p in predictions]


class _V2Output(msgspec.Struct):
    name: str
    shape: list[int]
    data: list[msgspec.Raw]
    datatype: str = ""


class _V2Response(msgspec.Struct):
    outputs: list[_V2Output]


_v2_response: Final = msgspec.json.Decoder(_V2Response)
_any_value: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()
_NUMBER_TYPES: Final = (int, float)  # compared with ``type(x) in``, so bool is excluded


def _number_rows(values: list[object]) -> list[list[float]] | None:
    """Return ``values`` if each is an array of numbers, all of one non-zero length."""
    rows: list[list[float]] = []
    width = -1
    for value in values:
        if type(value) is not list or not value:
            return None
        if width < 0:
            width = len(value)
        if len(value) != width or not all(type(x) in _NUMBER_TYPES for x in value):
            return None
        rows.append(value)
    return rows


def _number_records(values: list[object]) -> list[dict[str, float]] | None:
    """Return ``values`` if each is a non-empty object of numbers, all with the same keys."""
    records: list[dict[str, float]] = []
    keys: list[str] = []
    for value in values:
        if type(value) is not dict or not value:
            return None
        if not keys:
            keys = list(value)
        if len(value) != len(keys) or not all(type(value.get(k)) in _NUMBER_TYPES for k in keys):
            return None
        records.append(value)
    return records


def _nest(flat: list[msgspec.Raw], dims: list[int]) -> bytes:
    """Return the JSON array of ``flat`` (row-major) arranged to the shape ``dims``."""
    if len(dims) == 1:
        return b"[" + b",".join(flat) + b"]"
    step = len(flat) // dims[0] if dims[0] else 0
    rows = [_nest(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]
    return b"[" + b",".join(rows) + b"]"


class V2Codec:
    """``v2``: Open Inference Protocol tensors in, the chosen output tensor split per item."""

    name: Final = "v2"
    content_type: Final = JSON_CONTENT_TYPE

    def __init__(self, output_name: str | None = None) -> None:
        """Read the output named ``output_name`` (default: the first output)."""
        self.output_name = output_name

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return ``{"inputs": [...]}`` with the tensors the items' shape calls for."""
        _require_items(items)
        n = len(items)
        values: list[object] = _any_value.decode(b"[" + b",".join(items) + b"]")
        inputs: list[dict[str, object]]
        if (rows := _number_rows(values)) is not None:
            flat = [x for row in rows for x in row]
            shape = [n, len(rows[0])]
            inputs = [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": flat}]
        elif (records := _number_records(values)) is not None:
            inputs = [
                {"name": key, "shape": [n], "datatype": "FP64", "data": [r[key] for r in records]}
                for key in records[0]
            ]
        else:
            inputs = [
                {
                    "name": "input-0",
                    "shape": [n],
                    "datatype": "BYTES",
                    "parameters": {"content_type": "str"},
                    "data": [bytes(item).decode() for item in items],
                }
            ]
        return _encoder.encode({"inputs": inputs})

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return one prediction per row of the chosen output's first dimension."""
        try:
            outputs = _v2_response.decode(body).outputs
        except msgspec.MsgspecError as exc:
            raise BadResponse(_describe(exc)) from exc
        output = self._choose(outputs)
        shape = output.shape
        if not shape:
            raise BadResponse(f"output {output.name!r} is a scalar; expected shape [{count}, ...]")
        if any(d < 0 for d in shape):
            raise BadResponse(f"output {output.name!r} has a negative dimension: {shape}")
        if shape[0] != count:
            raise _wrong_count(count, shape[0])
        data = output.data
        per_item = math.prod(shape[1:])
        if len(data) == count * per_item:
            if len(shape) == 1:
                return [bytes(d) for d in data]
            return [_nest(data[i * per_item : (i + 1) * per_item], shape[1:]) for i in range(count)]
        if len(shape) > 1 and len(data) == count:
            # Some servers send ``data`` nested by row rather than flattened.
            return [bytes(d) for d in data]
        raise BadResponse(
            f"output {output.name!r} has shape {shape} ({count * per_item} values) "
            f"but {len(data)} data values"
        )

    def _choose(self, outputs: list[_V2Output]) -> _V2Output:
        if not outputs:
            raise BadResponse("response has no outputs")
        if self.output_name is None:
            return outputs[0]
        for output in outputs:
            if output.name == self.output_name:
                return output
        names = ", ".join(repr(o.name) for o in outputs)
        raise BadResponse(f"response has no output {self.output_name!r} (it has {names})")


def get_codec(name: ProtocolName, *, output_name: str | None = None) -> Codec:
    """Return the codec for protocol ``name``.

    ``output_name`` picks the ``v2`` output tensor to read; it is an error for the other
    protocols, which have a single predictions list.
    """
    if name not in PROTOCOLS:  # names come from configuration, unchecked until here
        choices = ", ".join(PROTOCOLS)
        raise ValueError(f"unknown inference protocol {name!r} (choose from {choices})")
    if name == "v2":
        return V2Codec(output_name)
    if output_name is not None:
        raise ValueError(f"output_name applies to the v2 protocol only, not {name!r}")
    return RawCodec() if name == "raw" else V1Codec()
