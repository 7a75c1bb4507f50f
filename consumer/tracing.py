"""W3C trace context: from a request message's headers to the inference call and results."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import propagate

if TYPE_CHECKING:
    from confluent_kafka import Message

TRACE_HEADERS = ("traceparent", "tracestate")


def trace_context(msg: Message) -> dict[str, str]:
    """Return the W3C trace context of a request message, re-encoded for propagation.

    The OpenTelemetry API extracts it (an invalid ``traceparent`` yields nothing) and
    injects it again, so with an SDK installed the same code carries real spans; without
    one the context passes through unchanged.
    """
    headers = msg.headers()
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, dict) else headers
    carrier = {
        key: value.decode("latin-1")
        for key, value in pairs
        if key in TRACE_HEADERS and isinstance(value, bytes)
    }
    if not carrier:
        return {}
    out: dict[str, str] = {}
    propagate.inject(out, context=propagate.extract(carrier))
    return out
