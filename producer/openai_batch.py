"""OpenAI Batch files: read an input file into items, write results as output lines.

An input file is JSON Lines, one request per line::

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}}

:func:`read_batch_file` checks every line (one pass with msgspec, against the shape of
each URL's body) and collects what is wrong with each bad one, with its line number;
``custom_id`` must be unique in the file (a later duplicate is a bad line). Each good line
becomes one item, the line itself re-encoded compactly with its body byte for byte, so
``custom_id`` travels with the item and the consumer's ``openai`` protocol posts the body
to the line's ``url`` (one of the paths configured on the consumer).

:func:`output_line` turns one result into a line of OpenAI's Batch output format (the
shape ``schemas/openai-batch-output.v1.json`` states): ``id``, ``custom_id``, and either
``response`` (``status_code``, ``request_id``, ``body``: the answer) or ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec

from consumer.protocols import OPENAI_PATHS
from producer.inputs import STDIN, read_bytes

if TYPE_CHECKING:
    from schemas import Result

MAX_CUSTOM_ID_CHARS: Final = 512

OpenAIPath = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    custom_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CUSTOM_ID_CHARS)]
    method: Literal["POST"]
    url: OpenAIPath
    body: msgspec.Raw


class _ChatBody(msgspec.Struct):
    model: str
    messages: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1)]


class _CompletionBody(msgspec.Struct):
    model: str
    prompt: str | list[Any]


class _EmbeddingBody(msgspec.Struct):
    model: str
    input: str | Annotated[list[Any], msgspec.Meta(min_length=1)]


_line: Final = msgspec.json.Decoder(_Line)
_bodies: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    "/v1/chat/completions": msgspec.json.Decoder(_ChatBody),
    "/v1/completions": msgspec.json.Decoder(_CompletionBody),
    "/v1/embeddings": msgspec.json.Decoder(_EmbeddingBody),
}
_encoder: Final = msgspec.json.Encoder()
assert tuple(_bodies) == OPENAI_PATHS  # noqa: S101 - the consumer's paths are these


@dataclass
class BatchFile:
    """The good lines of an input file as items, and what is wrong with the bad ones."""

    items: list[bytes] = field(default_factory=list)
    custom_ids: list[str] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """One message per bad line: ``FILE:LINE: what is wrong``."""


def _problem(exc: msgspec.MsgspecError, where: str = "") -> str:
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return f"not valid JSON ({text})"
    if where:
        text = text.replace("`$", f"`$.{where}")
        if "`$." not in text:
            text = f"{text} - at `$.{where}`"
    return text


def read_batch_file(path: str) -> BatchFile:
    """Read an OpenAI Batch input file (``-``: stdin); every line is checked.

    Blank lines are skipped. Raises :class:`~producer.inputs.InputError` only when the file
    cannot be read at all; bad lines are reported in :attr:`BatchFile.problems`.
    """
    name = "stdin" if path == STDIN else path
    found = BatchFile()
    first_line: dict[str, int] = {}
    for number, text in enumerate(read_bytes(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = _line.decode(text)
        except msgspec.MsgspecError as exc:
            found.problems.append(f"{name}:{number}: {_problem(exc)}")
            continue
        try:
            _bodies[line.url].decode(line.body)
        except msgspec.MsgspecError as exc:
            found.problems.append(f"{name}:{number}: {_problem(exc, 'body')}")
            continue
        earlier = first_line.get(line.custom_id)
        if earlier is not None:
            found.problems.append(
                f"{name}:{number}: custom_id {line.custom_id!r} is on line {earlier} already "
                "(custom_ids must be unique in a batch)",
            )
            continue
        first_line[line.custom_id] = number
        found.items.append(_encoder.encode(line))
        found.custom_ids.append(line.custom_id)
        found.line_numbers.append(number)
    return found


def _request_id(result: Result) -> str:
    body = result.prediction
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        return str(body["id"])
    return f"{result.batch_id}-{result.index}"


def output_line(result: Result) -> dict[str, Any]:
    """Return the OpenAI Batch output line of one result.

    ``id`` is ``batch_req_<batch id>_<index>`` (the same for a duplicate result);
    ``custom_id`` the line's own (or the index, for an item that had none). An ``ok``
    result has ``response`` with ``status_code`` 200, the answer's ``id`` as
    ``request_id`` (or ``<batch id>-<index>`` when it has none: embeddings) and the answer
    as ``body``, and ``error`` null. An error has ``error`` (``code``: the result's error
    kind, ``message``); when the server answered with an error status, ``response`` holds
    that status and an ``{"error": ...}`` body, else ``response`` is null.
    """
    line: dict[str, Any] = {
        "id": f"batch_req_{result.batch_id}_{result.index}",
        "custom_id": result.custom_id if result.custom_id is not None else str(result.index),
    }
    if result.status == "ok":
        line["response"] = {
            "status_code": 200,
            "request_id": _request_id(result),
            "body": result.prediction,
        }
        line["error"] = None
        return line
    error = result.error
    kind = str(error.kind) if error is not None else "error"
    message = error.message if error is not None else ""
    status = error.http_status if error is not None else None
    line["response"] = (
        None
        if status is None
        else {
            "status_code": status,
            "request_id": None,
            "body": {"error": {"message": message, "type": kind, "code": None}},
        }
    )
    line["error"] = {"code": kind, "message": message}
    return line
