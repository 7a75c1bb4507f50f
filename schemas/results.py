"""The results topic's records: a result per item and a summary per chunk.

Types, encoders and the decoder of ``result.v1.json`` and ``chunk-summary.v1.json``:
:func:`decode_results_record` reads either (by its ``schema`` tag), with the rules of its
kind (``prediction`` iff ``ok``, counts that add up, a summary's position).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec

from schemas.decoding import (
    DEFAULT_LIMITS,
    InvalidMessage,
    Limits,
    check_raw,
    parse,
    record_type,
)
from schemas.error_kinds import ResultErrorKind  # noqa: TC001 - msgspec reads it at run time
from schemas.fields import (
    CHUNK_SUMMARY_V1,
    RESULT_V1,
    BatchId,
    NonNegative,
    Positive,
    position_problem,
)
from schemas.millis import round_ms

if TYPE_CHECKING:
    from collections.abc import Iterable

    from schemas.requests import BatchRequest


class ResultError(msgspec.Struct, frozen=True, kw_only=True):
    """Why an item has no prediction (``kind``: see :mod:`schemas.error_kinds`)."""

    kind: ResultErrorKind
    message: str
    http_status: int | None = None


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """The tokens an answer says it used (an OpenAI-compatible answer's ``usage``).

    ``completion_tokens`` is 0 for answers that generate nothing (embeddings).
    """

    prompt_tokens: NonNegative = 0
    completion_tokens: NonNegative = 0
    total_tokens: NonNegative = 0


class Result(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item's outcome, on ``batch-results`` with key = ``batch_id``.

    ``prediction`` (the model's answer for the item, any JSON value, ``null`` included) is
    present iff ``status`` is ``ok``, and ``msgspec.UNSET`` otherwise; ``error`` is set iff
    it is ``error``. ``attempts`` counts HTTP requests made for the item (0 when none could
    be made); ``latency_ms`` is the time from the first attempt to the final answer,
    backoff included, waits for a free request slot excluded; ``queue_ms`` is those waits
    (absent in records written before it existed). ``custom_id`` echoes the item's own
    ``custom_id`` (an OpenAI Batch line's) and ``usage`` the tokens its answer reports;
    both are absent when the item or answer has none.
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
    custom_id: str | None = None
    usage: Usage | None = None
    attempt: Positive | None = None


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
    cancelled: NonNegative = 0
    expired: NonNegative = 0
    attempt: Positive | None = None
    source_partition: NonNegative | None = None
    source_offset: NonNegative | None = None


_result_decoder: Final = msgspec.json.Decoder(Result)
_summary_decoder: Final = msgspec.json.Decoder(ChunkSummary)
_encoder: Final = msgspec.json.Encoder()
_RESULTS_VERSIONS: Final = f"this reader understands {RESULT_V1} and {CHUNK_SUMMARY_V1}"


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
    if summary.cancelled + summary.expired > summary.error:
        raise InvalidMessage("inconsistent", "cancelled + expired exceed error")
    if summary.ok + summary.error != summary.count:
        raise InvalidMessage(
            "inconsistent",
            f"ok + error = {summary.ok + summary.error} is not count = {summary.count}",
        )
    problem = position_problem(
        summary.chunk, summary.chunks, summary.start, summary.count, summary.total
    )
    if problem is not None:
        raise InvalidMessage("inconsistent", problem.replace("len(items)", "count"))


def decode_results_record(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Result | ChunkSummary:
    """Decode one record of the results topic (a result or a chunk summary).

    Raise :class:`InvalidMessage` for anything else: the same checks as for requests
    (size, JSON, UTF-8, types, duplicate keys; no depth limit on predictions beyond what
    can be parsed), plus ``prediction`` iff ``ok`` and summaries whose counts add up.
    """
    known = (RESULT_V1, CHUNK_SUMMARY_V1)
    record: Result | ChunkSummary
    if record_type(data, limits, known, _RESULTS_VERSIONS) == RESULT_V1:
        record = parse(_result_decoder, data, _RESULTS_VERSIONS)
    else:
        record = parse(_summary_decoder, data, _RESULTS_VERSIONS)
    check_raw(data, _RESULTS_VERSIONS)
    if isinstance(record, Result):
        _check_result(record)
    else:
        _check_summary(record)
    return record


def _encode_result(  # noqa: PLR0913 - the fields every result carries, then its outcome
    request: BatchRequest,
    index: int,
    attempts: int,
    latency_ms: float,
    queue_ms: float,
    *,
    prediction: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET,
    error: ResultError | None = None,
    custom_id: str | None = None,
    usage: Usage | None = None,
) -> bytes:
    """Encode item ``index``'s result: ``ok`` with ``prediction``, or ``error``."""
    return _encoder.encode(
        Result(
            schema=RESULT_V1,
            batch_id=request.batch_id,
            index=index,
            chunk=request.chunk,
            status="ok" if error is None else "error",
            attempts=attempts,
            latency_ms=round_ms(latency_ms),
            queue_ms=round_ms(queue_ms),
            prediction=prediction,
            error=error,
            metadata=request.metadata,
            custom_id=custom_id,
            usage=usage,
            attempt=request.attempt,
        ),
    )


def encode_ok_result(  # noqa: PLR0913, PLR0917 - one argument per field of the record
    request: BatchRequest,
    index: int,
    prediction: bytes,
    attempts: int,
    latency_ms: float,
    queue_ms: float = 0.0,
    *,
    custom_id: str | None = None,
    usage: Usage | None = None,
) -> bytes:
    """Encode the ``ok`` result of item ``index`` (the prediction's JSON text is embedded).

    As :func:`_encode_result` with its ``prediction``, written out: once per item.
    """
    return _encoder.encode(
        Result(
            schema=RESULT_V1,
            batch_id=request.batch_id,
            index=index,
            chunk=request.chunk,
            status="ok",
            attempts=attempts,
            latency_ms=round_ms(latency_ms),
            queue_ms=round_ms(queue_ms),
            prediction=msgspec.Raw(prediction),
            error=None,
            metadata=request.metadata,
            custom_id=custom_id,
            usage=usage,
            attempt=request.attempt,
        ),
    )


class OkResultEncoder:
    """Encodes the ``ok`` results of one work unit: what they share is encoded once.

    Every result of a unit has the same batch, chunk, attempts, latency, queue time and
    metadata; only ``index`` and ``prediction`` change. The shared parts are cut from one
    record encoded by :func:`encode_ok_result` and kept as the literal text of a format
    template with two conversions, ``%d`` and ``%b`` (a ``%`` of the shared parts written
    ``%%``), so ``encoder(index, prediction)`` returns exactly the bytes
    ``encode_ok_result(request, index, prediction, attempts, latency_ms, queue_ms)`` does,
    for a fraction of the cost: one formatting of two values per record.
    """

    __slots__ = ("_template",)

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
        head = probe[:index_at]
        middle = probe[index_at + 1 : prediction_at]
        tail = probe[prediction_at + 1 :]
        self._template = b"%b%%d%b%%b%b" % (_literal(head), _literal(middle), _literal(tail))

    def __call__(self, index: int, prediction: bytes) -> bytes:
        """Return the ``ok`` result of item ``index`` (the prediction's JSON text embedded)."""
        return self._template % (index, prediction)

    def all(self, indexes: Iterable[int], predictions: Iterable[bytes]) -> list[bytes]:
        """Return the ``ok`` results of items ``indexes``, one per prediction, in order."""
        # map() calls the template's formatting with each (index, prediction) pair: no
        # Python frame per record.
        return list(map(self._template.__mod__, zip(indexes, predictions, strict=True)))


def _literal(text: bytes) -> bytes:
    """Return ``text`` as the literal part of a ``%`` format template (``%`` doubled)."""
    return text.replace(b"%", b"%%")


def encode_error_result(  # noqa: PLR0913, PLR0917 - one argument per field of the record
    request: BatchRequest,
    index: int,
    kind: ResultErrorKind,
    message: str,
    http_status: int | None,
    attempts: int,
    latency_ms: float,
    queue_ms: float = 0.0,
    *,
    custom_id: str | None = None,
    usage: Usage | None = None,
) -> bytes:
    """Encode the ``error`` result of item ``index`` (``usage``: an answer it could not keep)."""
    error = ResultError(kind=kind, message=message, http_status=http_status)
    return _encode_result(
        request,
        index,
        attempts,
        latency_ms,
        queue_ms,
        error=error,
        custom_id=custom_id,
        usage=usage,
    )


def encode_summary(  # noqa: PLR0913 - the counts, then where the request was
    request: BatchRequest,
    ok: int,
    error: int,
    *,
    cancelled: int = 0,
    expired: int = 0,
    source: tuple[int, int] | None = None,
) -> bytes:
    """Encode the summary of a chunk whose items all have results (``ok + error`` of them).

    ``cancelled`` and ``expired`` count the errors of those kinds (absent when 0);
    ``source`` is the request message's partition and offset on the requests topic.
    """
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
            cancelled=cancelled,
            expired=expired,
            attempt=request.attempt,
            source_partition=None if source is None else source[0],
            source_offset=None if source is None else source[1],
        ),
    )


def encode_record(record: Result | ChunkSummary) -> bytes:
    """Encode any results-topic record (for tools that write them)."""
    return _encoder.encode(record)
