"""The kinds of error a result can carry, and which of them are worth retrying.

One enum for the whole service: the dispatcher classifies a failed inference call with
it, the retry policy decides with it, the record writer writes its value into
``error.kind``, and ``result.v1.json`` lists the same values (a test holds them equal).
"""

from __future__ import annotations

from enum import StrEnum


class ResultErrorKind(StrEnum):
    """Why an item got an ``error`` result. The value is what the record carries."""

    HTTP_STATUS = "http_status"
    """The server answered with a non-2xx status (the status is in ``error.http_status``)."""
    TIMEOUT = "timeout"
    """No (complete) answer within the request timeout."""
    CONNECTION = "connection"
    """Could not connect, or the connection broke (refused, reset, DNS failure)."""
    BAD_RESPONSE = "bad_response"
    """A 2xx whose body is not the expected shape (truncated, not JSON, wrong structure)."""
    WRONG_COUNT = "wrong_count"
    """A well-formed 2xx with a different number of predictions than inputs."""
    RESPONSE_TOO_LARGE = "response_too_large"
    """The answer was over the consumer's response size cap."""
    RESULT_TOO_LARGE = "result_too_large"
    """The prediction makes a result record over the results topic's record limit."""
    BAD_ITEM = "bad_item"
    """The item cannot be put in a request the way the endpoint's codec options say."""
    UNKNOWN_TARGET = "unknown_target"
    """The request's ``target`` names no endpoint configured on the consumer."""
    CANCELLED = "cancelled"
    """The batch was cancelled (``batch-runner cancel``) before the item was sent."""
    EXPIRED = "expired"
    """The request's ``deadline`` passed before the item was sent."""


ALWAYS_RETRIED: frozenset[ResultErrorKind] = frozenset(
    {ResultErrorKind.TIMEOUT, ResultErrorKind.CONNECTION, ResultErrorKind.BAD_RESPONSE},
)
"""Transient by nature: retried within the retry policy's attempt and time budget.

A body of the wrong shape is usually a proxy, a load balancer or a restarting server."""

NEVER_RETRIED: frozenset[ResultErrorKind] = frozenset(
    {
        ResultErrorKind.WRONG_COUNT,
        ResultErrorKind.RESPONSE_TOO_LARGE,
        ResultErrorKind.RESULT_TOO_LARGE,
        ResultErrorKind.BAD_ITEM,
        ResultErrorKind.UNKNOWN_TARGET,
        ResultErrorKind.CANCELLED,
        ResultErrorKind.EXPIRED,
    },
)
"""Deterministic: the same input gets the same answer, so the error is final at once."""

# HTTP_STATUS is neither: it depends on the status (the retry policy's retry_statuses).
