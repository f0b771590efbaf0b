"""The history store: load a channel's recent turns, append a finished exchange, reset a channel.

SQLite (through aiosqlite, so the event loop never waits on disk) is the default; any SQLAlchemy async URL
works. SQLite runs in WAL mode with a busy timeout so that readers never block the writer and concurrent
writers wait instead of failing with "database is locked".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import aliased

from storage.schema import AuditRow, InboxRow, MessageRow, ProcessedEventRow, utcnow
from storage.schema_version import prepare_schema
from storage.types import AuditEntry, AuditRecord, InboxEntry, InboxState, NewTurn, Role, StoredTurn

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
DELETE_CHUNK = 500
"""Ids per `DELETE ... IN (...)`: far below SQLite's bound-parameter limit."""


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
            await self._add_turns(session, channel_key, turns)

    async def _add_turns(self, session: AsyncSession, channel_key: str, turns: Sequence[NewTurn]) -> None:
        if not turns:
            return
        if self._engine.dialect.name == "postgresql":
            # Bot processes sharing one database (README "Scaling out") may store exchanges for one
            # channel at the same moment; a lock per channel until commit keeps each exchange's rows
            # next to each other in the channel, which `delete_user_turns` pairs on. (SQLite has one
            # writer at a time already.)
            await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(channel_key))))
        session.add_all(
            MessageRow(channel_key=channel_key, role=t.role.value, author_id=t.author_id, text=t.text)
            for t in turns
        )

    async def receive(
        self, platform: str, platform_id: str, channel_key: str, author_id: str, message: str
    ) -> int | None:
        row = InboxRow(
            platform=platform,
            platform_id=platform_id,
            channel_key=channel_key,
            author_id=author_id,
            message=message,
            state=InboxState.RECEIVED.value,
            reply_ids="",
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            return None
        return row.id

    async def finish(
        self,
        inbox_id: int,
        state: InboxState,
        reply_ids: Sequence[str] = (),
        channel_key: str = "",
        turns: Sequence[NewTurn] = (),
    ) -> None:
        async with self._sessions.begin() as session:
            await self._add_turns(session, channel_key, turns)
            await session.execute(
                update(InboxRow)
                .where(InboxRow.id == inbox_id)
                .values(state=state.value, reply_ids=" ".join(reply_ids), finished_at=utcnow())
            )

    async def unanswered(self, platform: str) -> list[InboxEntry]:
        query = (
            select(InboxRow)
            .where(InboxRow.state == InboxState.RECEIVED.value, InboxRow.platform == platform)
            .order_by(InboxRow.id)
        )
        async with self._sessions() as session:
            return [_entry(r) for r in (await session.scalars(query)).all()]

    async def inbox_entries(self, limit: int = 100) -> list[InboxEntry]:
        query = select(InboxRow).order_by(InboxRow.id.desc()).limit(limit)
        async with self._sessions() as session:
            return [_entry(r) for r in (await session.scalars(query)).all()]

    async def reset_channel(self, channel_key: str, audit: AuditRecord | None = None) -> int:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(MessageRow).where(MessageRow.channel_key == channel_key))
            deleted = _rowcount(result)
            _add_audit(session, audit, f"{deleted} turns deleted")
        return deleted

    async def delete_user_turns(self, platform: str, author_id: str, audit: AuditRecord | None = None) -> int:
        asked, reply = aliased(MessageRow), aliased(MessageRow)
        # The reply to a user turn is the channel's next turn, if that is the bot's: the engine holds the
        # channel's lock from reading history to storing the exchange, so a channel's exchanges are stored one
        # after another; a user turn stored alone (no reply could be generated) is followed by another user
        # turn, and so claims no reply.
        next_id = (
            select(func.min(MessageRow.id))
            .where(MessageRow.channel_key == asked.channel_key, MessageRow.id > asked.id)
            .correlate(asked)
            .scalar_subquery()
        )
        reply_id = (
            select(reply.id)
            .where(reply.id == next_id, reply.role == Role.BOT.value)
            .correlate(asked)
            .scalar_subquery()
        )
        query = select(asked.id, reply_id).where(
            asked.author_id == author_id,
            asked.role == Role.USER.value,
            asked.channel_key.startswith(f"{platform}:", autoescape=True),
        )
        async with self._sessions.begin() as session:
            ids = sorted({i for row in (await session.execute(query)).all() for i in row if i is not None})
            for start in range(0, len(ids), DELETE_CHUNK):
                chunk = ids[start : start + DELETE_CHUNK]
                await session.execute(delete(MessageRow).where(MessageRow.id.in_(chunk)))
            _add_audit(session, audit, f"{len(ids)} turns deleted")
        return len(ids)

    async def delete_turns_before(self, cutoff: datetime, audit: AuditRecord | None = None) -> int:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(MessageRow).where(MessageRow.created_at < cutoff))
            deleted = _rowcount(result)
            if deleted:
                _add_audit(session, audit, f"{deleted} turns deleted")
        return deleted

    async def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [AuditEntry(r.at, r.actor, r.action, r.target, r.detail) for r in rows]

    async def count_turns(self, channel_key: str) -> int:
        query = select(func.count()).select_from(MessageRow).where(MessageRow.channel_key == channel_key)
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def total_turns(self) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(MessageRow)) or 0)

    async def claim_event(self, event_key: str) -> bool:
        try:
            async with self._sessions.begin() as session:
                session.add(ProcessedEventRow(event_key=event_key))
        except IntegrityError:
            return False
        return True

    async def close(self) -> None:
        await self._engine.dispose()


def _entry(row: InboxRow) -> InboxEntry:
    received = row.received_at
    if received.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        received = received.replace(tzinfo=UTC)
    return InboxEntry(
        id=row.id,
        platform=row.platform,
        platform_id=row.platform_id,
        channel_key=row.channel_key,
        author_id=row.author_id,
        message=row.message,
        state=InboxState(row.state),
        received_at=received,
        reply_ids=tuple(row.reply_ids.split()),
    )


def _rowcount(result: Any) -> int:
    """Rows a DELETE touched (a `CursorResult`'s count; the async session types it as a plain `Result`)."""
    return int(result.rowcount or 0)


def _add_audit(session: AsyncSession, audit: AuditRecord | None, outcome: str) -> None:
    if audit is not None:
        detail = f"{audit.detail}; {outcome}" if audit.detail else outcome
        session.add(AuditRow(actor=audit.actor, action=audit.action, target=audit.target, detail=detail))
        logger.info("audit: %s by %s on %s: %s", audit.action, audit.actor, audit.target, detail)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """`PRAGMA journal_mode=WAL`, retried: the switch needs a moment of exclusive access to a new database,
    and SQLite reports "database is locked" at once instead of waiting its busy timeout when several
    processes open that database together (seen in CI). WAL is then stored in the file, so this is rare."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError, wrapped differently by each adapter
            if "database is locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
