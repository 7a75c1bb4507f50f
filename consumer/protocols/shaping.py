"""Turn items into rows, columns and tensors, and read predictions back (no I/O).

The pieces the codecs build their bodies from: object items as rows of their values in
column order (:func:`pick`, :func:`text_rows`), one-element predictions as their element
(:func:`unwrap`), and for ``v2`` the shape, datatype and data of a tensor
(:func:`shape_of`, :func:`flatten`, :func:`infer_datatype`, :func:`check_datatype`,
:func:`bytes_tensor`). What cannot be shaped as the options ask raises :class:`BadItem`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from consumer.protocols.codec import BadItem, encoder, raw_list, raw_object
from consumer.protocols.options import V2_DATATYPES

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from consumer.protocols.codec import JSONText

_INT_TYPES: Final = frozenset(t for t in V2_DATATYPES if "INT" in t)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


# --- rows: object items as arrays of their values ----------------------------------------


def _is_object_text(item: JSONText) -> bool:
    return bytes(item).lstrip()[:1] == b"{"


def _keys_problem(position: int, keys: Sequence[str], order: Sequence[str]) -> str:
    return (
        f"item {position} of the request has the keys {list(keys)}, the first object item "
        f"{list(order)}: set the endpoint's columns option to pick the columns"
    )


def pick(
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


def text_rows(items: Sequence[JSONText], columns: tuple[str, ...] | None) -> list[bytes]:
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
        fields = raw_object.decode(text)
        if order is None:
            order = list(fields)
        values = pick(fields, order, position, stated=columns is not None)
        out.append(b"[" + b",".join(bytes(v) for v in values) + b"]")
    return out


def unwrap(text: bytes) -> bytes:
    """Return the element of a one-element JSON array (repeatedly); other values as they are."""
    while text.lstrip()[:1] == b"[":
        try:
            elements = raw_list.decode(text)
        except msgspec.MsgspecError:
            return text
        if len(elements) != 1:
            return text
        text = bytes(elements[0])
    return text


def maybe_unwrap(predictions: list[bytes], unwrap_them: bool) -> list[bytes]:  # noqa: FBT001
    """Return ``predictions``, each unwrapped if ``unwrap_them`` (see :func:`unwrap`)."""
    return [unwrap(p) for p in predictions] if unwrap_them else predictions


# --- tensors: the v2 protocol's shape, datatype and data ---------------------------------


def shape_of(value: object) -> tuple[int, ...] | None:
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
    inner = shape_of(value[0])
    if inner is None:
        return None
    for element in value[1:]:
        if shape_of(element) != inner:
            return None
    return (len(value), *inner)


def flatten(value: object, out: list[Any]) -> None:
    """Append the scalars of nested arrays ``value`` to ``out``, row-major."""
    if type(value) is list:
        for element in value:
            flatten(element, out)
    else:
        out.append(value)


def infer_datatype(flat: Sequence[object]) -> str | None:
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


def check_datatype(datatype: str, flat: Sequence[object], where: str) -> list[object]:
    """Return ``flat`` as a tensor of ``datatype`` holds it, or raise :class:`BadItem`."""
    if datatype == "BYTES":
        return [v if type(v) is str else encoder.encode(v).decode() for v in flat]
    if datatype == "BOOL":
        wanted: tuple[type, ...] = (bool,)
    elif datatype in _INT_TYPES:
        wanted = (int,)
    else:
        wanted = (int, float)
    for value in flat:
        if type(value) not in wanted:
            raise BadItem(f"{where}: {encoder.encode(value).decode()} is not a {datatype} value")
    return list(flat)


def bytes_tensor(name: str, items: Sequence[JSONText]) -> dict[str, object]:
    """One ``BYTES`` tensor ``[n]`` whose elements are the items' exact JSON text."""
    return {
        "name": name,
        "shape": [len(items)],
        "datatype": "BYTES",
        "parameters": {"content_type": "str"},
        "data": [bytes(item).decode() for item in items],
    }
