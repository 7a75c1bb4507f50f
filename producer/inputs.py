"""Read a batch's items from a file or stdin: JSON array, JSON Lines or CSV.

Each item comes back as its compact JSON text (bytes), ready for a batch request. Errors
are :class:`InputError` with the file and the line (or item) that was wrong, so a user
can fix the input without guessing.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import orjson

from schemas.errors import BadInputError

if TYPE_CHECKING:
    import _csv
    from collections.abc import Iterator

Format = Literal["json", "jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("json", "jsonl", "csv")
STDIN = "-"


class InputError(BadInputError):
    """The input cannot be read as items; the message says where and why."""


def detect_format(path: str, head: bytes) -> Format:
    """Guess the format from the file name, else from the first non-blank byte."""
    suffix = Path(path).suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    first = head.lstrip()[:1]
    if first == b"[":
        return "json"
    if first == b"{":
        return "jsonl"
    return "csv"


def read_bytes(path: str) -> bytes:
    """Return the whole input (``-`` is stdin)."""
    if path == STDIN:
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None


def read_items(path: str, fmt: Format | None = None) -> list[bytes]:
    """Return the items of ``path`` as JSON texts, in order; raise :class:`InputError`."""
    data = read_bytes(path)
    name = "stdin" if path == STDIN else path
    chosen = fmt or detect_format(path, data[:64])
    if chosen == "json":
        items = list(_json_array(name, data))
    elif chosen == "jsonl":
        items = list(_json_lines(name, data))
    else:
        items = list(_csv_rows(name, data))
    if not items:
        raise InputError(f"{name}: no items (the input is empty)")
    return items


def _json_array(name: str, data: bytes) -> Iterator[bytes]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{name}: not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise InputError(
            f"{name}: expected a JSON array of items, got {type(value).__name__} "
            "(use .jsonl for one item per line)",
        )
    for item in value:
        yield orjson.dumps(item)


def _json_lines(name: str, data: bytes) -> Iterator[bytes]:
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{name}:{number}: not valid JSON: {exc}") from None
        yield orjson.dumps(value)


def _typed(text: str) -> object:
    """Turn a CSV cell into a number where it is one, else keep the string."""
    stripped = text.strip()
    if stripped == "":
        return None
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        number = float(stripped)
    except ValueError:
        return text
    if number != number or number in {float("inf"), float("-inf")}:  # noqa: PLR0124 - NaN check
        return text  # "nan"/"inf" stay strings: JSON has no such numbers
    return number


def _next_row(reader: _csv.Reader, name: str, what: str) -> list[str] | None:
    """Return the next CSV row (None at the end); a broken one is an :class:`InputError`."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        line = max(reader.line_num, 1)
        raise InputError(f"{name}:{line}: unreadable CSV {what}: {exc}") from None


def _csv_rows(name: str, data: bytes) -> Iterator[bytes]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = _next_row(reader, name, "header")
    if header is None:
        return
    if len(set(header)) != len(header) or any(not h.strip() for h in header):
        raise InputError(f"{name}:1: the header needs unique, non-empty column names")
    while (row := _next_row(reader, name, "row")) is not None:
        if not row:
            continue
        if len(row) != len(header):
            raise InputError(
                f"{name}:{reader.line_num}: unreadable CSV row: expected {len(header)} "
                f"fields, got {len(row)}",
            )
        yield orjson.dumps({key: _typed(value) for key, value in zip(header, row, strict=True)})
