"""Dead letters on ``batch-requests.dlq``: the headers that say why and where from.

A dead letter keeps the original key and value bytes unchanged; these headers (values
are UTF-8 strings, ``dead-letter-headers.v1.json``) carry the reason and the source
topic, partition and offset.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from schemas.decoding import InvalidMessage

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
