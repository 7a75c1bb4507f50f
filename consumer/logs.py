"""Structured logs: one JSON object per line, or readable lines on a terminal.

Fields passed with ``extra={...}`` become keys of the JSON event (batch id, partition,
offset, error...). Values that look like secrets are never written: keys naming a
password, secret or token, and ``user:password@`` parts of URLs, are masked.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|api[_-]?key", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")
MASK = "***"


def redact(value: object, key: str = "") -> object:
    """Return ``value`` with secrets masked (by key name, and credentials inside URLs)."""
    if key and _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(f"{MASK}@", value)
    if isinstance(value, dict):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        event: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                event[key] = redact(value, key)
        if record.exc_info:
            event["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(event, default=str).decode()


class TextFormatter(logging.Formatter):
    """Readable lines: time, level, event, then ``key=value`` extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of text."""
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(
            f"{key}={redact(value, key)}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        )
        line = f"{stamp} {record.levelname:<7} {redact(record.getMessage())}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + str(redact(self.formatException(record.exc_info)))
        return line


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """Send the service's logs to stderr in ``fmt`` (``json`` or ``text``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
