"""Delivery reports of the replica's result records, turned into the writer's events.

Each produced record carries one of these callbacks (librdkafka reports every record); they
run on the event loop (:meth:`~consumer.publisher.Publisher.run` serves the reports). A
unit's items count as done only when all its records are acknowledged, a chunk only when
its results and its summary are; a refused record goes to the listener and leaves its unit
and its chunk never done (:class:`~consumer.writer.RecordWriter` writes the records).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from confluent_kafka import KafkaException

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

    from consumer.chunk import Chunk
    from consumer.publisher import DeliveryCallback
    from consumer.writer import WriterListener


def unit_callback(
    listener: WriterListener,
    chunk: Chunk,
    start: int,
    count: int,
    errors: tuple[int, tuple[int, int]],
) -> DeliveryCallback:
    """Report the unit's results; once all are acknowledged, its items are done.

    ``errors``: how many results are errors, and of those how many (cancelled, expired).

    One callback serves the unit's records. Per record it counts down and checks the
    error; the unit's and the chunk's bookkeeping happen once, at its last report. A
    refused record goes to the listener, and its unit stays unacknowledged: neither
    the unit's items nor its chunk ever count as done. Where the records landed is taken
    from the unit's first and last reports: they are produced together to one
    partition (one key), whose reports come in the order the records were produced.
    """
    left = count
    refused = False
    first: Message | None = None

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        nonlocal left, refused, first
        left -= 1
        if err is not None:
            refused = True
            listener.delivery_failed(KafkaException(err))
        elif first is None:
            first = msg
        if left or refused or first is None:
            return
        chunk.unacked -= count
        chunk.acked(start, start + count, *errors)
        chunk.landed(first.partition(), first.offset())
        if msg is not first:
            chunk.landed(msg.partition(), msg.offset())
        if chunk.unacked == 0 and chunk.summary_sent:
            listener.chunk_delivered(chunk)

    return on_delivery


def record_callback(
    listener: WriterListener, chunk: Chunk, start: int, errors: tuple[int, tuple[int, int]]
) -> DeliveryCallback:
    """:func:`unit_callback` of a unit of one record: its one report is its last."""

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # stays unacknowledged: the chunk is never done
            listener.delivery_failed(KafkaException(err))
            return
        chunk.unacked -= 1
        chunk.acked(start, start + 1, *errors)
        chunk.landed(msg.partition(), msg.offset())
        if chunk.unacked == 0 and chunk.summary_sent:
            listener.chunk_delivered(chunk)

    return on_delivery


def summary_callback(listener: WriterListener, chunk: Chunk) -> DeliveryCallback:
    """Report a chunk's summary: once it and every result are acknowledged, the chunk is."""

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # stays unacknowledged: the chunk is never done
            listener.delivery_failed(KafkaException(err))
        else:
            chunk.unacked -= 1
            chunk.landed(msg.partition(), msg.offset())
            if chunk.unacked == 0 and chunk.summary_sent:
                listener.chunk_delivered(chunk)

    return on_delivery


def ok_record_delivered(
    listener: WriterListener, chunk: Chunk, start: int, err: KafkaError | None, msg: Message
) -> None:
    """:func:`record_callback`'s report of one ``ok`` record of a one-item unit.

    Bound with ``functools.partial`` (no closure made per record): ``partial(
    ok_record_delivered, listener, chunk, start)`` is the record's ``on_delivery``.
    """
    if err is not None:  # stays unacknowledged: the chunk is never done
        listener.delivery_failed(KafkaException(err))
        return
    chunk.unacked -= 1
    # chunk.acked(start, start + 1) and chunk.landed(...) inline: once per record (the
    # item joins chunk.done's ranges when they are read).
    chunk.acked_ones.append(start)
    chunk.acked_ok += 1
    partition, offset = msg.partition(), msg.offset()
    if partition is not None and offset is not None and offset >= 0:
        chunk.results_partition = partition
        first, last = chunk.first_offset, chunk.last_offset
        if first is None or offset < first:
            chunk.first_offset = offset
        if last is None or offset > last:
            chunk.last_offset = offset
    if chunk.unacked == 0 and chunk.summary_sent:
        listener.chunk_delivered(chunk)
