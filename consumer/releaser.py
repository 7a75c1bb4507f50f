"""Exactly-once mode: the records of each request message, released in offset order.

:class:`Releaser` holds each request message's records (results and summary, or its dead
letter) until the message is finished *and* every earlier message of its partition has
been released, then hands them to the producer. So a transaction only ever holds the
records of a contiguous run of messages per partition, and committing the done prefix
with it covers every record in it: nothing in a committed transaction is redone by the
next owner, nothing redone was in a committed transaction. Records wait in memory only
while their message counts against ``--max-buffered-items``. The transactions themselves
are :mod:`consumer.transactions`'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from consumer.offsets import PartitionKey
    from consumer.publisher import DeliveryCallback, Headers, Produce

    Record = tuple[str, bytes, bytes | str | None, DeliveryCallback, Headers | None]


@dataclass(slots=True)
class _Slot:
    records: list[Record] = field(default_factory=list)
    alive: Callable[[], bool] | None = None  # set when the message is finished


class Releaser:
    """Records per message, released to the producer in offset order per partition."""

    def __init__(self, produce: Produce) -> None:
        """Release through ``produce`` (the publisher's)."""
        self._produce = produce
        self._slots: dict[PartitionKey, dict[int, _Slot]] = {}
        self.released: set[tuple[PartitionKey, int]] = set()  # released, not done yet
        self.closed = False

    def expect(self, tp: PartitionKey, offset: int) -> None:
        """Note a received message: later offsets of ``tp`` wait for it."""
        self._slots.setdefault(tp, {})[offset] = _Slot()

    def add(self, tp: PartitionKey, offset: int, record: Record) -> None:
        """Hold one record of the message at ``offset``."""
        self._slots[tp][offset].records.append(record)

    def finish(self, tp: PartitionKey, offset: int, alive: Callable[[], bool]) -> None:
        """Mark the message complete: release it in its turn, if ``alive()`` then."""
        slots = self._slots.get(tp)
        if slots is not None and offset in slots:
            slots[offset].alive = alive
            self._pump(tp)

    def done(self, tp: PartitionKey, offset: int) -> None:
        """Every released record of the message is acknowledged and its offset done."""
        self.released.discard((tp, offset))

    def drop(self, tps: Iterable[PartitionKey]) -> None:
        """Forget what was not released for ``tps`` (never produced: the next owner redoes it)."""
        for tp in tps:
            self._slots.pop(tp, None)

    def open(self) -> None:
        """Open the gate and release what waited."""
        self.closed = False
        for tp in list(self._slots):
            self._pump(tp)

    @property
    def held(self) -> int:
        """How many records wait to be released."""
        return sum(len(s.records) for slots in self._slots.values() for s in slots.values())

    def _pump(self, tp: PartitionKey) -> None:
        slots = self._slots.get(tp)
        while slots and not self.closed:
            offset, slot = next(iter(slots.items()))
            if slot.alive is None:
                return
            del slots[offset]
            if not slot.alive():
                continue  # abandoned: its partition is going, the next owner redoes it
            self.released.add((tp, offset))
            for topic, value, key, on_delivery, headers in slot.records:
                self._produce(topic, value, key, on_delivery, headers)
