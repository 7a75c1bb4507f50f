"""The message contract in Python: typed values, a strict one-pass decoder, fast encoders.

The JSON Schema files beside this module (``*.v1.json``) are the contract for clients in
other languages; ``tests/test_schemas.py`` and ``tests/test_schemas_agreement.py`` prove
that these types and those files agree (every encoded value validates, and a document
decodes exactly when its schema accepts it and the rules listed below hold).

Decoding a batch request (:func:`decode_batch_request`) is strict and cheap:

1. the size is checked before anything is parsed (``too_large``);
2. msgspec parses the message into :class:`BatchRequest` in one pass, validating types,
   ranges and the version; each item stays the exact JSON text it was sent as
   (``msgspec.Raw``), so the service forwards items without re-encoding them;
3. what msgspec does not check inside raw values is checked with a few C-speed bytes
   operations: valid UTF-8, and nesting no deeper than ``Limits.max_depth`` (numbers are
   passed on as written: JSON has no ``NaN`` or ``Infinity`` literals, and those are
   rejected as malformed);
4. top-level duplicate keys are rejected (a second ``start`` must not silently move
   results); cross-field rules (``start``/``total``/``chunk``) are checked last.

Results-topic records (:func:`decode_results_record`) go through the same steps, with the
rules of their own kind (``prediction`` iff ``ok``, counts that add up).

Every failure raises :class:`InvalidMessage` with ``kind`` (a short code for the
dead-letter headers) and ``reason`` (which field, and what was wrong). Unknown fields are
accepted and ignored on read and never emitted.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar

import msgspec
import orjson

from schemas.error_kinds import ResultErrorKind  # noqa: TC001 - msgspec reads it at run time
from schemas.errors import BadInputError

if TYPE_CHECKING:
    from collections.abc import Sequence

# --- names --------------------------------------------------------------------------------

REQUESTS_TOPIC: Final = "batch-requests"
RESULTS_TOPIC: Final = "batch-results"
DLQ_TOPIC: Final = "batch-requests.dlq"

BATCH_REQUEST_V1: Final = "batch-request/v1"
RESULT_V1: Final = "result/v1"
CHUNK_SUMMARY_V1: Final = "chunk-summary/v1"

# Dead-letter headers (values are UTF-8 strings).
DLQ_REASON: Final = "dlq.reason"
DLQ_KIND: Final = "dlq.kind"
DLQ_SOURCE_TOPIC: Final = "dlq.source.topic"
DLQ_SOURCE_PARTITION: Final = "dlq.source.partition"
DLQ_SOURCE_OFFSET: Final = "dlq.source.offset"
DLQ_CONSUMER_GROUP: Final = "dlq.consumer.group"
DLQ_FAILED_AT: Final = "dlq.failed_at"
DLQ_HEADERS: Final = (
    DLQ_REASON,
    DLQ_KIND,
    DLQ_SOURCE_TOPIC,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_OFFSET,
    DLQ_CONSUMER_GROUP,
    DLQ_FAILED_AT,
)

# ``(?!\n)``: Python's ``$`` also matches before a final newline, which must not pass
# ("abc\n" is not a valid id). ECMA-262 (JSON Schema) reads the pattern the same way.
BATCH_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]+$(?!\n)"
TARGET_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]*$(?!\n)"
MAX_BATCH_ID_LENGTH: Final = 128
MAX_ITEMS_PER_CHUNK: Final = 10_000

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

# --- types --------------------------------------------------------------------------------

BatchId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_BATCH_ID_LENGTH, pattern=BATCH_ID_PATTERN),
]
Target = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TARGET_PATTERN)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
MetaValue = Annotated[str, msgspec.Meta(max_length=1024)]


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One chunk of a batch, on ``batch-requests`` with key = ``batch_id``.

    ``items`` hold the exact JSON text of each item (opaque to the runner). Item ``i`` of
    this chunk is item ``start + i`` of the batch; ``total`` counts the whole batch's items
    and ``chunk`` of ``chunks`` numbers this message within the batch. Optional fields
    written as ``null`` read as absent.
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
    metadata: dict[str, MetaValue] | None = None
    submitted_at: float | None = None


class ResultError(msgspec.Struct, frozen=True, kw_only=True):
    """Why an item has no prediction (``kind``: see :mod:`schemas.error_kinds`)."""

    kind: ResultErrorKind
    message: str
    http_status: int | None = None


class Result(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item's outcome, on ``batch-results`` with key = ``batch_id``.

    ``prediction`` (the model's answer for the item, any JSON value, ``null`` included) is
    present iff ``status`` is ``ok``, and ``msgspec.UNSET`` otherwise; ``error`` is set iff
    it is ``error``. ``attempts`` counts HTTP requests made for the item (0 when none could
    be made); ``latency_ms`` is the time from the first attempt to the final answer,
    backoff included, waits for a free request slot excluded; ``queue_ms`` is those waits
    (absent in records written before it existed).
    """

    schema: Literal["result/v1"]
    batch_id: BatchId
    index: NonNegative
    chunk: NonNegative
    status: Literal["ok", "error"]
    attempts: NonNegative
    latency_ms: Annotated[float, msgspec.Meta(ge=0)]
    queue_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # Encoders pass the model's JSON text as ``msgspec.Raw`` (embedded as is); decoders
    # return the Python value. UNSET (absent) tells a missing prediction from a null one.
    prediction: Any = msgspec.UNSET
    error: ResultError | None = None
    metadata: dict[str, str] | None = None


class ChunkSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Written after every result of a chunk: counts, so readers know when a batch is complete.

    A batch is complete when summaries for chunks ``0..chunks-1`` have been seen (or, with
    duplicates after a crash, when every index ``0..total-1`` has a result). ``ok + error
    == count``, and the position fields follow the request's rules.
    """

    schema: Literal["chunk-summary/v1"]
    batch_id: BatchId
    chunk: NonNegative
    chunks: Positive
    start: NonNegative
    count: Positive
    total: Positive
    ok: NonNegative
    error: NonNegative
    metadata: dict[str, str] | None = None


class _Tag(msgspec.Struct):
    schema: str | msgspec.UnsetType = msgspec.UNSET


_T = TypeVar("_T")

_request_decoder: Final = msgspec.json.Decoder(BatchRequest)
_top_level_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_result_decoder: Final = msgspec.json.Decoder(Result)
_summary_decoder: Final = msgspec.json.Decoder(ChunkSummary)
_tag_decoder: Final = msgspec.json.Decoder(_Tag)
_encoder: Final = msgspec.json.Encoder()

_REQUEST_VERSIONS: Final = f"this reader understands {BATCH_REQUEST_V1}"
_RESULTS_VERSIONS: Final = f"this reader understands {RESULT_V1} and {CHUNK_SUMMARY_V1}"

# --- decoding: errors ---------------------------------------------------------------------

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


def _parse(decoder: msgspec.json.Decoder[_T], data: bytes, versions: str) -> _T:
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


def _check_size(data: bytes, limits: Limits) -> None:
    if not data:
        raise InvalidMessage("not_json", "message: empty")
    if len(data) > limits.max_message_bytes:
        raise InvalidMessage(
            "too_large",
            f"message of {len(data)} bytes exceeds the {limits.max_message_bytes}-byte limit",
        )


# --- decoding: checks on raw bytes ---------------------------------------------------------


def _check_utf8(data: bytes, items: Sequence[msgspec.Raw] = ()) -> None:
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


def _check_duplicates(data: bytes, keys: dict[str, msgspec.Raw]) -> None:
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


def _check_depth(
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


# --- decoding: cross-field rules ---------------------------------------------------------


def _position_problem(chunk: int, chunks: int, start: int, count: int, total: int) -> str | None:
    """Return what is wrong with a chunk's position in its batch, or None.

    The chunks of a batch split its items ``0..total-1`` into ``chunks`` consecutive,
    non-empty runs, numbered in order; these are the checks one chunk allows on its own.
    """
    end = start + count
    problem = None
    if chunk >= chunks:
        problem = f"chunk = {chunk} must be below chunks = {chunks}"
    elif end > total:
        problem = f"start + len(items) = {end} exceeds total = {total}"
    elif chunk == chunks - 1 and end != total:
        problem = f"the last chunk ends at {end}, not at total = {total}"
    elif chunk == 0 and start != 0:
        problem = f"the first chunk starts at {start}, not at 0"
    elif start < chunk:
        problem = f"chunk {chunk} starts at {start}, too early for the {chunk} chunks before it"
    elif total - end < chunks - 1 - chunk:
        problem = (
            f"total = {total} leaves {total - end} items after this chunk, "
            f"too few for the {chunks - 1 - chunk} chunks after it"
        )
    return problem


def _check_positions(request: BatchRequest) -> None:
    problem = _position_problem(
        request.chunk, request.chunks, request.start, len(request.items), request.total
    )
    if problem is not None:
        raise InvalidMessage("inconsistent", problem)


def _check_result(result: Result) -> None:
    if result.status == "ok":
        if result.prediction is msgspec.UNSET:
            raise InvalidMessage("schema", "prediction: missing (status is ok)")
        if result.error is not None:
            raise InvalidMessage("schema", "error: not allowed when status is ok")
    else:
        if result.error is None:
            raise InvalidMessage("schema", "error: missing (status is error)")
        if result.prediction is not msgspec.UNSET:
            raise InvalidMessage("schema", "prediction: not allowed when status is error")


def _check_summary(summary: ChunkSummary) -> None:
    if summary.ok + summary.error != summary.count:
        raise InvalidMessage(
            "inconsistent",
            f"ok + error = {summary.ok + summary.error} is not count = {summary.count}",
        )
    problem = _position_problem(
        summary.chunk, summary.chunks, summary.start, summary.count, summary.total
    )
    if problem is not None:
        raise InvalidMessage("inconsistent", problem.replace("len(items)", "count"))


# --- decoding -----------------------------------------------------------------------------


def decode_batch_request(data: bytes, limits: Limits = DEFAULT_LIMITS) -> BatchRequest:
    """Decode and validate one batch request; raise :class:`InvalidMessage` if it is not one."""
    _check_size(data, limits)
    request = _parse(_request_decoder, data, _REQUEST_VERSIONS)
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
    _check_utf8(data, request.items)
    keys = _top_level_decoder.decode(data)
    _check_depth(data, keys, request.items, limits)
    _check_duplicates(data, keys)
    _check_positions(request)
    return request


def decode_results_record(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Result | ChunkSummary:
    """Decode one record of the results topic (a result or a chunk summary).

    Raise :class:`InvalidMessage` for anything else: the same checks as for requests
    (size, JSON, UTF-8, types, duplicate keys; no depth limit on predictions beyond what
    can be parsed), plus ``prediction`` iff ``ok`` and summaries whose counts add up.
    """
    _check_size(data, limits)
    version = _parse(_tag_decoder, data, _RESULTS_VERSIONS).schema
    record: Result | ChunkSummary
    if version == RESULT_V1:
        record = _parse(_result_decoder, data, _RESULTS_VERSIONS)
    elif version == CHUNK_SUMMARY_V1:
        record = _parse(_summary_decoder, data, _RESULTS_VERSIONS)
    elif version is msgspec.UNSET:
        raise InvalidMessage("version", f"schema: missing ({_RESULTS_VERSIONS})")
    else:
        raise InvalidMessage(
            "version", f"schema: unknown record type {version!r} ({_RESULTS_VERSIONS})"
        )
    _check_utf8(data)
    _check_duplicates(data, _parse(_top_level_decoder, data, _RESULTS_VERSIONS))
    if isinstance(record, Result):
        _check_result(record)
    else:
        _check_summary(record)
    return record


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


# --- encoding -----------------------------------------------------------------------------


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
) -> bytes:
    """Encode one batch request chunk; ``items`` are each one value's JSON text.

    Raise ``ValueError`` for positions no reader would accept (see the contract's rules);
    the caller vouches for the rest (a valid ``batch_id``, items that are JSON).
    """
    problem = _position_problem(chunk, chunks, start, len(items), total)
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
        metadata=metadata,
        submitted_at=submitted_at,
    )
    return _encoder.encode(request)


def encode_ok_result(  # noqa: PLR0913, PLR0917 - one argument per field of the record
    request: BatchRequest,
    index: int,
    prediction: bytes,
    attempts: int,
    latency_ms: float,
    queue_ms: float = 0.0,
) -> bytes:
    """Encode the ``ok`` result of item ``index`` (the prediction's JSON text is embedded)."""
    return _encoder.encode(
        Result(
            schema=RESULT_V1,
            batch_id=request.batch_id,
            index=index,
            chunk=request.chunk,
            status="ok",
            attempts=attempts,
            latency_ms=round(latency_ms, 3),
            queue_ms=round(queue_ms, 3),
            prediction=msgspec.Raw(prediction),
            metadata=request.metadata,
        ),
    )


class OkResultEncoder:
    """Encodes the ``ok`` results of one work unit: what they share is encoded once.

    Every result of a unit has the same batch, chunk, attempts, latency, queue time and
    metadata; only ``index`` and ``prediction`` change. The shared parts are cut from one
    record encoded by :func:`encode_ok_result`, so ``encoder(index, prediction)`` returns
    exactly the bytes ``encode_ok_result(request, index, prediction, attempts, latency_ms,
    queue_ms)`` does, for a fraction of the cost.
    """

    __slots__ = ("_head", "_middle", "_tail")

    def __init__(
        self,
        request: BatchRequest,
        attempts: int,
        latency_ms: float,
        queue_ms: float = 0.0,
    ) -> None:
        """Encode the parts shared by the unit's results."""
        probe = encode_ok_result(request, 0, b"0", attempts, latency_ms, queue_ms)
        # Before "index" come only the schema and the batch id (a JSON string, where a
        # quote is always escaped); between "index" and "prediction" only numbers and
        # fixed strings: the first unescaped occurrence of each key is the field.
        index_at = probe.index(b',"index":0,') + len(b',"index":')
        prediction_at = probe.index(b',"prediction":0', index_at) + len(b',"prediction":')
        self._head = probe[:index_at]
        self._middle = probe[index_at + 1 : prediction_at]
        self._tail = probe[prediction_at + 1 :]

    def __call__(self, index: int, prediction: bytes) -> bytes:
        """Return the ``ok`` result of item ``index`` (the prediction's JSON text embedded)."""
        return b"%b%d%b%b%b" % (self._head, index, self._middle, prediction, self._tail)


def encode_error_result(  # noqa: PLR0913, PLR0917 - one argument per field of the record
    request: BatchRequest,
    index: int,
    kind: ResultErrorKind,
    message: str,
    http_status: int | None,
    attempts: int,
    latency_ms: float,
    queue_ms: float = 0.0,
) -> bytes:
    """Encode the ``error`` result of item ``index``."""
    return _encoder.encode(
        Result(
            schema=RESULT_V1,
            batch_id=request.batch_id,
            index=index,
            chunk=request.chunk,
            status="error",
            attempts=attempts,
            latency_ms=round(latency_ms, 3),
            queue_ms=round(queue_ms, 3),
            error=ResultError(kind=kind, message=message, http_status=http_status),
            metadata=request.metadata,
        ),
    )


def encode_summary(request: BatchRequest, ok: int, error: int) -> bytes:
    """Encode the summary of a chunk whose items all have results (``ok + error`` of them)."""
    return _encoder.encode(
        ChunkSummary(
            schema=CHUNK_SUMMARY_V1,
            batch_id=request.batch_id,
            chunk=request.chunk,
            chunks=request.chunks,
            start=request.start,
            count=len(request.items),
            total=request.total,
            ok=ok,
            error=error,
            metadata=request.metadata,
        ),
    )


def encode_record(record: Result | ChunkSummary) -> bytes:
    """Encode any results-topic record (for tools that write them)."""
    return _encoder.encode(record)


# --- dead letters -------------------------------------------------------------------------


def dead_letter_headers(  # noqa: PLR0913 - one keyword per header
    error: InvalidMessage,
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    group: str,
    failed_at: float | None = None,
) -> list[tuple[str, bytes]]:
    """Return the headers of a dead letter: why, and where the original came from."""
    stamp = time.time() if failed_at is None else failed_at
    values = {
        DLQ_REASON: error.reason,
        DLQ_KIND: error.kind,
        DLQ_SOURCE_TOPIC: source_topic,
        DLQ_SOURCE_PARTITION: str(source_partition),
        DLQ_SOURCE_OFFSET: str(source_offset),
        DLQ_CONSUMER_GROUP: group,
        DLQ_FAILED_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp)),
    }
    return [(key, value.encode()) for key, value in values.items()]


def parse_dead_letter_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    """Return the dead-letter headers of a record as strings (other headers are ignored)."""
    return {
        key: (value or b"").decode("utf-8", "replace")
        for key, value in headers
        if key in DLQ_HEADERS
    }
