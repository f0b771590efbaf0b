"""One first-in first-out lock per key (a channel), created on first use and dropped when nobody holds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class KeyedLock:
    """`async with locks.hold(key)`: one holder per key at a time, waiters served in arrival order.

    asyncio.Lock wakes waiters first-in first-out, which is what keeps a channel's messages in order. Entries
    live only while someone holds or waits for them, so a bot in many channels keeps no lock per idle channel.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.setdefault(key, _Entry())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]

    def __len__(self) -> int:
        """How many keys are held or waited for."""
        return len(self._entries)
