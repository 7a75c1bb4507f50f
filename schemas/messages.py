"""The message contract in Python: typed values, a strict one-pass decoder, fast encoders.

This module gathers the contract's names from the modules that hold them:
:mod:`schemas.fields` (topic names, version tags, shared field types, the position rule),
:mod:`schemas.decoding` (:class:`InvalidMessage`, :class:`Limits` and the checks every
decoder makes), :mod:`schemas.requests` (the batch request), :mod:`schemas.results` (results
and chunk summaries) and :mod:`schemas.dead_letters` (the dead-letter headers).

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

from schemas.dead_letters import (
    DLQ_CONSUMER_GROUP,
    DLQ_FAILED_AT,
    DLQ_HEADERS,
    DLQ_KIND,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    dead_letter_headers,
    parse_dead_letter_headers,
)
from schemas.decoding import (
    DEFAULT_LIMITS,
    ErrorKind,
    InvalidMessage,
    Limits,
)
from schemas.fields import (
    BATCH_CONTROL_V1,
    BATCH_ID_PATTERN,
    BATCH_REQUEST_V1,
    BATCH_STATUS_V1,
    CHUNK_SUMMARY_V1,
    DLQ_TOPIC,
    MAX_BATCH_ID_LENGTH,
    MAX_ITEMS_PER_CHUNK,
    REQUESTS_TOPIC,
    RESULT_V1,
    RESULTS_TOPIC,
    STATUS_TOPIC,
    TARGET_PATTERN,
    TopicNames,
)
from schemas.jobs import (
    FINAL_STATES,
    BatchControl,
    BatchStatus,
    add_chunk,
    batch_partition,
    cancel_key,
    decode_status_record,
    done_chunk_list,
    done_chunk_ranges,
    encode_status_record,
    failed_key,
    progress_key,
)
from schemas.requests import (
    BatchRequest,
    decode_batch_request,
    encode_batch_request,
    item_values,
)
from schemas.results import (
    ChunkSummary,
    OkResultEncoder,
    Result,
    ResultError,
    Usage,
    decode_results_record,
    encode_error_result,
    encode_ok_result,
    encode_record,
    encode_summary,
)

__all__ = [
    "BATCH_CONTROL_V1",
    "BATCH_ID_PATTERN",
    "BATCH_REQUEST_V1",
    "BATCH_STATUS_V1",
    "CHUNK_SUMMARY_V1",
    "DEFAULT_LIMITS",
    "DLQ_CONSUMER_GROUP",
    "DLQ_FAILED_AT",
    "DLQ_HEADERS",
    "DLQ_KIND",
    "DLQ_REASON",
    "DLQ_SOURCE_OFFSET",
    "DLQ_SOURCE_PARTITION",
    "DLQ_SOURCE_TOPIC",
    "DLQ_TOPIC",
    "FINAL_STATES",
    "MAX_BATCH_ID_LENGTH",
    "MAX_ITEMS_PER_CHUNK",
    "REQUESTS_TOPIC",
    "RESULTS_TOPIC",
    "RESULT_V1",
    "STATUS_TOPIC",
    "TARGET_PATTERN",
    "BatchControl",
    "BatchRequest",
    "BatchStatus",
    "ChunkSummary",
    "ErrorKind",
    "InvalidMessage",
    "Limits",
    "OkResultEncoder",
    "Result",
    "ResultError",
    "TopicNames",
    "Usage",
    "add_chunk",
    "batch_partition",
    "cancel_key",
    "dead_letter_headers",
    "decode_batch_request",
    "decode_results_record",
    "decode_status_record",
    "done_chunk_list",
    "done_chunk_ranges",
    "encode_batch_request",
    "encode_error_result",
    "encode_ok_result",
    "encode_record",
    "encode_status_record",
    "encode_summary",
    "failed_key",
    "item_values",
    "parse_dead_letter_headers",
    "progress_key",
]
