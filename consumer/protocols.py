"""Encode a work unit for the inference API and decode its answer (no I/O).

Items and predictions stay opaque unless an endpoint's :class:`CodecOptions` ask for a
change of shape: each is the exact JSON text of one value, carried as ``bytes`` (or a
``msgspec.Raw`` view), so by default the consumer never decodes and re-encodes what a
producer submitted. A codec only shapes the request body; the URL it is posted to is the
endpoint configured on the consumer.

Three protocols:

``raw``
    One item: the body is the item itself and the response body is its prediction.
    Several items: the body is a JSON array of the items and the response a JSON array of
    predictions, in order (a plain ``/predict`` API).
``v1``
    ``{"instances": [items...]}`` (or ``{"inputs": [...]}``, option ``v1_key``) answered by
    ``{"predictions": [...]}`` (or ``{"outputs": [...]}``): KServe v1, TensorFlow
    Serving's row format, MLflow.
``v2``
    The Open Inference Protocol, the way MLServer, KServe and Triton read it: the items
    become one tensor ``input-0`` of shape ``[n, ...]``. Object items are first turned
    into rows (their values in column order), so ``n`` iris objects are one ``[n, 4]``
    tensor; arrays of the same shape are ``[n, k]`` (``[n, k, m]``...); scalars ``[n]``.
    The datatype is inferred (``BOOL``, ``INT64``, ``FP64`` or ``BYTES`` for strings)
    unless configured. Items that make no such tensor (objects with nested values,
    arrays of different lengths, numbers mixed with strings) travel as a ``BYTES``
    tensor ``[n]`` of their JSON text. With ``inputs=columns`` object items become one
    ``[n]`` tensor per column instead, named after it (MLServer's and KServe's ``pd``
    codec, with ``content_type=pd``). The answer's first output (or the one named by
    ``output``) is split along its first dimension into ``n`` predictions, and a
    prediction holding a single value (a ``[n, 1]`` output) reads as that value.

Per-endpoint options (:class:`CodecOptions`, parsed from ``KEY=VALUE`` text by
:func:`codec_options`): ``rows``, ``columns`` and ``unwrap`` for every protocol;
``inputs``, ``datatype``, ``content_type``, ``input_name`` and ``output`` for ``v2``;
``v1_key`` for ``v1``. docs/contract.md has the mapping with worked examples.

Items the options cannot shape (an object missing a stated column, a string where the
configured datatype wants numbers) raise :class:`BadItem` from ``encode``: no request is
made, and the caller gives the unit's items an error saying which item and why. A
response that cannot be turned into exactly one prediction per item raises
:class:`BadResponse`; the caller decides what that means for the items (the model
answered, so retrying the same request is unlikely to help).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias, get_args

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_OPTIONS",
    "OPTION_NAMES",
    "PROTOCOLS",
    "V2_DATATYPES",
    "BadItem",
    "BadResponse",
    "Codec",
    "CodecOptions",
    "JSONText",
    "ProtocolName",
    "RawCodec",
    "V1Codec",
    "V2Codec",
    "WrongCount",
    "codec_options",
    "get_codec",
]

ProtocolName: TypeAlias = Literal["raw", "v1", "v2"]
PROTOCOLS: Final[tuple[ProtocolName, ...]] = get_args(ProtocolName)

JSONText: TypeAlias = bytes | msgspec.Raw
"""The exact JSON text of one value."""

JSON_CONTENT_TYPE: Final = "application/json"

V2_DATATYPES: Final = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
_FLOAT_TYPES: Final = frozenset({"FP16", "FP32", "FP64"})
_INT_TYPES: Final = frozenset(t for t in V2_DATATYPES if "INT" in t)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

V2Inputs: TypeAlias = Literal["tensor", "columns"]
V1Key: TypeAlias = Literal["instances", "inputs"]


class BadResponse(Exception):  # noqa: N818 - names what went wrong, as the brief's API does
    """The inference API answered, but not with one prediction per item.

    Raised for bodies that are not JSON, lack the protocol's predictions field, carry
    the wrong number of predictions, or (``v2``) a tensor whose shape does not fit its
    data. The message says which.
    """


class WrongCount(BadResponse):
    """A well-formed answer with a different number of predictions than items (permanent)."""


class BadItem(ValueError):  # noqa: N818 - the error kind results carry is ``bad_item``
    """The items cannot be shaped as the endpoint's codec options ask (permanent).

    Raised by ``encode`` before any request is made: an object missing a stated column,
    objects whose keys differ when rows were asked for, a value the configured ``v2``
    datatype cannot hold. The message names the item by its position in the request.
    """


@dataclass(frozen=True, slots=True)
class CodecOptions:
    """How one endpoint's codec shapes items and reads predictions.

    ``None`` means the protocol's default: ``rows`` and ``unwrap`` are on for ``v2`` and
    off for ``raw`` and ``v1``; ``datatype`` is inferred. See the module docstring and
    docs/contract.md for what each option does.
    """

    rows: bool | None = None
    """Turn object items into rows: arrays of their values in ``columns`` order."""
    columns: tuple[str, ...] | None = None
    """The column order (default: the key order of each request's first object item)."""
    unwrap: bool | None = None
    """A prediction that is a one-element array reads as that element."""
    inputs: V2Inputs = "tensor"
    """``v2``: one tensor for the items, or one ``[n]`` tensor per column."""
    datatype: str | None = None
    """``v2``: the input tensors' datatype (default: inferred from the values)."""
    content_type: str | None = None
    """``v2``: the request's ``parameters.content_type`` (MLServer's and KServe's codecs)."""
    input_name: str = "input-0"
    """``v2``: the name of the single input tensor."""
    output: str | None = None
    """``v2``: the output tensor to read (default: the first)."""
    v1_key: V1Key = "instances"
    """``v1``: the request's key for the list of items."""

    def __post_init__(self) -> None:
        """Reject values no server could use; :class:`ValueError` names the option."""
        if self.columns is not None:
            if not self.columns or not all(self.columns):
                raise ValueError("columns: give at least one column name, none empty")
            if len(set(self.columns)) != len(self.columns):
                raise ValueError("columns: a column is named twice")
        if self.inputs not in get_args(V2Inputs):
            raise ValueError(f"inputs {self.inputs!r}: use tensor or columns")
        if self.datatype is not None and self.datatype not in V2_DATATYPES:
            raise ValueError(
                f"datatype {self.datatype!r}: use one of {', '.join(V2_DATATYPES)}",
            )
        if not self.input_name:
            raise ValueError("input_name: must not be empty")
        if self.content_type == "" or self.output == "":
            raise ValueError("content_type and output must not be empty")
        if self.v1_key not in get_args(V1Key):
            raise ValueError(f"v1_key {self.v1_key!r}: use instances or inputs")

    def rows_for(self, protocol: ProtocolName) -> bool:
        """Whether object items become rows under ``protocol``."""
        return self.rows if self.rows is not None else protocol == "v2"

    def unwrap_for(self, protocol: ProtocolName) -> bool:
        """Whether one-element predictions read as their element under ``protocol``."""
        return self.unwrap if self.unwrap is not None else protocol == "v2"


DEFAULT_OPTIONS: Final = CodecOptions()

# Which protocols each option applies to (the text form's keys are the field names).
_OPTION_PROTOCOLS: Final[dict[str, tuple[ProtocolName, ...]]] = {
    "rows": PROTOCOLS,
    "columns": PROTOCOLS,
    "unwrap": PROTOCOLS,
    "inputs": ("v2",),
    "datatype": ("v2",),
    "content_type": ("v2",),
    "input_name": ("v2",),
    "output": ("v2",),
    "v1_key": ("v1",),
}
OPTION_NAMES: Final = tuple(_OPTION_PROTOCOLS)
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def _flag(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{key}={text!r}: use true or false")


def codec_options(protocol: ProtocolName, values: Mapping[str, str]) -> CodecOptions:
    """Build the options of an endpoint speaking ``protocol`` from ``KEY=VALUE`` text.

    ``values`` maps option names to their text: booleans as ``true``/``false``,
    ``columns`` as names separated by commas, the rest as written (``datatype`` in any
    case). An unknown option, or one that does not apply to ``protocol`` (``datatype``
    on a ``v1`` endpoint, say), raises :class:`ValueError` naming it.
    """
    fields: dict[str, Any] = {}
    for key, text in values.items():
        applies = _OPTION_PROTOCOLS.get(key)
        if applies is None:
            raise ValueError(f"unknown codec option {key!r} (options: {', '.join(OPTION_NAMES)})")
        if protocol not in applies:
            raise ValueError(
                f"codec option {key!r} applies to the {' and '.join(applies)} protocol, "
                f"not {protocol}",
            )
        value: object = text.strip()
        if key in {"rows", "unwrap"}:
            value = _flag(key, text)
        elif key == "columns":
            value = tuple(name.strip() for name in text.split(","))
        elif key == "datatype":
            value = text.strip().upper()
        fields[key] = value
    return CodecOptions(**fields)


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
        """Return the request body for ``items`` (at least one).

        Raises :class:`BadItem` if the items cannot be shaped as the options ask.
        """
        ...

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the JSON text of each of the ``count`` predictions in ``body``, in order.

        Raises :class:`BadResponse` if ``body`` does not hold exactly ``count`` of them.
        """
        ...


def _require_items(items: Sequence[JSONText]) -> None:
    if not items:
        raise ValueError("a request needs at least one item")


def _wrong_count(count: int, got: int) -> BadResponse:
    return WrongCount(f"expected {count} predictions, got {got}")


def _describe(exc: msgspec.MsgspecError) -> str:
    if isinstance(exc, msgspec.ValidationError):
        return f"unexpected response shape: {exc}"
    return f"response is not valid JSON: {exc}"


_raw_value: Final = msgspec.json.Decoder(msgspec.Raw)
_raw_list: Final = msgspec.json.Decoder(list[msgspec.Raw])
_raw_object: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_any_value: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


# --- rows: object items as arrays of their values ----------------------------------------


def _is_object_text(item: JSONText) -> bool:
    return bytes(item).lstrip()[:1] == b"{"


def _keys_problem(position: int, keys: Sequence[str], order: Sequence[str]) -> str:
    return (
        f"item {position} of the request has the keys {list(keys)}, the first object item "
        f"{list(order)}: set the endpoint's columns option to pick the columns"
    )


def _pick(
    fields: Mapping[str, Any],
    order: Sequence[str],
    position: int,
    *,
    stated: bool,
) -> list[Any]:
    """Return ``fields``' values in ``order``, or raise :class:`BadItem` saying what is off.

    With ``stated`` columns other keys are left out; without, the keys must be those of
    the first object (``order``), in any order.
    """
    if not stated and (len(fields) != len(order) or any(k not in fields for k in order)):
        raise BadItem(_keys_problem(position, list(fields), order))
    try:
        return [fields[name] for name in order]
    except KeyError as missing:
        raise BadItem(
            f"item {position} of the request has no {missing.args[0]!r} "
            f"(columns: {', '.join(order)})",
        ) from None


def _text_rows(items: Sequence[JSONText], columns: tuple[str, ...] | None) -> list[bytes]:
    """Return the items with each object turned into the JSON array of its values.

    Values keep their exact text; items that are not objects are left as they are.
    """
    order: Sequence[str] | None = columns
    out: list[bytes] = []
    for position, item in enumerate(items):
        text = bytes(item)
        if not _is_object_text(text):
            out.append(text)
            continue
        fields = _raw_object.decode(text)
        if order is None:
            order = list(fields)
        values = _pick(fields, order, position, stated=columns is not None)
        out.append(b"[" + b",".join(bytes(v) for v in values) + b"]")
    return out


def _unwrap(text: bytes) -> bytes:
    """Return the element of a one-element JSON array (repeatedly); other values as they are."""
    while text.lstrip()[:1] == b"[":
        try:
            elements = _raw_list.decode(text)
        except msgspec.MsgspecError:
            return text
        if len(elements) != 1:
            return text
        text = bytes(elements[0])
    return text


def _maybe_unwrap(predictions: list[bytes], unwrap: bool) -> list[bytes]:  # noqa: FBT001
    return [_unwrap(p) for p in predictions] if unwrap else predictions


# --- raw ----------------------------------------------------------------------------------


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
        _require_items(items)
        texts: Sequence[JSONText] = items
        if self._rows:
            texts = _text_rows(items, self.options.columns)
        if len(texts) == 1:
            return bytes(texts[0])
        return b"[" + b",".join(texts) + b"]"

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the body as the one prediction, or the elements of its JSON array."""
        if count == 1:
            try:
                return _maybe_unwrap([bytes(_raw_value.decode(body))], self._unwrap)
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
        return _maybe_unwrap([bytes(p) for p in predictions], self._unwrap)


# --- v1 -----------------------------------------------------------------------------------


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
        _require_items(items)
        texts: Sequence[JSONText] = items
        if self._rows:
            texts = _text_rows(items, self.options.columns)
        return self._head + b",".join(texts) + b"]}"

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the elements of the body's ``predictions`` (or ``outputs``) array."""
        try:
            answer = _v1_response.decode(body)
        except msgspec.MsgspecError as exc:
            raise BadResponse(_describe(exc)) from exc
        predictions = answer.predictions if answer.predictions is not None else answer.outputs
        if predictions is None:
            raise BadResponse('unexpected response shape: no "predictions" (or "outputs") array')
        if len(predictions) != count:
            raise _wrong_count(count, len(predictions))
        return _maybe_unwrap([bytes(p) for p in predictions], self._unwrap)


# --- v2 -----------------------------------------------------------------------------------


class _V2Output(msgspec.Struct):
    name: str
    shape: list[int]
    data: list[msgspec.Raw]
    datatype: str = ""


class _V2Response(msgspec.Struct):
    outputs: list[_V2Output]


_v2_response: Final = msgspec.json.Decoder(_V2Response)


def _shape_of(value: object) -> tuple[int, ...] | None:
    """Return the shape of a rectangular array of scalars (``()`` for a scalar), or None.

    None for objects, for arrays of unequal parts, and for empty arrays (a tensor with a
    zero dimension carries nothing a model could use).
    """
    if type(value) is dict:
        return None
    if type(value) is not list:
        return ()
    if not value:
        return None
    inner = _shape_of(value[0])
    if inner is None:
        return None
    for element in value[1:]:
        if _shape_of(element) != inner:
            return None
    return (len(value), *inner)


def _flatten(value: object, out: list[Any]) -> None:
    if type(value) is list:
        for element in value:
            _flatten(element, out)
    else:
        out.append(value)


def _infer_datatype(flat: Sequence[object]) -> str | None:
    """Return the datatype that holds every value, or None if they are of mixed kinds."""
    kinds = {type(v) for v in flat}
    if kinds == {bool}:
        return "BOOL"
    if kinds == {str}:
        return "BYTES"
    if kinds == {int}:
        fits = all(_INT64_MIN <= v <= _INT64_MAX for v in flat)  # type: ignore[operator]
        return "INT64" if fits else "FP64"
    if kinds and kinds <= {int, float}:
        return "FP64"
    return None


def _check_datatype(datatype: str, flat: Sequence[object], where: str) -> list[object]:
    """Return ``flat`` as a tensor of ``datatype`` holds it, or raise :class:`BadItem`."""
    if datatype == "BYTES":
        return [v if type(v) is str else _encoder.encode(v).decode() for v in flat]
    if datatype == "BOOL":
        wanted: tuple[type, ...] = (bool,)
    elif datatype in _INT_TYPES:
        wanted = (int,)
    else:
        wanted = (int, float)
    for value in flat:
        if type(value) not in wanted:
            raise BadItem(f"{where}: {_encoder.encode(value).decode()} is not a {datatype} value")
    return list(flat)


def _bytes_tensor(name: str, items: Sequence[JSONText]) -> dict[str, object]:
    """One ``BYTES`` tensor ``[n]`` whose elements are the items' exact JSON text."""
    return {
        "name": name,
        "shape": [len(items)],
        "datatype": "BYTES",
        "parameters": {"content_type": "str"},
        "data": [bytes(item).decode() for item in items],
    }


class V2Codec:
    """``v2``: Open Inference Protocol tensors in, the chosen output tensor split per item."""

    name: Final = "v2"
    content_type: Final = JSON_CONTENT_TYPE

    def __init__(self, options: CodecOptions = DEFAULT_OPTIONS) -> None:
        """Shape items and read predictions as ``options`` say (see the module docstring)."""
        self.options = options
        self._rows = options.rows_for("v2")
        self._unwrap = options.unwrap_for("v2")

    @property
    def output_name(self) -> str | None:
        """The output read (None: the first)."""
        return self.options.output

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return ``{"inputs": [...]}`` with the tensors the items' shape calls for."""
        _require_items(items)
        options = self.options
        try:
            values: list[object] | None = _any_value.decode(b"[" + b",".join(items) + b"]")
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
        return _encoder.encode(body)

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
                rows.append(_pick(value, order, position, stated=options.columns is not None))
            except BadItem:
                if options.rows or options.columns is not None:
                    raise
                return None  # no rows were asked for explicitly: send the objects as JSON
        return rows

    def _tensor(self, items: Sequence[JSONText], values: list[object] | None) -> dict[str, object]:
        """Return the single input tensor for the items (see the module docstring)."""
        options = self.options
        name = options.input_name
        rows = values
        if rows is not None and self._rows:
            rows = self._as_rows(rows)
        shape = None if rows is None else _shape_of(rows)  # objects have no shape
        if rows is None or shape is None:
            return self._fallback(name, items, "the items are not a tensor of one shape")
        flat: list[object] = []
        _flatten(rows, flat)
        datatype = options.datatype or _infer_datatype(flat)
        if datatype is None:
            return self._fallback(name, items, "the items mix strings, numbers and booleans")
        if options.datatype is not None:
            flat = _check_datatype(datatype, flat, "the request's items")
        tensor: dict[str, object] = {"name": name, "shape": list(shape), "datatype": datatype}
        if datatype == "BYTES" and len(shape) == 1:
            tensor["parameters"] = {"content_type": "str"}  # MLServer: a list of strings
        tensor["data"] = flat
        return tensor

    def _fallback(self, name: str, items: Sequence[JSONText], why: str) -> dict[str, object]:
        datatype = self.options.datatype
        if datatype is not None and datatype != "BYTES":
            raise BadItem(f"{why}, so they cannot be sent as a {datatype} tensor")
        return _bytes_tensor(name, items)

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
            records.append(_pick(value, order, position, stated=options.columns is not None))
        assert order is not None  # noqa: S101 - values is not empty
        tensors: list[dict[str, object]] = []
        for column, name in enumerate(order):
            data = [record[column] for record in records]
            where = f"column {name!r}"
            for position, datum in enumerate(data):
                if type(datum) in {list, dict}:
                    raise BadItem(f"{where} of item {position} is not a scalar")
            datatype = options.datatype or _infer_datatype(data)
            if datatype is None:
                raise BadItem(f"{where} mixes strings, numbers and booleans")
            if options.datatype is not None:
                data = _check_datatype(datatype, data, where)
            tensors.append(
                {"name": name, "shape": [len(data)], "datatype": datatype, "data": data},
            )
        return tensors

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
                pending.extend(reversed(_raw_list.decode(value)))
            except msgspec.MsgspecError as exc:
                raise BadResponse(_describe(exc)) from exc
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


def get_codec(name: ProtocolName, options: CodecOptions = DEFAULT_OPTIONS) -> Codec:
    """Return the codec for protocol ``name``, shaping items and answers as ``options`` say.

    Options that do not apply to ``name`` (a ``v2`` datatype for ``v1``, say) are a
    :class:`ValueError`, as :func:`codec_options` reports them.
    """
    if name not in PROTOCOLS:  # names come from configuration, unchecked until here
        choices = ", ".join(PROTOCOLS)
        raise ValueError(f"unknown inference protocol {name!r} (choose from {choices})")
    for key, applies in _OPTION_PROTOCOLS.items():
        if name not in applies and getattr(options, key) != getattr(DEFAULT_OPTIONS, key):
            raise ValueError(
                f"codec option {key!r} applies to the {' and '.join(applies)} protocol, not {name}",
            )
    if name == "v2":
        return V2Codec(options)
    return RawCodec(options) if name == "raw" else V1Codec(options)
