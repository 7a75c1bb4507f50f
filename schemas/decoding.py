"""What every decoder does: its limits, its one error, and the checks msgspec does not make.

A decoder (:mod:`schemas.requests`, :mod:`schemas.results`, :mod:`schemas.jobs`) goes
through the same steps (:func:`record_type` begins them for a topic of several record
types, :func:`check_raw` ends them for a record without raw items):

1. :func:`check_size` before anything is parsed (``too_large``);
2. :func:`parse` runs a msgspec decoder, validating types, ranges and the version in one
   pass and turning every failure into :class:`InvalidMessage` (``field: what was
   wrong``);
3. :func:`check_utf8` and :func:`check_depth` look where msgspec does not, inside raw
   values, with a few C-speed bytes operations;
4. :func:`check_duplicates` rejects a top-level key written twice.

Its cross-field rules come last, in the message's own module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import msgspec

from schemas.errors import BadInputError
from schemas.fields import MAX_ITEMS_PER_CHUNK

if TYPE_CHECKING:
    from collections.abc import Sequence

# Deeper than this, msgspec would hit Python's recursion limit before the depth check.
_MAX_DEPTH_SETTING: Final = 512

ErrorKind = Literal[
    "not_json",
    "encoding",
    "schema",
    "version",
    "too_large",
    "limits",
    "duplicate_key",
    "inconsistent",
]


class InvalidMessage(BadInputError):  # noqa: N818 - the contract's name for a rejected message
    """A message that breaks the contract; ``kind`` is a short code, ``reason`` the detail.

    ``kind`` is one of ``not_json`` (not parseable JSON), ``encoding`` (not UTF-8),
    ``schema`` (a field missing, of the wrong type or out of range), ``version`` (``schema``
    missing or not a version this reader knows), ``too_large`` (over
    ``Limits.max_message_bytes``), ``limits`` (too many items or entries, nested too
    deeply), ``duplicate_key`` (a top-level key twice) or ``inconsistent`` (fields that
    contradict each other). Never retriable: the same bytes fail the same way.
    """

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        """Create the error (``str(exc)`` is ``"kind: reason"``)."""
        super().__init__(f"{kind}: {reason}")
        self.kind: ErrorKind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoder enforces; the defaults suit Kafka's default 1 MiB messages.

    ``max_depth`` bounds how deeply an item nests (a scalar is 0, ``[1]`` or ``{"a": 1}``
    is 1); every other field nests at most one level more, so the whole message at most
    ``max_depth + 2`` levels.
    """

    max_message_bytes: int = 1024 * 1024
    max_items: int = MAX_ITEMS_PER_CHUNK
    max_depth: int = 32
    max_metadata_entries: int = 64

    def __post_init__(self) -> None:
        """Reject limits that cannot work."""
        if self.max_message_bytes < 64 or self.max_items < 1:
            raise ValueError("max_message_bytes must be >= 64 and max_items >= 1")
        if not 1 <= self.max_depth <= _MAX_DEPTH_SETTING:
            raise ValueError(f"max_depth must be between 1 and {_MAX_DEPTH_SETTING}")
        if self.max_metadata_entries < 0:
            raise ValueError("max_metadata_entries must be >= 0")


DEFAULT_LIMITS: Final = Limits()

_T = TypeVar("_T")

top_level_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
"""Reads a message's top-level keys, each value kept as its JSON text."""

# --- errors -------------------------------------------------------------------------------

# msgspec ends a message with " - at `$.path`", or " - at `key` in `$.path`" for a key.
_MSGSPEC_ERROR: Final = re.compile(
    r"(?P<message>.*?)(?: - at `(?:(?P<key>key)` in `)?\$(?P<path>[^`]*)`)?",
    re.DOTALL,
)


def _field(path: str) -> str:
    """Turn msgspec's path ``.items[3]`` into ``items[3]`` (the empty path is the message)."""
    return path.removeprefix(".") or "message"


def _schema_error(exc: msgspec.ValidationError, versions: str) -> InvalidMessage:
    """Translate a msgspec validation error into ``field: what was wrong``."""
    match = _MSGSPEC_ERROR.fullmatch(str(exc))
    if match is None:  # pragma: no cover - the pattern matches any string
        return InvalidMessage("schema", f"message: {exc}")
    message, path = match["message"], match["path"] or ""
    field = _field(path) + (" (a key)" if match["key"] else "")
    if message.startswith("Object missing required field"):
        missing = message.split("`")[1]
        where = "" if field == "message" else f"{field}."
        kind: ErrorKind = "version" if f"{where}{missing}" == "schema" else "schema"
        return InvalidMessage(kind, f"{where}{missing}: missing")
    detail = f"{message[:1].lower()}{message[1:]}"
    if field == "schema":
        return InvalidMessage("version", f"schema: {detail} ({versions})")
    return InvalidMessage("schema", f"{field}: {detail}")


def _utf8_error_at(data: bytes) -> int | None:
    """Return the offset of the first byte that is not valid UTF-8, or None."""
    if data.isascii():
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def parse(decoder: msgspec.json.Decoder[_T], data: bytes, versions: str) -> _T:
    """Run a msgspec decoder, turning every failure into :class:`InvalidMessage`."""
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _schema_error(exc, versions) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # Bytes that are not UTF-8 are reported as such, whatever else is wrong with them.
        at = _utf8_error_at(data)
        if at is not None:
            raise InvalidMessage("encoding", f"message: invalid UTF-8 at byte {at}") from None
        raise InvalidMessage("not_json", f"message: {exc}") from None
    except RecursionError:
        raise InvalidMessage("limits", "message: nested too deeply to parse") from None


class _Tag(msgspec.Struct):
    schema: str | msgspec.UnsetType = msgspec.UNSET


_tag_decoder: Final = msgspec.json.Decoder(_Tag)


def record_type(data: bytes, limits: Limits, known: Sequence[str], versions: str) -> str:
    """Return the ``schema`` of a topic that carries several record types, one of ``known``.

    Step 1 (:func:`check_size`) and the version check of step 2, before the record's own
    decoder runs: ``version`` when ``schema`` is missing or not one of ``known``.
    """
    check_size(data, limits)
    version = parse(_tag_decoder, data, versions).schema
    if version is msgspec.UNSET:
        raise InvalidMessage("version", f"schema: missing ({versions})")
    if version not in known:
        raise InvalidMessage("version", f"schema: unknown record type {version!r} ({versions})")
    return version


def check_raw(data: bytes, versions: str) -> None:
    """Run steps 3 and 4 for a record without raw items: UTF-8, no top-level key twice."""
    check_utf8(data)
    check_duplicates(data, parse(top_level_decoder, data, versions))


def check_size(data: bytes, limits: Limits) -> None:
    """Reject an empty message, or one over ``limits.max_message_bytes``, before parsing."""
    if not data:
        raise InvalidMessage("not_json", "message: empty")
    if len(data) > limits.max_message_bytes:
        raise InvalidMessage(
            "too_large",
            f"message of {len(data)} bytes exceeds the {limits.max_message_bytes}-byte limit",
        )


# --- checks on raw bytes -----------------------------------------------------------------


def check_utf8(data: bytes, items: Sequence[msgspec.Raw] = ()) -> None:
    """Reject bytes that are not UTF-8 where msgspec did not look (raw and unknown values)."""
    at = _utf8_error_at(data)
    if at is None:
        return
    for index, item in enumerate(items):
        if _utf8_error_at(bytes(item)) is not None:
            raise InvalidMessage(
                "encoding", f"items[{index}]: invalid UTF-8 (at byte {at} of the message)"
            )
    raise InvalidMessage("encoding", f"message: invalid UTF-8 at byte {at}")


_WHITESPACE: Final = b" \t\n\r"


def _whitespace(blob: bytes) -> int:
    """Count the JSON whitespace bytes in ``blob`` (inside strings too)."""
    return len(blob) - len(blob.translate(None, _WHITESPACE))


def check_duplicates(data: bytes, keys: dict[str, msgspec.Raw]) -> None:
    """Reject repeated top-level keys without a second full parse in the common case.

    msgspec keeps the last of two equal keys, so a duplicate shows as bytes that the
    decoded pairs do not account for. The pairs, their quotes, colons and commas, and the
    whitespace between them are counted; if that is every byte of the message, no pair was
    dropped. Each estimate errs low (a key's UTF-8 length never exceeds its written length,
    an escaped space in a key is subtracted as if it were whitespace), so nothing can make
    up for a dropped pair. When the count falls short (a duplicate, or keys written with
    escapes), the pairs are looked at exactly.
    """
    accounted = 2 + sum(len(k.encode()) + 3 + len(v) for k, v in keys.items()) + len(keys) - 1
    if accounted == len(data):
        return  # compact JSON, what orjson, msgspec and most clients write
    between = _whitespace(data) - sum(_whitespace(bytes(v)) + k.count(" ") for k, v in keys.items())
    if accounted + between == len(data):
        return
    seen: set[str] = set()

    def pairs(items: list[tuple[str, Any]]) -> None:
        for key, _ in items:
            if key in seen:
                raise InvalidMessage("duplicate_key", f"{key}: appears more than once")
            seen.add(key)

    decoder = json.JSONDecoder(object_pairs_hook=lambda items: items)
    try:
        top = decoder.decode(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # pragma: no cover - msgspec parsed it
        raise InvalidMessage("not_json", f"message: {exc}") from None
    if isinstance(top, list):
        pairs(top)


# Keep only the bytes that shape a JSON document, with both bracket kinds made one kind.
_SHAPE_TABLE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_SHAPE: Final = bytes(b for b in range(256) if b not in b'[]{}"')
# What may follow a backslash in JSON is one of "\/bfnrtu; all but the first two become x.
_ESCAPE_TABLE: Final = bytes.maketrans(b"/bfnrtu", b"xxxxxxx")
_NOT_ESCAPE_OR_SHAPE: Final = bytes(b for b in range(256) if b not in b'[]{}"\\/bfnrtu')


def _shape(blob: bytes) -> bytes:
    """Return the brackets of well-formed JSON ``blob`` that lie outside strings, as ``[]``.

    Every step is one bytes operation in C. Escaped backslashes, then escaped quotes go
    first (a run of backslashes pairs up from its left end, as JSON reads it); what is left
    of each string is its quotes around any brackets it holds. Adjacent quotes go (an
    empty string, or two strings with no bracket between them merging into one); if
    quotes remain, the parts between them alternate outside and inside a string.
    """
    if b"\\" in blob:
        # Shrink first, keeping backslashes and what may follow one (letters of other
        # escapes as "x"), so that each escape keeps its two characters.
        blob = blob.translate(_ESCAPE_TABLE, _NOT_ESCAPE_OR_SHAPE)
        blob = blob.replace(b"\\\\", b"").replace(b'\\"', b"")
    shape = blob.translate(_SHAPE_TABLE, _NOT_SHAPE).replace(b'""', b"")
    if b'"' in shape:
        shape = b"".join(shape.split(b'"')[::2])
    return shape


def _nests_within(blob: bytes, depth: int) -> bool:
    """Return whether well-formed JSON ``blob`` nests at most ``depth`` levels.

    Each pass removes every innermost ``[]`` pair, which is one level of nesting.
    """
    shape = _shape(blob)
    for _ in range(depth):
        if not shape:
            return True
        shape = shape.replace(b"[]", b"")
    return not shape


def check_depth(
    data: bytes,
    keys: dict[str, msgspec.Raw],
    items: Sequence[msgspec.Raw],
    limits: Limits,
) -> None:
    """Check nesting: items at most ``max_depth``, other fields one level more.

    The whole message is checked at once; only when it is too deep is the culprit looked
    for, item by item and field by field.
    """
    if _nests_within(data, limits.max_depth + 2):
        return
    for index, item in enumerate(items):
        if not _nests_within(bytes(item), limits.max_depth):
            raise InvalidMessage(
                "limits", f"items[{index}]: nested deeper than {limits.max_depth} levels"
            )
    for key, value in keys.items():
        if key != "items" and not _nests_within(bytes(value), limits.max_depth + 1):
            raise InvalidMessage(
                "limits", f"{key}: nested deeper than {limits.max_depth + 1} levels"
            )
