"""One first-in first-out lock per key (a channel), created on first use and dropped when nobody holds it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType


class Reservation:
    """A place in a key's queue, taken at once (`KeyedLock.reserve`) and held later (`async with`).

    A message takes its place when it arrives, then does slow work (writing it to the inbox) before it needs
    the lock: places are served in the order they were taken, whatever order that work finishes in. A place
    that is never held must be released (`release`), or the key's queue stops behind it.
    """

    def __init__(self, locks: KeyedLock, key: str, turn: asyncio.Future[None]) -> None:
        self._locks = locks
        self._key = key
        self._turn = turn
        self._released = False

    async def __aenter__(self) -> None:
        try:
            await asyncio.shield(self._turn)
        except BaseException:
            self.release()
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        """Give the place up (held or not); the next in the queue goes on. Idempotent."""
        if not self._released:
            self._released = True
            self._locks._release(self._key, self._turn)


class KeyedLock:
    """`async with locks.hold(key)`: one holder per key at a time, waiters served in arrival order.

    `reserve(key)` takes a place in the queue without waiting, to be held later. Entries live only while
    someone holds or waits for them, so a bot in many channels keeps no lock per idle channel.
    """

    def __init__(self) -> None:
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}

    def reserve(self, key: str) -> Reservation:
        queue = self._queues.setdefault(key, deque())
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        if len(queue) == 1:
            turn.set_result(None)
        return Reservation(self, key, turn)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        async with self.reserve(key):
            yield

    def _release(self, key: str, turn: asyncio.Future[None]) -> None:
        queue = self._queues[key]
        was_first = queue[0] is turn
        queue.remove(turn)
        if not queue:
            del self._queues[key]
        elif was_first and not queue[0].done():
            queue[0].set_result(None)

    def __len__(self) -> int:
        """How many keys are held or waited for."""
        return len(self._queues)
