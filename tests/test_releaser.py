"""Exactly-once release order: a message's records reach the producer only in its turn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st

from consumer.releaser import Releaser

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

    from consumer.offsets import PartitionKey
    from consumer.publisher import Headers

P0: PartitionKey = ("requests", 0)
P1: PartitionKey = ("requests", 1)


def _ignore(_err: KafkaError | None, _msg: Message) -> None:
    """Take a delivery report (these tests never deliver)."""


class Sink:
    """Keeps what the releaser produced, in order."""

    def __init__(self) -> None:
        """Start empty."""
        self.values: list[bytes] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None,
        on_delivery: object,
        headers: Headers | None = None,
    ) -> None:
        """Keep the record's value."""
        del topic, key, on_delivery, headers
        self.values.append(value)


def _record(value: bytes) -> tuple[str, bytes, None, object, None]:
    return ("results", value, None, _ignore, None)


def test_a_finished_message_waits_for_every_earlier_one() -> None:
    """Offset 2 finished first is held until 0 and 1 are finished, then all go in order."""
    sink = Sink()
    releaser = Releaser(sink.produce)
    for offset in (0, 1, 2):
        releaser.expect(P0, offset)
        releaser.add(P0, offset, _record(b"%d" % offset))  # type: ignore[arg-type]
    releaser.finish(P0, 2, lambda: True)
    assert sink.values == []
    releaser.finish(P0, 0, lambda: True)
    assert sink.values == [b"0"]
    releaser.finish(P0, 1, lambda: True)
    assert sink.values == [b"0", b"1", b"2"]
    assert releaser.released == {(P0, 0), (P0, 1), (P0, 2)}


def test_partitions_do_not_wait_for_each_other_and_the_gate_holds_everything() -> None:
    """A closed gate holds finished messages of every partition; opening releases them."""
    sink = Sink()
    releaser = Releaser(sink.produce)
    releaser.expect(P0, 5)
    releaser.expect(P1, 9)
    releaser.add(P1, 9, _record(b"p1"))  # type: ignore[arg-type]
    releaser.closed = True
    releaser.finish(P1, 9, lambda: True)
    assert sink.values == []
    releaser.open()
    assert sink.values == [b"p1"]


def test_abandoned_and_dropped_messages_are_never_produced() -> None:
    """A message abandoned meanwhile is skipped; a dropped partition's records are forgotten."""
    sink = Sink()
    releaser = Releaser(sink.produce)
    for offset in (0, 1):
        releaser.expect(P0, offset)
        releaser.add(P0, offset, _record(b"%d" % offset))  # type: ignore[arg-type]
    releaser.finish(P0, 1, lambda: True)
    releaser.finish(P0, 0, lambda: False)
    assert sink.values == [b"1"]
    releaser.expect(P1, 0)
    releaser.add(P1, 0, _record(b"gone"))  # type: ignore[arg-type]
    releaser.drop([P1])
    releaser.finish(P1, 0, lambda: True)
    assert sink.values == [b"1"]


@given(st.permutations(list(range(8))))
def test_any_finishing_order_releases_in_offset_order(order: list[int]) -> None:
    """Whatever order messages finish in, records reach the producer in offset order."""
    sink = Sink()
    releaser = Releaser(sink.produce)
    for offset in range(8):
        releaser.expect(P0, offset)
        releaser.add(P0, offset, _record(b"%d" % offset))  # type: ignore[arg-type]
    for step, offset in enumerate(order):
        releaser.finish(P0, offset, lambda: True)
        finished = set(order[: step + 1])
        prefix = next((o for o in range(8) if o not in finished), 8)
        assert sink.values == [b"%d" % o for o in range(prefix)]
