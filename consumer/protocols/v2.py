"""The ``v2`` protocol: Open Inference Protocol tensors in, one output split per item.

The way MLServer, KServe and Triton read it: the items become one tensor ``input-0`` of
shape ``[n, ...]``, or with ``inputs=columns`` one ``[n]`` tensor per column (the package
docstring, :mod:`consumer.protocols`, says how items are shaped). The answer's first
output (or the one named by ``output``) is split along its first dimension into ``n``
predictions; a server that nests ``data`` by row instead of flattening it is read too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import msgspec

from consumer.protocols.codec import (
    JSON_CONTENT_TYPE,
    BadItem,
    BadResponse,
    any_value,
    describe,
    encoder,
    raw_list,
    require_items,
    wrong_count,
)
from consumer.protocols.options import DEFAULT_OPTIONS, CodecOptions
from consumer.protocols.shaping import (
    bytes_tensor,
    check_datatype,
    flatten,
    infer_datatype,
    pick,
    shape_of,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from consumer.protocols.codec import JSONText


class _V2Output(msgspec.Struct):
    name: str
    shape: list[int]
    data: list[msgspec.Raw]
    datatype: str = ""


class _V2Response(msgspec.Struct):
    outputs: list[_V2Output]


_v2_response: Final = msgspec.json.Decoder(_V2Response)


class V2Codec:
    """``v2``: Open Inference Protocol tensors in, the chosen output tensor split per item."""

    name: Final = "v2"
    content_type: Final = JSON_CONTENT_TYPE

    def __init__(self, options: CodecOptions = DEFAULT_OPTIONS) -> None:
        """Shape items and read predictions as ``options`` say (see the package docstring)."""
        self.options = options
        self._rows = options.rows_for("v2")
        self._unwrap = options.unwrap_for("v2")

    @property
    def output_name(self) -> str | None:
        """The output read (None: the first)."""
        return self.options.output

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return ``{"inputs": [...]}`` with the tensors the items' shape calls for."""
        require_items(items)
        options = self.options
        try:
            values: list[object] | None = any_value.decode(b"[" + b",".join(items) + b"]")
        except msgspec.DecodeError:
            values = None  # a number beyond a double's range: only its text can travel
        if options.inputs == "columns":
            if values is None:
                raise BadItem("an item holds a number beyond a double's range")
            inputs = self._column_tensors(values)
        else:
            inputs = [self._tensor(items, values)]
        body: dict[str, object] = {"inputs": inputs}
        if options.content_type is not None:
            body["parameters"] = {"content_type": options.content_type}
        return encoder.encode(body)

    def _as_rows(self, values: list[object]) -> list[object] | None:
        """Turn object items into rows; None when their keys differ and rows are implicit."""
        options = self.options
        order: Sequence[str] | None = options.columns
        rows: list[object] = []
        for position, value in enumerate(values):
            if type(value) is not dict:
                rows.append(value)
                continue
            if order is None:
                order = list(value)
            try:
                rows.append(pick(value, order, position, stated=options.columns is not None))
            except BadItem:
                if options.rows or options.columns is not None:
                    raise
                return None  # no rows were asked for explicitly: send the objects as JSON
        return rows

    def _tensor(self, items: Sequence[JSONText], values: list[object] | None) -> dict[str, object]:
        """Return the single input tensor for the items (see the package docstring)."""
        options = self.options
        name = options.input_name
        rows = values
        if rows is not None and self._rows:
            rows = self._as_rows(rows)
        shape = None if rows is None else shape_of(rows)  # objects have no shape
        if rows is None or shape is None:
            return self._fallback(name, items, "the items are not a tensor of one shape")
        flat: list[object] = []
        flatten(rows, flat)
        datatype = options.datatype or infer_datatype(flat)
        if datatype is None:
            return self._fallback(name, items, "the items mix strings, numbers and booleans")
        if options.datatype is not None:
            flat = check_datatype(datatype, flat, "the request's items")
        tensor: dict[str, object] = {"name": name, "shape": list(shape), "datatype": datatype}
        if datatype == "BYTES" and len(shape) == 1:
            tensor["parameters"] = {"content_type": "str"}  # MLServer: a list of strings
        tensor["data"] = flat
        return tensor

    def _fallback(self, name: str, items: Sequence[JSONText], why: str) -> dict[str, object]:
        datatype = self.options.datatype
        if datatype is not None and datatype != "BYTES":
            raise BadItem(f"{why}, so they cannot be sent as a {datatype} tensor")
        return bytes_tensor(name, items)

    def _column_tensors(self, values: list[object]) -> list[dict[str, object]]:
        """Return one ``[n]`` tensor per column, named after it (``inputs=columns``)."""
        options = self.options
        order: Sequence[str] | None = options.columns
        records: list[list[Any]] = []
        for position, value in enumerate(values):
            if type(value) is not dict:
                raise BadItem(
                    f"item {position} of the request is not an object, so it has no columns "
                    f"(inputs=columns)",
                )
            if order is None:
                order = list(value)
            records.append(pick(value, order, position, stated=options.columns is not None))
        assert order is not None  # noqa: S101 - values is not empty
        tensors: list[dict[str, object]] = []
        for column, name in enumerate(order):
            data = [record[column] for record in records]
            where = f"column {name!r}"
            for position, datum in enumerate(data):
                if type(datum) in {list, dict}:
                    raise BadItem(f"{where} of item {position} is not a scalar")
            datatype = options.datatype or infer_datatype(data)
            if datatype is None:
                raise BadItem(f"{where} mixes strings, numbers and booleans")
            if options.datatype is not None:
                data = check_datatype(datatype, data, where)
            tensors.append(
                {"name": name, "shape": [len(data)], "datatype": datatype, "data": data},
            )
        return tensors

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return one prediction per row of the chosen output's first dimension."""
        try:
            outputs = _v2_response.decode(body).outputs
        except msgspec.MsgspecError as exc:
            raise BadResponse(describe(exc)) from exc
        output = self._choose(outputs)
        shape = output.shape
        if not shape:
            raise BadResponse(f"output {output.name!r} is a scalar; expected shape [{count}, ...]")
        if any(d < 0 for d in shape):
            raise BadResponse(f"output {output.name!r} has a negative dimension: {shape}")
        if shape[0] != count:
            raise wrong_count(count, shape[0])
        data = output.data
        if len(shape) > 1 and data and _is_array_text(data[0]):
            data = _flattened(data)  # some servers nest ``data`` by row instead
        per_item = math.prod(shape[1:])
        if len(data) != count * per_item:
            raise BadResponse(
                f"output {output.name!r} has shape {shape} ({count * per_item} values) "
                f"but {len(data)} data values"
            )
        if len(shape) == 1 or (per_item == 1 and self._unwrap):
            return [bytes(d) for d in data]
        return [_nest(data[i * per_item : (i + 1) * per_item], shape[1:]) for i in range(count)]

    def _choose(self, outputs: list[_V2Output]) -> _V2Output:
        if not outputs:
            raise BadResponse("response has no outputs")
        wanted = self.options.output
        if wanted is None:
            return outputs[0]
        for output in outputs:
            if output.name == wanted:
                return output
        names = ", ".join(repr(o.name) for o in outputs)
        raise BadResponse(f"response has no output {wanted!r} (it has {names})")


def _is_array_text(value: msgspec.Raw) -> bool:
    return bytes(value).lstrip()[:1] == b"["


def _flattened(data: list[msgspec.Raw]) -> list[msgspec.Raw]:
    """Return nested ``data`` flattened row-major (a value that is no array stays one)."""
    flat: list[msgspec.Raw] = []
    pending = list(reversed(data))
    while pending:
        value = pending.pop()
        if _is_array_text(value):
            try:
                pending.extend(reversed(raw_list.decode(value)))
            except msgspec.MsgspecError as exc:
                raise BadResponse(describe(exc)) from exc
        else:
            flat.append(value)
    return flat


def _nest(flat: list[msgspec.Raw], dims: list[int]) -> bytes:
    """Return the JSON array of ``flat`` (row-major) arranged to the shape ``dims``."""
    if len(dims) == 1:
        return b"[" + b",".join(flat) + b"]"
    step = len(flat) // dims[0] if dims[0] else 0
    rows = [_nest(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]
    return b"[" + b",".join(rows) + b"]"
