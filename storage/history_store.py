"""The history store: load a channel's recent turns, append a finished exchange, reset a channel.

SQLite (through aiosqlite, so the event loop never waits on disk) is the default; any SQLAlchemy async URL
works. SQLite runs in WAL mode with a busy timeout so that readers never block the writer and concurrent
writers wait instead of failing with "database is locked".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from storage.schema import MessageRow, ProcessedEventRow
from storage.schema_version import prepare_schema

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000


class Role(StrEnum):
    USER = "user"
    BOT = "bot"


@dataclass(frozen=True, slots=True)
class NewTurn:
    role: Role
    author_id: str
    text: str


@dataclass(frozen=True, slots=True)
class StoredTurn:
    role: Role
    author_id: str
    text: str
    created_at: datetime


class HistoryStore(Protocol):
    """What the engine needs from persistence, and nothing more."""

    async def recent_turns(self, channel_key: str, limit: int) -> list[StoredTurn]:
        """The channel's last `limit` turns, oldest first."""

    async def append_turns(self, channel_key: str, turns: Sequence[NewTurn]) -> None:
        """Store `turns` in one transaction: all of them or none."""

    async def reset_channel(self, channel_key: str) -> int:
        """Delete the channel's history; return how many turns were deleted."""

    async def count_turns(self, channel_key: str) -> int: ...

    async def claim_event(self, event_key: str) -> bool:
        """Record a platform event id; False if it was already recorded (a re-delivery)."""

    async def close(self) -> None: ...


class SqlHistoryStore:
    """`HistoryStore` on SQLAlchemy's async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        """The database URL with any password hidden, for logs and `status`."""
        return self._engine.url.render_as_string(hide_password=True)

    async def recent_turns(self, channel_key: str, limit: int) -> list[StoredTurn]:
        if limit <= 0:
            return []
        query = (
            select(MessageRow)
            .where(MessageRow.channel_key == channel_key)
            .order_by(MessageRow.id.desc())
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [StoredTurn(Role(r.role), r.author_id, r.text, r.created_at) for r in reversed(rows)]

    async def append_turns(self, channel_key: str, turns: Sequence[NewTurn]) -> None:
        async with self._sessions.begin() as session:
            session.add_all(
                MessageRow(channel_key=channel_key, role=t.role.value, author_id=t.author_id, text=t.text)
                for t in turns
            )

    async def reset_channel(self, channel_key: str) -> int:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(MessageRow).where(MessageRow.channel_key == channel_key))
        return result.rowcount or 0

    async def count_turns(self, channel_key: str) -> int:
        query = select(func.count()).select_from(MessageRow).where(MessageRow.channel_key == channel_key)
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def claim_event(self, event_key: str) -> bool:
        try:
            async with self._sessions.begin() as session:
                session.add(ProcessedEventRow(event_key=event_key))
        except IntegrityError:
            return False
        return True

    async def close(self) -> None:
        await self._engine.dispose()


def _configure_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _make_parent_dir(database: str) -> None:
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


async def connect(url: str) -> AsyncEngine:
    """An async engine for `url`; for SQLite, the file's directory is created and WAL mode is set."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            await asyncio.to_thread(_make_parent_dir, parsed.database)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
    else:
        engine = create_async_engine(url, pool_pre_ping=True)
    return engine


async def open_store(url: str) -> SqlHistoryStore:
    """Connect to `url` and check its schema revision: an empty database gets the current schema, a database
    at another revision raises `SchemaMismatchError` (the message names `dialobot db upgrade`)."""
    engine = await connect(url)
    try:
        async with engine.begin() as conn:
            state = await conn.run_sync(prepare_schema)
    except BaseException:
        await engine.dispose()
        raise
    store = SqlHistoryStore(engine)
    logger.info("history store ready at %s (schema revision %s)", store.url, state.current)
    return store
