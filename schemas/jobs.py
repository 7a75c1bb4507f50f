"""A batch as a job: its status record and the control records of ``batch-status``.

``batch-status`` is compacted and co-partitioned with ``batch-requests``: the status of a
batch lives on partition :func:`batch_partition` of its id (the partition librdkafka's
default partitioner gives the key ``batch_id``, so chunks sent with that key sit on the
same partition number of the requests topic).

Two record types share the topic (``batch-status.v1.json``, ``batch-control.v1.json``):

- :class:`BatchStatus`, key = ``batch_id``: the latest state of the batch (compaction
  keeps only it). ``submit`` writes the first one (``submitted``); after that only the
  replica owning the partition writes it.
- :class:`BatchControl`, key = ``batch_id/kind[/...]`` (``/`` cannot occur in a batch id,
  so a control record never replaces a status): ``cancel`` (written to every partition,
  so that every replica sees it), ``progress`` (a chunk of the batch finished on a
  partition other than the batch's own: the owner counts it) and ``failed`` (a request
  message with the batch's key was invalid and went to the dead-letter topic: the batch
  can never complete).
"""

from __future__ import annotations

import bisect
import sys
import zlib
from typing import Final, Literal, get_args

import msgspec

from schemas.decoding import (
    DEFAULT_LIMITS,
    InvalidMessage,
    Limits,
    check_raw,
    parse,
    record_type,
)
from schemas.fields import (
    BATCH_CONTROL_V1,
    BATCH_STATUS_V1,
    BatchId,
    NonNegative,
    Positive,
)

BatchStateName = Literal[
    "submitted",
    "in_progress",
    "completed",
    "completed_with_errors",
    "cancelling",
    "cancelled",
    "expired",
    "failed",
]
BATCH_STATES: Final[tuple[str, ...]] = get_args(BatchStateName)
"""Every state, in lifecycle order."""
FINAL_STATES: Final[frozenset[str]] = frozenset(
    {"completed", "completed_with_errors", "cancelled", "expired", "failed"}
)
ControlKind = Literal["cancel", "progress", "failed"]


class BatchStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The state of one batch, on ``batch-status`` with key = ``batch_id``.

    Counts are of items of the whole batch (``errors`` includes ``cancelled`` and
    ``expired``). The chunk numbers of attempt ``attempt`` whose results are all
    acknowledged (a chunk done twice after a crash is counted once) are
    ``done_ranges``, sorted ``[start, end)`` pairs, plus ``done``, a list of chunk numbers
    that writers before ``done_ranges`` used (:func:`done_chunk_ranges` merges the two;
    writers now write the ranges, and the list only when asked to, for a rolling
    upgrade: a list grows with the batch, and with it every status record). The results of
    the batch sit on ``results_partition`` of the results topic between ``first_offset``
    and ``last_offset`` (inclusive; other records may sit between them). Times are Unix
    seconds.
    """

    schema: Literal["batch-status/v1"]
    batch_id: BatchId
    state: BatchStateName
    total: Positive
    chunks: Positive
    attempt: Positive = 1
    ok: NonNegative = 0
    errors: NonNegative = 0
    cancelled: NonNegative = 0
    expired: NonNegative = 0
    chunks_done: NonNegative = 0
    done: list[NonNegative] = msgspec.field(default_factory=list)
    done_ranges: list[tuple[NonNegative, Positive]] = msgspec.field(default_factory=list)
    results_partition: NonNegative | None = None
    first_offset: NonNegative | None = None
    last_offset: NonNegative | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    completed_at: float | None = None
    deadline: float | None = None

    @property
    def final(self) -> bool:
        """Whether the batch reached a final state (this record is its completion event)."""
        return self.state in FINAL_STATES


class BatchControl(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A request to the owner of a batch: cancel it, count a chunk done elsewhere, fail it."""

    schema: Literal["batch-control/v1"]
    kind: ControlKind
    batch_id: BatchId
    at: float
    # progress only: the chunk and its counts, and where its results are
    attempt: Positive = 1
    chunk: NonNegative | None = None
    chunks: Positive | None = None
    total: Positive | None = None
    ok: NonNegative = 0
    errors: NonNegative = 0
    cancelled: NonNegative = 0
    expired: NonNegative = 0
    results_partition: NonNegative | None = None
    first_offset: NonNegative | None = None
    last_offset: NonNegative | None = None


_status_decoder: Final = msgspec.json.Decoder(BatchStatus)
_control_decoder: Final = msgspec.json.Decoder(BatchControl)
_encoder: Final = msgspec.json.Encoder()
_ANY_END: Final = sys.maxsize  # sorts after every range starting at the same chunk
_VERSIONS: Final = f"this reader understands {BATCH_STATUS_V1} and {BATCH_CONTROL_V1}"


def batch_partition(batch_id: str, partitions: int) -> int:
    """Return the partition of ``batch_id`` among ``partitions``.

    The same as librdkafka's default partitioner (CRC-32 of the key, modulo the count)
    for a record keyed by the batch id.
    """
    return zlib.crc32(batch_id.encode()) % partitions


def cancel_key(batch_id: str) -> str:
    """Return the key of a batch's cancel record."""
    return f"{batch_id}/cancel"


def failed_key(batch_id: str) -> str:
    """Return the key of a batch's failed record."""
    return f"{batch_id}/failed"


def progress_key(batch_id: str, attempt: int, chunk: int) -> str:
    """Return the key of the progress record of one chunk of one attempt."""
    return f"{batch_id}/progress/{attempt}/{chunk}"


def add_chunk(ranges: list[tuple[int, int]], chunk: int) -> list[tuple[int, int]] | None:
    """Return sorted ``[start, end)`` ``ranges`` with ``chunk`` added (``None``: it is in).

    Neighbouring ranges merge, so chunks finishing in any order keep the list as short
    as the gaps between them.
    """
    at = bisect.bisect_right(ranges, (chunk, _ANY_END))
    if at and ranges[at - 1][1] > chunk:
        return None
    start, end = chunk, chunk + 1
    lo, hi = at, at
    if at and ranges[at - 1][1] == chunk:
        lo, start = at - 1, ranges[at - 1][0]
    if at < len(ranges) and ranges[at][0] == end:
        hi, end = at + 1, ranges[at][1]
    return [*ranges[:lo], (start, end), *ranges[hi:]]


def done_chunk_ranges(status: BatchStatus) -> list[tuple[int, int]]:
    """Return the status's done chunks as sorted, merged ``[start, end)`` ranges.

    Both forms count: ``done_ranges`` and the ``done`` list older writers wrote.
    """
    ranges: list[tuple[int, int]] = []
    for start, end in status.done_ranges:
        if ranges and ranges[-1][1] >= start:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
        else:
            ranges.append((start, end))
    for chunk in status.done:
        ranges = add_chunk(ranges, chunk) or ranges
    return ranges


def done_chunk_list(status: BatchStatus) -> list[int]:
    """Return every done chunk number of ``status``, sorted (the ``done`` list's form)."""
    return [chunk for start, end in done_chunk_ranges(status) for chunk in range(start, end)]


def _check_status(status: BatchStatus) -> None:
    if status.errors > status.total or status.ok + status.errors > status.total:
        raise InvalidMessage("inconsistent", "ok + errors exceed total")
    if status.cancelled + status.expired > status.errors:
        raise InvalidMessage("inconsistent", "cancelled + expired exceed errors")
    if any(chunk >= status.chunks for chunk in status.done):
        raise InvalidMessage("inconsistent", "done: a chunk number not below chunks")
    previous_end = 0
    for start, end in status.done_ranges:
        if start < previous_end or end <= start or end > status.chunks:
            raise InvalidMessage(
                "inconsistent",
                "done_ranges: each [start, end) must follow the one before, "
                "with start < end <= chunks",
            )
        previous_end = end
    done = sum(end - start for start, end in done_chunk_ranges(status))
    if status.chunks_done != done:
        raise InvalidMessage("inconsistent", "chunks_done is not the number of done chunks")


def _check_control(control: BatchControl) -> None:
    if control.cancelled + control.expired > control.errors:
        raise InvalidMessage("inconsistent", "cancelled + expired exceed errors")
    if control.kind != "progress":
        return
    if control.chunk is None or control.chunks is None or control.total is None:
        raise InvalidMessage("schema", "progress: chunk, chunks and total are required")
    if control.chunk >= control.chunks:
        raise InvalidMessage("inconsistent", "progress: chunk must be below chunks")


def decode_status_record(
    data: bytes, limits: Limits = DEFAULT_LIMITS
) -> BatchStatus | BatchControl:
    """Decode one record of the status topic; raise :class:`InvalidMessage` if it is none."""
    known = (BATCH_STATUS_V1, BATCH_CONTROL_V1)
    record: BatchStatus | BatchControl
    if record_type(data, limits, known, _VERSIONS) == BATCH_STATUS_V1:
        record = parse(_status_decoder, data, _VERSIONS)
    else:
        record = parse(_control_decoder, data, _VERSIONS)
    check_raw(data, _VERSIONS)
    if isinstance(record, BatchStatus):
        _check_status(record)
    else:
        _check_control(record)
    return record


def encode_status_record(record: BatchStatus | BatchControl) -> bytes:
    """Encode a status or control record."""
    return _encoder.encode(record)
