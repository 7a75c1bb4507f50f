"""What every codec is: the :class:`Codec` interface, its errors, and what the codecs share.

``encode`` raises :class:`BadItem` for items the endpoint's options cannot shape (no
request is made); ``decode`` raises :class:`BadResponse` for an answer that does not hold
exactly one prediction per item, and its subclass :class:`WrongCount` when the answer is
well formed but holds another number of predictions. The dispatcher turns them into the
error kinds ``bad_item``, ``bad_response`` and ``wrong_count``; :mod:`consumer.retry`
retries a ``bad_response`` and neither of the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from consumer.protocols.options import ProtocolName

JSONText: TypeAlias = bytes | msgspec.Raw
"""The exact JSON text of one value."""

JSON_CONTENT_TYPE: Final = "application/json"


class BadResponse(Exception):  # noqa: N818 - names what went wrong, as the other errors here do
    """The inference API answered, but not with one prediction per item.

    Raised for bodies that are not JSON, lack the protocol's predictions field, carry
    the wrong number of predictions, or (``v2``) a tensor whose shape does not fit its
    data. The message says which. The dispatcher reports it as ``bad_response``, which
    the retry policy retries (such a body usually comes from a proxy, a load balancer or
    a restarting server), except a :class:`WrongCount`.
    """


class WrongCount(BadResponse):
    """A well-formed answer with a different number of predictions than items (permanent)."""


class BadItem(ValueError):  # noqa: N818 - the error kind results carry is ``bad_item``
    """The items cannot be shaped as the endpoint's codec options ask (permanent).

    Raised by ``encode`` before any request is made: an object missing a stated column,
    objects whose keys differ when rows were asked for, a value the configured ``v2``
    datatype cannot hold. The message names the item by its position in the request.
    """


class Codec(Protocol):
    """How one protocol shapes a request body and reads predictions out of the answer."""

    @property
    def name(self) -> ProtocolName:
        """The protocol's name, as configured."""
        ...

    @property
    def content_type(self) -> str:
        """The request's ``Content-Type``."""
        ...

    def encode(self, items: Sequence[JSONText]) -> bytes:
        """Return the request body for ``items`` (at least one).

        Raises :class:`BadItem` if the items cannot be shaped as the options ask.
        """
        ...

    def decode(self, body: bytes, count: int) -> list[bytes]:
        """Return the JSON text of each of the ``count`` predictions in ``body``, in order.

        Raises :class:`BadResponse` if ``body`` does not hold exactly ``count`` of them.
        """
        ...


def require_items(items: Sequence[JSONText]) -> None:
    """Refuse an empty request (a :class:`ValueError`: the caller's bug, not the items')."""
    if not items:
        raise ValueError("a request needs at least one item")


def wrong_count(count: int, got: int) -> BadResponse:
    """Return the error for an answer with ``got`` predictions where ``count`` were due."""
    return WrongCount(f"expected {count} predictions, got {got}")


def describe(exc: msgspec.MsgspecError) -> str:
    """Say what was wrong with a response body msgspec could not read."""
    if isinstance(exc, msgspec.ValidationError):
        return f"unexpected response shape: {exc}"
    return f"response is not valid JSON: {exc}"


# Decoders and the encoder the codecs share (msgspec's are safe to reuse).
raw_value: Final = msgspec.json.Decoder(msgspec.Raw)
raw_list: Final = msgspec.json.Decoder(list[msgspec.Raw])
raw_object: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
any_value: Final = msgspec.json.Decoder()
encoder: Final = msgspec.json.Encoder()
