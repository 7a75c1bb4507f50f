"""Read the inference API's answers: a success body under a size cap, an error's message.

Two ways of reading a body, both bounded by the consumer's ``max_response_bytes``:

* :func:`read_capped` takes in a 2xx answer whole, and raises
  :class:`ResponseTooLargeError` once it is over the cap (declared or counted): the items
  get a ``response_too_large`` error instead of a replica that runs out of memory.
* :func:`read_tail` keeps the last :data:`ERROR_BODY_TAIL_BYTES` of an error answer, and
  :func:`error_snippet` cuts it to its informative part: the message of a JSON error
  object, or the end of a text, where a traceback says what went wrong.

The dispatcher decides what an answer means (:mod:`consumer.dispatcher`); nothing here
retries or classifies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import aiohttp
import orjson

if TYPE_CHECKING:
    from aiohttp import ClientResponse

ERROR_SNIPPET_CHARS: Final = 1000
"""The longest server message an error result carries (its end is kept)."""
ERROR_BODY_TAIL_BYTES: Final = 64 * 1024
"""How much of the end of an error answer's body is kept while reading it."""
_MESSAGE_KEYS: Final = ("error", "detail", "message")


class ResponseTooLargeError(Exception):
    """A 2xx answer's body is over the size cap; the message says by how much it is known."""


async def read_capped(response: ClientResponse, cap: int) -> bytes:
    """Return the whole body of ``response``, or raise :class:`ResponseTooLargeError`.

    A declared ``Content-Length`` over ``cap`` is refused before reading; a body without
    one (or compressed) is counted as it arrives.
    """
    length = response.content_length
    if length is not None:
        if length > cap:
            raise ResponseTooLargeError(f"response of {length} bytes exceeds the {cap}-byte cap")
        if response.headers.get("Content-Encoding") is None:
            # The declared length bounds what read() takes in: one call, no loop.
            return await response.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise ResponseTooLargeError(f"response exceeds the {cap}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_tail(response: ClientResponse, cap: int) -> bytes:
    """Return the last ``ERROR_BODY_TAIL_BYTES`` of an error answer's body.

    Reading stops past ``cap`` bytes (the connection is then dropped rather than
    drained); a broken body yields what arrived.
    """
    kept = b""
    size = 0
    try:
        async for chunk in response.content.iter_any():
            size += len(chunk)
            kept = (kept + chunk)[-ERROR_BODY_TAIL_BYTES:]
            if size > cap:
                break
    except (aiohttp.ClientError, OSError):
        pass
    return kept


def _message_in_json(text: str) -> str | None:
    """Return the message a JSON error object carries (``{"error": "..."}`` and the like)."""
    if not text.startswith("{"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    for key in _MESSAGE_KEYS:
        found = value.get(key)
        if isinstance(found, dict):
            found = found.get("message")
        if isinstance(found, str) and found.strip():
            return found
    return None


def error_snippet(body: bytes, cap: int = ERROR_SNIPPET_CHARS) -> str:
    """Return the informative part of an error answer's ``body``, at most ``cap`` characters.

    A JSON object's ``error``, ``detail`` or ``message`` string (as MLServer, KServe,
    Triton and FastAPI send them) is taken out of it. A longer text keeps its end, where
    a traceback says what went wrong, from a line start where one falls in the first
    half of what is kept, after an ellipsis.
    """
    if cap < 2:
        raise ValueError("cap must be >= 2")
    text = body.decode("utf-8", "replace").strip()
    text = (_message_in_json(text) or text).strip()
    if len(text) <= cap:
        return text
    tail = text[-(cap - 1) :]
    newline = tail.find("\n")
    if 0 <= newline < len(tail) // 2:
        tail = tail[newline + 1 :]
    return "\u2026" + tail
