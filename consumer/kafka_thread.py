"""One daemon thread for every call on a librdkafka consumer, in order."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


class ConsumerThread(concurrent.futures.Executor):
    """Runs every call on one daemon thread, in submission order.

    A daemon, unlike a ``ThreadPoolExecutor`` worker: if librdkafka ever blocks longer
    than the replica is willing to wait (a close against a vanished cluster), the
    process can still exit instead of hanging in the interpreter's exit hooks.
    """

    def __init__(self, name: str) -> None:
        """Start the thread."""
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], object], concurrent.futures.Future[object]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(  # type: ignore[override] # one positional callable is all this takes
        self,
        fn: Callable[[], T],
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn`` and return the future of its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, future))  # type: ignore[arg-type] # stored untyped, typed out
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:  # noqa: FBT001, FBT002 - the Executor signature
        """Stop the thread after the queued calls (waits only if ``wait``)."""
        del cancel_futures
        self._jobs.put(None)
        if wait:
            self._thread.join()
