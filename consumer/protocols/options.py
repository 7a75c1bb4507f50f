"""The protocols' names and each endpoint's codec options (no I/O).

:class:`CodecOptions` says how one endpoint's codec shapes items and reads predictions;
:func:`codec_options` builds it from the ``KEY=VALUE`` text of the configuration, and
refuses an option that does not apply to the endpoint's protocol. The package docstring
(:mod:`consumer.protocols`) and docs/contract.md say what each option does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, get_args

if TYPE_CHECKING:
    from collections.abc import Mapping

ProtocolName: TypeAlias = Literal["raw", "v1", "v2", "openai"]
PROTOCOLS: Final[tuple[ProtocolName, ...]] = get_args(ProtocolName)
_SHAPING: Final[tuple[ProtocolName, ...]] = ("raw", "v1", "v2")
"""The protocols whose codecs shape items (``openai`` sends each item's body as written)."""

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

V2Inputs: TypeAlias = Literal["tensor", "columns"]
V1Key: TypeAlias = Literal["instances", "inputs"]


@dataclass(frozen=True, slots=True)
class CodecOptions:
    """How one endpoint's codec shapes items and reads predictions.

    ``None`` means the protocol's default: ``rows`` and ``unwrap`` are on for ``v2`` and
    off for ``raw`` and ``v1``; ``datatype`` is inferred. See the package docstring and
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
    paths: tuple[str, ...] = ()
    """``openai``: further URL paths an item's ``url`` may choose, on the endpoint's host."""

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
        _check_paths(self.paths)

    def rows_for(self, protocol: ProtocolName) -> bool:
        """Whether object items become rows under ``protocol``."""
        return self.rows if self.rows is not None else protocol == "v2"

    def unwrap_for(self, protocol: ProtocolName) -> bool:
        """Whether one-element predictions read as their element under ``protocol``."""
        return self.unwrap if self.unwrap is not None else protocol == "v2"


def _check_paths(paths: tuple[str, ...]) -> None:
    for path in paths:
        if not path.startswith("/") or "?" in path or "#" in path or "//" in path:
            raise ValueError(f"paths: {path!r} is not a URL path such as /v1/embeddings")


DEFAULT_OPTIONS: Final = CodecOptions()

OPTION_PROTOCOLS: Final[dict[str, tuple[ProtocolName, ...]]] = {
    "rows": _SHAPING,
    "columns": _SHAPING,
    "unwrap": _SHAPING,
    "inputs": ("v2",),
    "datatype": ("v2",),
    "content_type": ("v2",),
    "input_name": ("v2",),
    "output": ("v2",),
    "v1_key": ("v1",),
    "paths": ("openai",),
}
"""Which protocols each option applies to (the text form's keys are the field names)."""
OPTION_NAMES: Final = tuple(OPTION_PROTOCOLS)
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def _flag(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{key}={text!r}: use true or false")


def _not_for(key: str, applies: tuple[ProtocolName, ...], protocol: ProtocolName) -> ValueError:
    return ValueError(
        f"codec option {key!r} applies to the {' and '.join(applies)} protocol, not {protocol}",
    )


def codec_options(protocol: ProtocolName, values: Mapping[str, str]) -> CodecOptions:
    """Build the options of an endpoint speaking ``protocol`` from ``KEY=VALUE`` text.

    ``values`` maps option names to their text: booleans as ``true``/``false``,
    ``columns`` as names separated by commas, the rest as written (``datatype`` in any
    case). An unknown option, or one that does not apply to ``protocol`` (``datatype``
    on a ``v1`` endpoint, say), raises :class:`ValueError` naming it.
    """
    fields: dict[str, Any] = {}
    for key, text in values.items():
        applies = OPTION_PROTOCOLS.get(key)
        if applies is None:
            raise ValueError(f"unknown codec option {key!r} (options: {', '.join(OPTION_NAMES)})")
        if protocol not in applies:
            raise _not_for(key, applies, protocol)
        value: object = text.strip()
        if key in {"rows", "unwrap"}:
            value = _flag(key, text)
        elif key in {"columns", "paths"}:
            value = tuple(name.strip() for name in text.split(","))
        elif key == "datatype":
            value = text.strip().upper()
        fields[key] = value
    return CodecOptions(**fields)


def check_applies(protocol: ProtocolName, options: CodecOptions) -> None:
    """Refuse options ``protocol`` does not read, set away from their defaults.

    A ``v2`` datatype on a ``v1`` endpoint, say, is a :class:`ValueError` naming the option.
    """
    for key, applies in OPTION_PROTOCOLS.items():
        if protocol not in applies and getattr(options, key) != getattr(DEFAULT_OPTIONS, key):
            raise _not_for(key, applies, protocol)
