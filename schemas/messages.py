"""The message contract in Python: typed values, a strict one-pass decoder, fast encoders.

The JSON Schema files beside this module (``*.v1.json``) are the contract for clients in
other languages; ``tests/test_schemas.py`` proves that these types and those files agree
(every encoded value validates, every valid document decodes).

Decoding a batch request (:func:`decode_batch_request`) is strict and cheap:

1. the size is checked before anything is parsed (``too_large``);
2. msgspec parses the message into :class:`BatchRequest` in one pass, validating types,
   ranges and the version; each item stays the exact JSON text it was sent as
   (``msgspec.Raw``), so the service forwards items without re-encoding them;
3. what msgspec does not check inside raw item values is checked in C: valid UTF-8,
   and nesting no deeper than ``Limits.max_depth`` (numbers are passed on as written:
   JSON has no ``NaN`` or ``Infinity`` literals, and those are rejected as malformed);
4. top-level duplicate keys are rejected (a second ``start`` must not silently move
   results); cross-field rules (``start``/``total``/``chunk``) are checked last.

Every failure raises :class:`InvalidMessage` with ``kind`` (a short code for the
dead-letter headers) and ``reason`` (which field, and what was wrong). Unknown fields are
accepted and ignored on read and never emitted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec
import orjson

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

BATCH_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]+$"
TARGET_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_BATCH_ID_LENGTH: Final = 128
MAX_ITEMS_PER_CHUNK: Final = 10_000

# orjson refuses documents nested deeper than this; the depth check builds on it.
_ORJSON_DEPTH_LIMIT: Final = 1024

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


class InvalidMessage(ValueError):  # noqa: N818 - the contract's name for a rejected message
    """A message that breaks the contract; ``kind`` is a short code, ``reason`` the detail."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        """Create the error (``str(exc)`` is ``"kind: reason"``)."""
        super().__init__(f"{kind}: {reason}")
        self.kind: ErrorKind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoder enforces; the defaults suit Kafka's default 1 MiB messages."""

    max_message_bytes: int = 1024 * 1024
    max_items: int = MAX_ITEMS_PER_CHUNK
    max_depth: int = 32
    max_metadata_entries: int = 64

    def __post_init__(self) -> None:
        """Reject limits that cannot work."""
        if self.max_message_bytes < 64 or self.max_items < 1:
            raise ValueError("max_message_bytes must be >= 64 and max_items >= 1")
        if not 1 <= self.max_depth < _ORJSON_DEPTH_LIMIT - 1:
            raise ValueError(f"max_depth must be between 1 and {_ORJSON_DEPTH_LIMIT - 2}")


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
    and ``chunk`` of ``chunks`` numbers this message within the batch.
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
    """Why an item has no prediction."""

    kind: str
    message: str
    http_status: int | None = None


class Result(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item's outcome, on ``batch-results`` with key = ``batch_id``.

    ``prediction`` (the model's answer for the item, as JSON) is present iff ``status`` is
    ``ok``; ``error`` iff it is ``error``. ``attempts`` counts HTTP requests made for the
    item (0 when none could be made); ``latency_ms`` is the time from the first attempt to
    the final answer, backoff included.
    """

    schema: Literal["result/v1"]
    batch_id: BatchId
    index: NonNegative
    chunk: NonNegative
    status: Literal["ok", "error"]
    attempts: NonNegative
    latency_ms: Annotated[float, msgspec.Meta(ge=0)]
    # Encoders pass the model's JSON text as ``msgspec.Raw`` (embedded as is); decoders
    # return the Python value.
    prediction: Any = None
    error: ResultError | None = None
    metadata: dict[str, str] | None = None


class ChunkSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Written after every result of a chunk: counts, so readers know when a batch is complete.

    A batch is complete when summaries for chunks ``0..chunks-1`` have been seen (or, with
    duplicates after a crash, when every index ``0..total-1`` has a result).
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
    schema: str = ""


_request_decoder: Final = msgspec.json.Decoder(BatchRequest)
_top_level_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_result_decoder: Final = msgspec.json.Decoder(Result)
_summary_decoder: Final = msgspec.json.Decoder(ChunkSummary)
_tag_decoder: Final = msgspec.json.Decoder(_Tag)
_encoder: Final = msgspec.json.Encoder()

# --- decoding -----------------------------------------------------------------------------


def _field(path: str) -> str:
    """Turn msgspec's ``$.items[3]`` into ``items[3]``."""
    return path.removeprefix("$.").removeprefix("$") or "message"


def _schema_error(exc: msgspec.ValidationError) -> InvalidMessage:
    text = str(exc)
    message, sep, path = text.rpartition(" - at `")
    if not sep:
        message, path = text, "$`"
    field = _field(path.rstrip("`"))
    if field == "schema":
        return InvalidMessage("version", f"schema: {message} (this runner reads batch-request/v1)")
    if message.startswith("Object missing required field"):
        missing = message.split("`")[1]
        where = "" if field == "message" else f"{field}."
        return InvalidMessage("schema", f"{where}{missing}: missing")
    return InvalidMessage("schema", f"{field}: {message[0].lower()}{message[1:]}")


def _check_duplicates(data: bytes, keys: dict[str, msgspec.Raw]) -> None:
    """Reject repeated top-level keys without a second full parse in the common case.

    Compact JSON (what orjson, msgspec and most clients emit) has no bytes outside keys,
    values and punctuation, so if the decoded pairs account for every byte there can be no
    dropped duplicate. Otherwise (whitespace, or a duplicate) look at the pairs exactly.
    """
    accounted = 2 + sum(len(k) + 3 + len(v) for k, v in keys.items()) + len(keys) - 1
    if accounted == len(data):
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
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage("not_json", f"message: {exc}") from None
    if isinstance(top, list):
        pairs(top)


# Keep only the bytes that shape a JSON document, with both bracket kinds made one kind.
_SHAPE_TABLE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_SHAPE: Final = bytes(b for b in range(256) if b not in b'[]{}"\\')


def _depth_at_most(data: bytes, depth: int) -> bool | None:
    """Return whether ``data`` (well-formed JSON) nests at most ``depth`` levels.

    Fast path in C: keep only brackets and quotes, drop empty strings, then peel the
    innermost bracket pairs once per level. Returns ``None`` when a string holds
    brackets, quotes or escapes, which this shortcut cannot see through.
    """
    shape = data.translate(_SHAPE_TABLE, _NOT_SHAPE).replace(b'""', b"")
    if b'"' in shape or b"\\" in shape:
        return None
    for _ in range(depth):
        if not shape:
            return True
        shape = shape.replace(b"[]", b"")
    return not shape


def _check_items(data: bytes, items: Sequence[msgspec.Raw], limits: Limits) -> None:
    """Check what msgspec lets through in raw item values: UTF-8 and nesting depth.

    Items sit two levels down in a request (the message object, the ``items`` array), so
    the whole message may nest ``max_depth + 2`` levels (metadata only reaches 2).
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("encoding", "items: invalid UTF-8") from None
    shallow = _depth_at_most(data, limits.max_depth + 2)
    if shallow is None:
        # Exact check through orjson, whose fixed depth limit is made to fall exactly
        # at max_depth for the items by wrapping them in enough arrays.
        wrap = _ORJSON_DEPTH_LIMIT - limits.max_depth - 1
        blob = b"[" * wrap + b"[" + b",".join(items) + b"]" + b"]" * wrap
        try:
            orjson.loads(blob)
            shallow = True
        except orjson.JSONDecodeError as exc:
            shallow = "depth limit" not in str(exc) and "recursion" not in str(exc)
    if not shallow:
        raise InvalidMessage("limits", f"items: nested deeper than {limits.max_depth} levels")


def decode_batch_request(data: bytes, limits: Limits = DEFAULT_LIMITS) -> BatchRequest:
    """Decode and validate one batch request; raise :class:`InvalidMessage` if it is not one."""
    if len(data) > limits.max_message_bytes:
        raise InvalidMessage(
            "too_large",
            f"message of {len(data)} bytes exceeds the {limits.max_message_bytes}-byte limit",
        )
    try:
        request = _request_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _schema_error(exc) from None
    except msgspec.DecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("encoding", "message: invalid UTF-8") from None
        raise InvalidMessage("not_json", f"message: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidMessage("encoding", "message: invalid UTF-8") from None
    except RecursionError:
        raise InvalidMessage("limits", "message: nested too deeply") from None
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
    _check_items(data, request.items, limits)
    _check_duplicates(data, _top_level_decoder.decode(data))
    _check_consistency(request)
    return request


def _check_consistency(request: BatchRequest) -> None:
    end = request.start + len(request.items)
    if end > request.total:
        raise InvalidMessage(
            "inconsistent",
            f"start + len(items) = {end} exceeds total = {request.total}",
        )
    if request.chunk >= request.chunks:
        raise InvalidMessage(
            "inconsistent",
            f"chunk = {request.chunk} must be below chunks = {request.chunks}",
        )
    if request.chunk == request.chunks - 1 and end != request.total:
        raise InvalidMessage(
            "inconsistent",
            f"the last chunk ends at {end}, not at total = {request.total}",
        )


def decode_results_record(data: bytes) -> Result | ChunkSummary:
    """Decode one record of the results topic (a result or a chunk summary)."""
    try:
        tag = _tag_decoder.decode(data).schema
        if tag == RESULT_V1:
            return _result_decoder.decode(data)
        if tag == CHUNK_SUMMARY_V1:
            return _summary_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _schema_error(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidMessage("not_json", f"message: {exc}") from None
    raise InvalidMessage("version", f"schema: unknown record type {tag!r}")


def item_values(request: BatchRequest) -> list[Any]:
    """Return the request's items as Python values (the service itself never needs this)."""
    return [orjson.loads(bytes(item)) for item in request.items]


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
    """Encode one batch request chunk; ``items`` are each one value's JSON text."""
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


def encode_ok_result(
    request: BatchRequest,
    index: int,
    prediction: bytes,
    attempts: int,
    latency_ms: float,
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
            prediction=msgspec.Raw(prediction),
            metadata=request.metadata,
        ),
    )


def encode_error_result(  # noqa: PLR0913, PLR0917 - one argument per field of the record
    request: BatchRequest,
    index: int,
    kind: str,
    message: str,
    http_status: int | None,
    attempts: int,
    latency_ms: float,
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
            error=ResultError(kind=kind, message=message, http_status=http_status),
            metadata=request.metadata,
        ),
    )


def encode_summary(request: BatchRequest, ok: int, error: int) -> bytes:
    """Encode the summary of a chunk whose items all have results."""
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
