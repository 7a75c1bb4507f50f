"""Read a request per protocol and write the identity model's answer (optionally miscounted).

The identity model's prediction for an item is the item itself: ``raw`` echoes the body,
``v1`` answers ``{"predictions": [...]}`` with the instances, ``v2`` sends the input
tensors back as outputs. Items are counted along the first dimension: rows of a
``[n, k]`` tensor, records of one ``[n]`` tensor per key, or the JSON texts of a
``BYTES`` tensor. A body none of this can read raises :class:`BadRequestError`.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.protocols import ProtocolName


class BadRequestError(ValueError):
    """A request the identity model cannot read; answered 400 with this message."""


class Parsed:
    """One request, read: its items and how to echo them (optionally miscounted)."""

    __slots__ = ("body", "envelope", "items", "protocol")

    def __init__(
        self, protocol: ProtocolName, body: bytes, items: list[Any], envelope: object
    ) -> None:
        """Hold what ``protocol``'s parser read: the body, its items, the decoded envelope."""
        self.protocol = protocol
        self.body = body
        self.items = items
        self.envelope = envelope

    def answer(self, *, miscount: bool = False) -> bytes:
        """Return the identity answer, or one with the wrong number of predictions."""
        if self.protocol == "raw":
            if not miscount:
                return self.body
            if isinstance(self.envelope, list):
                return orjson.dumps(_miscount(self.envelope))
            return orjson.dumps([self.envelope, self.envelope])
        if self.protocol == "v1":
            predictions = self.items
            return orjson.dumps(
                {"predictions": _miscount(predictions) if miscount else predictions}
            )
        envelope = cast("dict[str, Any]", self.envelope)
        outputs = [
            {
                "name": t["name"],
                "shape": t["shape"],
                "datatype": t["datatype"],
                "data": t["data"],
            }
            for t in envelope["inputs"]
        ]
        if miscount:
            outputs = [_miscount_tensor(t) for t in outputs]
        answer: dict[str, Any] = {"model_name": "identity", "outputs": outputs}
        if "id" in envelope:
            answer["id"] = envelope["id"]
        return orjson.dumps(answer)


def _miscount(values: list[Any]) -> list[Any]:
    """Return one value fewer, or the single value twice."""
    return values[:-1] if len(values) > 1 else values * 2


def _miscount_tensor(tensor: dict[str, Any]) -> dict[str, Any]:
    n = tensor["shape"][0]
    data = tensor["data"]
    width = len(data) // n if n else 0
    new_n = n - 1 if n > 1 else 2
    new_data = data[: new_n * width] if n > 1 else data * 2
    return {**tensor, "shape": [new_n, *tensor["shape"][1:]], "data": new_data}


def _loads(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from exc


def _parse_raw(body: bytes) -> Parsed:
    value = _loads(body)
    items = value if isinstance(value, list) else [value]
    return Parsed("raw", body, items, value)


def _parse_v1(body: bytes) -> Parsed:
    value = _loads(body)
    if not isinstance(value, dict) or not isinstance(value.get("instances"), list):
        raise BadRequestError('expected an object with an "instances" array')
    return Parsed("v1", body, value["instances"], value)


def _rows(flat: list[Any], dims: list[int]) -> list[Any]:
    if len(dims) == 1:
        return flat
    step = len(flat) // dims[0] if dims[0] else 0
    return [_rows(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]


def _bytes_item(value: object) -> object:
    if isinstance(value, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(value)
    return value


def _tensor_items(tensor: dict[str, Any]) -> list[Any]:
    shape: list[int] = tensor["shape"]
    data: list[Any] = tensor["data"]
    if tensor["datatype"] == "BYTES":
        return [_bytes_item(v) for v in data]
    if len(shape) == 1 or len(data) == shape[0]:
        return data
    if len(data) != math.prod(shape):
        raise BadRequestError(f"shape {shape} does not match {len(data)} data values")
    return _rows(data, shape)


def _parse_v2(body: bytes) -> Parsed:
    value = _loads(body)
    inputs = value.get("inputs") if isinstance(value, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError('expected an object with a non-empty "inputs" array')
    for tensor in inputs:
        if not (
            isinstance(tensor, dict)
            and isinstance(tensor.get("name"), str)
            and isinstance(tensor.get("datatype"), str)
            and isinstance(tensor.get("data"), list)
            and isinstance(tensor.get("shape"), list)
            and tensor["shape"]
            and all(type(d) is int and d >= 0 for d in tensor["shape"])
        ):
            raise BadRequestError("each input needs name, datatype, shape [n, ...] and data")
    if len({t["shape"][0] for t in inputs}) != 1:
        raise BadRequestError("input tensors disagree on the first dimension")
    if len(inputs) == 1:
        items = _tensor_items(inputs[0])
    else:
        columns = [(t["name"], t["data"]) for t in inputs]
        items = [{name: data[i] for name, data in columns} for i in range(inputs[0]["shape"][0])]
    return Parsed("v2", body, items, value)


PARSERS: Final[dict[ProtocolName, Callable[[bytes], Parsed]]] = {
    "raw": _parse_raw,
    "v1": _parse_v1,
    "v2": _parse_v2,
}
