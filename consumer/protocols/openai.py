"""The ``openai`` protocol: one item is one request body of an OpenAI-compatible API.

vLLM, llama.cpp's server, TGI, SGLang, LiteLLM and the hosted APIs take one body per
request on ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``: there is
no list of bodies, so every work unit holds exactly one item, and concurrency is what sets
throughput.

An item is either the request body itself (a JSON object such as ``{"model": ...,
"messages": [...]}``), or a line of an OpenAI Batch input file: an object whose ``body``
is an object, with optional ``custom_id``, ``method`` (``POST``) and ``url``. The body is
posted as written. The URL is always one configured on the consumer: the endpoint's own,
or, when the item names a ``url``, the configured path (the endpoint's, or one of its
``paths`` option) that is that ``url``, or ends with it when it is one of the three paths
above (``/v1/embeddings`` selects ``/llm/v1/embeddings`` behind a gateway's prefix). A
``url`` that names a host, or no configured path, is a ``bad_item``: a message never
chooses where requests go.

The answer (a JSON object) is the item's prediction, whole: ``choices`` or ``data``, and
``usage``, which :mod:`consumer.annotations` copies into the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from consumer.protocols.codec import (
    JSON_CONTENT_TYPE,
    BadItem,
    BadResponse,
    describe,
    raw_object,
    require_items,
    wrong_count,
)
from consumer.protocols.options import DEFAULT_OPTIONS, CodecOptions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from consumer.protocols.codec import JSONText

OPENAI_PATHS: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
"""The request paths of an OpenAI Batch file this project sends (``submit`` checks them)."""


class _Envelope(msgspec.Struct):
    """An OpenAI Batch line: the body to post and where (``custom_id`` is the writer's)."""

    body: msgspec.Raw
    url: str | None = None
    method: str | None = None


_envelope: Final = msgspec.json.Decoder(_Envelope)


def is_envelope(fields: dict[str, msgspec.Raw]) -> bool:
    """Whether an object item's top-level ``fields`` make a Batch line (``body`` an object)."""
    body = fields.get("body")
    return body is not None and bytes(body).lstrip()[:1] == b"{"


def _fields(item: JSONText) -> dict[str, msgspec.Raw]:
    try:
        return raw_object.decode(item)
    except msgspec.MsgspecError:
        raise BadItem("the item is not a JSON object (a request body or a Batch line)") from None


def _unpack(item: JSONText) -> tuple[bytes, str | None]:
    """Return the body to post and the item's ``url`` (None: the endpoint's own)."""
    if not is_envelope(_fields(item)):
        return bytes(item), None
    try:
        envelope = _envelope.decode(item)
    except msgspec.ValidationError as exc:
        raise BadItem(f"the Batch line is not valid: {exc}") from None
    if envelope.method is not None and envelope.method.upper() != "POST":
        raise BadItem(f"method {envelope.method!r}: these APIs take POST only")
    return bytes(envelope.body), envelope.url


class OpenAICodec:
    """``openai``: the item's body posted as is; the answer object is its prediction."""

    name: Final = "openai"
    content_type: Final = JSON_CONTENT_TYPE

    def __init__(self, options: CodecOptions = DEFAULT_OPTIONS) -> None:
        """Route items to the endpoint's path or one of ``options.paths``."""
        self.options = options

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return the body of the single item (a Batch line's ``body``, or the item)."""
        require_items(items)
        if len(items) != 1:
            raise BadItem(f"the openai protocol sends one item per request, not {len(items)}")
        return _unpack(items[0])[0]

    def route(self, endpoint_url: str, items: Sequence[JSONText]) -> str:
        """Return the URL to post ``items`` to: a configured one, chosen by the item's ``url``."""
        require_items(items)
        wanted = _unpack(items[0])[1]
        if wanted is None:
            return endpoint_url
        if not wanted.startswith("/") or wanted.startswith("//"):
            raise BadItem(
                f"url {wanted!r}: an item may name a path such as /v1/embeddings, never a host",
            )
        parts = urlsplit(endpoint_url)
        for path in (parts.path, *self.options.paths):
            if path == wanted or (wanted in OPENAI_PATHS and path.endswith(wanted)):
                query = parts.query if path == parts.path else ""
                return urlunsplit((parts.scheme, parts.netloc, path, query, ""))
        configured = ", ".join((parts.path, *self.options.paths))
        raise BadItem(
            f"url {wanted!r} is not a path configured for this endpoint ({configured}; "
            "more with the codec option paths=...)",
        )

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the answer object as the single item's prediction."""
        try:
            raw_object.decode(body)
        except msgspec.MsgspecError as exc:
            raise BadResponse(describe(exc)) from exc
        if count != 1:
            raise wrong_count(count, 1)
        return [body]
