"""A blocking producer in a thread, its results handed to the event loop through a bounded queue.

Invariant: the producer is never more than `depth` results ahead of the consumer, and it stops
(at its next hand-over) as soon as the consumer leaves, whether the consumer finished, failed
or was cancelled. `tasks.audio.prepare.stream_chunks` uses it so that requests leave while a long file
is still decoding, and decoding waits when requests fall behind (memory and disk stay bounded).
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
_END = object()
_POLL_S = 0.1  # how often a producer waiting for room checks whether the consumer left


class ConsumerLeft(Exception):
    """Raised inside the producer's hand-over when nobody will take its results any more."""


class Handoff(Generic[Item, Result]):
    """The consumer's side: `await next_item()` until it returns None, then `result`."""

    def __init__(self, depth: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._room = threading.Semaphore(max(1, depth))
        self._left = threading.Event()
        self._future: asyncio.Future[Result] | None = None

    def put(self, item: Item) -> None:
        """Called by the producer thread: blocks while `depth` results wait to be taken."""
        while not self._room.acquire(timeout=_POLL_S):
            if self._left.is_set():
                raise ConsumerLeft()
        if self._left.is_set():
            raise ConsumerLeft()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def next_item(self) -> Item | None:
        """The next result, or None when the producer has finished (its errors are raised)."""
        entry = await self._queue.get()
        if entry is _END:
            self._queue.put_nowait(_END)  # every later call also sees the end
            assert self._future is not None
            # The producer's exception, if it failed. Shielded: a consumer cancelled while it
            # waits here (a task group stopping on a failed request) must not cancel the
            # producer's future, whose clean-up awaits it on the way out.
            await asyncio.shield(self._future)
            return None
        self._room.release()
        return entry  # type: ignore[return-value]

    @property
    def result(self) -> Result:
        """What the producer returned (after `next_item` gave None)."""
        assert self._future is not None and self._future.done()
        return self._future.result()

    def _start(self, produce: Callable[[Callable[[Item], None]], Result]) -> None:
        def run() -> Result:
            try:
                return produce(self.put)
            finally:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, _END)

        self._future = asyncio.ensure_future(asyncio.to_thread(run))

    async def _stop(self) -> None:
        self._left.set()
        assert self._future is not None
        try:
            await asyncio.shield(self._future)
        except (ConsumerLeft, Exception):  # noqa: BLE001 - the consumer's own error matters more
            pass


class Produced(Generic[Item, Result]):
    """A `Handoff` whose producer already ran to its end, here on the event loop: the same
    `next_item` and `result`. For work too small to be worth a thread (a short clip): handing
    it to a thread and back cost more than the work, and PyAV holds the GIL while it decodes,
    so the loop was no freer meanwhile."""

    def __init__(self, produce: Callable[[Callable[[Item], None]], Result]) -> None:
        self._items: list[Item] = []
        self.result = produce(self._items.append)
        self._items.reverse()

    async def next_item(self) -> Item | None:
        return self._items.pop() if self._items else None


HandedOver = Handoff[Item, Result] | Produced[Item, Result]


@asynccontextmanager
async def produced_in_thread(produce: Callable[[Callable[[Item], None]], Result],
                             depth: int = 1) -> AsyncIterator[Handoff[Item, Result]]:
    """Run `produce(put)` in a thread; `put` hands one result over, waiting for room.

    On leaving the block the producer is told to stop and awaited, so no thread outlives it."""
    handoff: Handoff[Item, Result] = Handoff(depth)
    handoff._start(produce)
    try:
        yield handoff
    finally:
        await handoff._stop()
