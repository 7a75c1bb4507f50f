"""Encode a work unit for the inference API and decode its answer (no I/O).

Items and predictions stay opaque unless an endpoint's :class:`CodecOptions` ask for a
change of shape: each is the exact JSON text of one value, carried as ``bytes`` (or a
``msgspec.Raw`` view), so by default the consumer never decodes and re-encodes what a
producer submitted. A codec only shapes the request body; the URL it is posted to is the
endpoint configured on the consumer.

Three protocols, a module each:

``raw`` (:mod:`~consumer.protocols.raw`)
    One item: the body is the item itself and the response body is its prediction.
    Several items: the body is a JSON array of the items and the response a JSON array of
    predictions, in order (a plain ``/predict`` API).
``v1`` (:mod:`~consumer.protocols.v1`)
    ``{"instances": [items...]}`` (or ``{"inputs": [...]}``, option ``v1_key``) answered by
    ``{"predictions": [...]}`` (or ``{"outputs": [...]}``): KServe v1, TensorFlow
    Serving's row format, MLflow.
``v2`` (:mod:`~consumer.protocols.v2`)
    The Open Inference Protocol, the way MLServer, KServe and Triton read it: the items
    become one tensor ``input-0`` of shape ``[n, ...]``. Object items are first turned
    into rows (their values in column order), so ``n`` iris objects are one ``[n, 4]``
    tensor; arrays of the same shape are ``[n, k]`` (``[n, k, m]``...); scalars ``[n]``.
    The datatype is inferred (``BOOL``, ``INT64``, ``FP64`` or ``BYTES`` for strings)
    unless configured. Items that make no such tensor (objects with nested values,
    arrays of different lengths, numbers mixed with strings) travel as a ``BYTES``
    tensor ``[n]`` of their JSON text. With ``inputs=columns`` object items become one
    ``[n]`` tensor per column instead, named after it (MLServer's and KServe's ``pd``
    codec, with ``content_type=pd``). The answer's first output (or the one named by
    ``output``) is split along its first dimension into ``n`` predictions, and a
    prediction holding a single value (a ``[n, 1]`` output) reads as that value.

``openai`` (:mod:`~consumer.protocols.openai`)
    One item per request: the item is the body of an OpenAI-compatible request (chat
    completions, completions, embeddings), or an OpenAI Batch line whose ``body`` it is;
    the answer object is the prediction. Its codec also chooses the URL among the
    endpoint's configured paths (:func:`route`), by the item's ``url``.

Per-endpoint options (:class:`CodecOptions` in :mod:`~consumer.protocols.options`, parsed
from ``KEY=VALUE`` text by :func:`codec_options`): ``rows``, ``columns`` and ``unwrap`` for
every protocol; ``inputs``, ``datatype``, ``content_type``, ``input_name`` and ``output``
for ``v2``; ``v1_key`` for ``v1``; ``paths`` for ``openai``. docs/contract.md has the
mapping with worked examples.
:mod:`~consumer.protocols.shaping` turns items into rows, columns and tensors.

Items the options cannot shape (an object missing a stated column, a string where the
configured datatype wants numbers) raise :class:`BadItem` from ``encode``: no request is
made, and the caller gives the unit's items a ``bad_item`` error saying which item and
why. A response that cannot be turned into exactly one prediction per item raises
:class:`BadResponse` (:mod:`~consumer.protocols.codec` has the interface and its errors).
The dispatcher reports it as a ``bad_response``, which :mod:`consumer.retry` retries
within its attempt and time budget: a body of the wrong shape usually comes from a proxy,
a load balancer or a restarting server. Its subclass :class:`WrongCount`, a well-formed
answer with another number of predictions than items, is the model's deterministic
answer to this input: a ``wrong_count``, never retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from consumer.protocols.codec import BadItem, BadResponse, Codec, JSONText, WrongCount
from consumer.protocols.openai import OPENAI_PATHS, OpenAICodec
from consumer.protocols.options import (
    DEFAULT_OPTIONS,
    OPTION_NAMES,
    PROTOCOLS,
    V2_DATATYPES,
    CodecOptions,
    ProtocolName,
    check_applies,
    codec_options,
)
from consumer.protocols.raw import RawCodec
from consumer.protocols.v1 import V1Codec
from consumer.protocols.v2 import V2Codec

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_OPTIONS",
    "ONE_ITEM_PROTOCOLS",
    "OPENAI_PATHS",
    "OPTION_NAMES",
    "PROTOCOLS",
    "V2_DATATYPES",
    "BadItem",
    "BadResponse",
    "Codec",
    "CodecOptions",
    "JSONText",
    "OpenAICodec",
    "ProtocolName",
    "RawCodec",
    "V1Codec",
    "V2Codec",
    "WrongCount",
    "codec_options",
    "get_codec",
    "route",
    "routes",
]

ONE_ITEM_PROTOCOLS: Final[frozenset[ProtocolName]] = frozenset({"openai"})
"""Protocols whose APIs take one item per request, whatever ``items_per_request`` says."""


def get_codec(name: ProtocolName, options: CodecOptions = DEFAULT_OPTIONS) -> Codec:
    """Return the codec for protocol ``name``, shaping items and answers as ``options`` say.

    Options that do not apply to ``name`` (a ``v2`` datatype for ``v1``, say) are a
    :class:`ValueError`, as :func:`codec_options` reports them.
    """
    if name not in PROTOCOLS:  # names come from configuration, unchecked until here
        choices = ", ".join(PROTOCOLS)
        raise ValueError(f"unknown inference protocol {name!r} (choose from {choices})")
    check_applies(name, options)
    if name == "v2":
        return V2Codec(options)
    if name == "openai":
        return OpenAICodec(options)
    return RawCodec(options) if name == "raw" else V1Codec(options)


def routes(codec: Codec) -> bool:
    """Whether ``codec`` chooses the URL of each request (:func:`route`), else the endpoint's."""
    return isinstance(codec, OpenAICodec)


def route(codec: Codec, endpoint_url: str, items: Sequence[JSONText]) -> str:
    """Return the URL ``items`` are posted to: the endpoint's, or one its codec chooses.

    Only the ``openai`` codec chooses, among the endpoint's configured paths; it raises
    :class:`BadItem` for an item whose ``url`` names none of them.
    """
    if isinstance(codec, OpenAICodec):
        return codec.route(endpoint_url, items)
    return endpoint_url
