"""What the messages share: topic names, version tags, field types, the position rule.

The default topic names, each record type's ``schema`` tag, the patterns and bounds of
the fields several messages carry (``batch_id``, ``target``, counts), and the rule a
chunk's position in its batch follows in a request and in its summary alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

REQUESTS_TOPIC: Final = "batch-requests"
RESULTS_TOPIC: Final = "batch-results"
DLQ_TOPIC: Final = "batch-requests.dlq"
STATUS_TOPIC: Final = "batch-status"


@dataclass(frozen=True)
class TopicNames:
    """The three topics of one service instance; the defaults are the contract's names."""

    requests: str = REQUESTS_TOPIC
    results: str = RESULTS_TOPIC
    dlq: str = DLQ_TOPIC
    status: str = STATUS_TOPIC


BATCH_REQUEST_V1: Final = "batch-request/v1"
RESULT_V1: Final = "result/v1"
CHUNK_SUMMARY_V1: Final = "chunk-summary/v1"
BATCH_STATUS_V1: Final = "batch-status/v1"
BATCH_CONTROL_V1: Final = "batch-control/v1"

# ``(?!\n)``: Python's ``$`` also matches before a final newline, which must not pass
# ("abc\n" is not a valid id). ECMA-262 (JSON Schema) reads the pattern the same way.
BATCH_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]+$(?!\n)"
TARGET_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]*$(?!\n)"
MAX_BATCH_ID_LENGTH: Final = 128
MAX_ITEMS_PER_CHUNK: Final = 10_000

BatchId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_BATCH_ID_LENGTH, pattern=BATCH_ID_PATTERN),
]
Target = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TARGET_PATTERN)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
MAX_PRIORITY = 100
Priority = Annotated[int, msgspec.Meta(ge=1, le=MAX_PRIORITY)]
MetaValue = Annotated[str, msgspec.Meta(max_length=1024)]


def position_problem(chunk: int, chunks: int, start: int, count: int, total: int) -> str | None:
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
