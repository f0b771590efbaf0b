"""The database's health while the bot runs: a cheap probe every `storage.check_seconds`, for readiness.

Each probe is the store's `check`: for SQLite, that the file at the path is still the file opened (not
deleted, replaced or overwritten); then `SELECT 1` and a row written and deleted in one committed transaction.
A failed probe makes `/healthz` answer 503 with the reason (`storage: ...`); the next good one makes it 200
again. A SQLite file deleted or replaced under the bot stays failed: the store refuses all work until a
restart.
"""

from __future__ import annotations

import asyncio
import logging

from bot.errors import first_line
from bot.ops.readiness import readiness
from storage import HistoryStore

logger = logging.getLogger(__name__)

STORAGE = "storage"
CHECK_TIMEOUT_SECONDS = 5.0
"""A probe not answered this fast counts as failed (a database that hangs is not healthy either)."""


async def check_storage(store: HistoryStore, limit: float = CHECK_TIMEOUT_SECONDS) -> str | None:
    """One probe: None if the database can be read and written, else why not (one line)."""
    try:
        async with asyncio.timeout(limit):
            await store.check()
    except TimeoutError:
        return f"the database did not answer within {limit:g}s"
    except Exception as exc:
        return first_line(exc).removeprefix("storage: ")
    return None


async def watch_storage(store: HistoryStore, interval: float, limit: float = CHECK_TIMEOUT_SECONDS) -> None:
    """Probe the database every `interval` seconds; report it as the `storage` component, until cancelled."""
    while True:
        problem = await check_storage(store, limit)
        if problem is None:
            readiness.ready(STORAGE)
        else:
            readiness.not_ready(STORAGE, problem)
        await asyncio.sleep(interval)
