"""The history store: load a channel's recent turns, append a finished exchange, reset a channel.

SQLite (through aiosqlite, so the event loop never waits on disk) is the default; any SQLAlchemy async URL
works. SQLite runs in WAL mode with a busy timeout so that readers never block the writer and concurrent
writers wait instead of failing with "database is locked".

A database that cannot be opened (a read-only or missing directory, a directory where the file should be, a
file that is not a database, a refused or wrong login, a malformed URL) is reported as one `StorageError`
line naming the setting and the cause, never a driver's traceback. While running, `check` is the cheap probe
behind `/healthz` (a read and a write), and a SQLite file that is deleted, replaced or overwritten under the
running bot is noticed: the store then refuses every read and write, rather than keep writing into a file
that is gone, until the bot is restarted on a good file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, func, or_, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import aliased

from bot.errors import DialobotError, StorageError, first_line
from storage.schema import AuditRow, InboxRow, MessageRow, ProcessedEventRow, utcnow
from storage.schema_version import prepare_schema
from storage.types import AuditEntry, AuditRecord, InboxEntry, InboxState, NewTurn, Role, StoredTurn

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
DELETE_CHUNK = 500
"""Ids per `DELETE ... IN (...)`: far below SQLite's bound-parameter limit."""
SQLITE_HEADER = b"SQLite format 3\x00"
URL_EXAMPLES = "sqlite+aiosqlite:///path/to/file.db or postgresql+asyncpg://user:password@host/database"


class SqlHistoryStore:
    """`HistoryStore` on SQLAlchemy's async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._file = sqlite_file(engine.url)
        """The SQLite database file, or None (PostgreSQL, an in-memory database)."""
        self._identity = _identity(self._file) if self._file is not None else None
        """(device, inode) of the file when it was opened: a different one at the path is another file."""
        self._broken: str | None = None
        """Why the store refuses all work for good (its file was deleted or replaced), once noticed."""
        self._probe_key = f"dialobot:health-check:{uuid.uuid4().hex}"

    def _usable(self) -> None:
        """Refuse work on a SQLite file that is no longer the one opened (deleted, replaced): raise."""
        if self._broken is None and self._file is not None:
            try:
                now = _identity(self._file)
            except FileNotFoundError:
                now = None
            if now != self._identity:
                what = "deleted" if now is None else "replaced by another file"
                self._fail(f"was {what} while the bot was running")
        if self._broken is not None:
            raise StorageError(self._broken)

    def _fail(self, what: str) -> None:
        self._broken = (
            f"storage: the database file {self._file} {what}; not reading or writing any more "
            "(restore the file, then restart the bot)"
        )
        logger.error("%s", self._broken)

    async def check(self) -> None:
        """The health probe: raise (a one-line message) unless the database can be read and written now.

        Cheap enough to run every few seconds: the file's identity and header, `SELECT 1`, and a row written
        and deleted again in one committed transaction (so a read-only or full disk shows too)."""
        self._usable()
        if self._file is not None:
            try:
                header = await asyncio.to_thread(_read_header, self._file)
            except OSError:
                self._usable()  # deleted meanwhile: say so
                raise
            if header != SQLITE_HEADER:
                self._fail("was overwritten: it is no longer a SQLite database")
                self._usable()
        try:
            async with self._sessions.begin() as session:
                await session.execute(select(1))
                session.add(ProcessedEventRow(event_key=self._probe_key))
                await session.flush()
                await session.execute(
                    delete(ProcessedEventRow).where(ProcessedEventRow.event_key == self._probe_key)
                )
        except Exception as exc:
            raise StorageError(f"storage: {describe_failure(exc, self._engine.url)}") from exc

    @property
    def url(self) -> str:
        """The database URL with any password hidden, for logs and `status`."""
        return self._engine.url.render_as_string(hide_password=True)

    async def recent_turns(self, channel_key: str, limit: int) -> list[StoredTurn]:
        self._usable()
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
        self._usable()
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
        self._usable()
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
        self._usable()
        async with self._sessions.begin() as session:
            await self._add_turns(session, channel_key, turns)
            await session.execute(
                update(InboxRow)
                .where(InboxRow.id == inbox_id)
                .values(state=state.value, reply_ids=" ".join(reply_ids), finished_at=utcnow())
            )

    async def unanswered(self, platform: str) -> list[InboxEntry]:
        self._usable()
        query = (
            select(InboxRow)
            .where(InboxRow.state == InboxState.RECEIVED.value, InboxRow.platform == platform)
            .order_by(InboxRow.id)
        )
        async with self._sessions() as session:
            return [_entry(r) for r in (await session.scalars(query)).all()]

    async def received_since(self, platform: str, since: datetime) -> list[InboxEntry]:
        self._usable()
        query = (
            select(InboxRow)
            .where(InboxRow.platform == platform, InboxRow.received_at >= since)
            .order_by(InboxRow.id)
        )
        async with self._sessions() as session:
            return [_entry(r) for r in (await session.scalars(query)).all()]

    async def inbox_entries(self, limit: int = 100) -> list[InboxEntry]:
        self._usable()
        query = select(InboxRow).order_by(InboxRow.id.desc()).limit(limit)
        async with self._sessions() as session:
            return [_entry(r) for r in (await session.scalars(query)).all()]

    async def reset_channel(self, channel_key: str, audit: AuditRecord | None = None) -> int:
        self._usable()
        async with self._sessions.begin() as session:
            result = await session.execute(delete(MessageRow).where(MessageRow.channel_key == channel_key))
            deleted = _rowcount(result)
            await _scrub_inbox(session, InboxRow.channel_key == channel_key)
            _add_audit(session, audit, f"{deleted} turns deleted")
        return deleted

    async def delete_user_turns(
        self, platform: str, author_id: str, audit: AuditRecord | None = None, within: str | None = None
    ) -> int:
        self._usable()
        scope = (within or platform).rstrip(":")
        if scope != platform and not scope.startswith(f"{platform}:"):
            raise ValueError(f"scope {scope!r} is not a {platform} conversation prefix")
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
            _in_scope(asked.channel_key, scope),
        )
        async with self._sessions.begin() as session:
            ids = sorted({i for row in (await session.execute(query)).all() for i in row if i is not None})
            for start in range(0, len(ids), DELETE_CHUNK):
                chunk = ids[start : start + DELETE_CHUNK]
                await session.execute(delete(MessageRow).where(MessageRow.id.in_(chunk)))
            await _scrub_inbox(
                session, (InboxRow.author_id == author_id) & _in_scope(InboxRow.channel_key, scope)
            )
            _add_audit(session, audit, f"{len(ids)} turns deleted")
        return len(ids)

    async def delete_inbox_before(self, cutoff: datetime) -> int:
        self._usable()
        query = delete(InboxRow).where(
            InboxRow.received_at < cutoff, InboxRow.state != InboxState.RECEIVED.value
        )
        async with self._sessions.begin() as session:
            return _rowcount(await session.execute(query))

    async def delete_turns_before(self, cutoff: datetime, audit: AuditRecord | None = None) -> int:
        self._usable()
        async with self._sessions.begin() as session:
            result = await session.execute(delete(MessageRow).where(MessageRow.created_at < cutoff))
            deleted = _rowcount(result)
            if deleted:
                _add_audit(session, audit, f"{deleted} turns deleted")
        return deleted

    async def record_audit(self, audit: AuditRecord) -> None:
        self._usable()
        async with self._sessions.begin() as session:
            _add_audit(session, audit, "")

    async def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        self._usable()
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [AuditEntry(r.at, r.actor, r.action, r.target, r.detail) for r in rows]

    async def count_turns(self, channel_key: str) -> int:
        self._usable()
        query = select(func.count()).select_from(MessageRow).where(MessageRow.channel_key == channel_key)
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def total_turns(self) -> int:
        self._usable()
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(MessageRow)) or 0)

    async def claim_event(self, event_key: str) -> bool:
        self._usable()
        try:
            async with self._sessions.begin() as session:
                session.add(ProcessedEventRow(event_key=event_key))
        except IntegrityError:
            return False
        return True

    async def close(self) -> None:
        await self._engine.dispose()


def _in_scope(channel_key: Any, scope: str) -> Any:
    """`channel_key` is conversation-key prefix `scope` or lies under it, whole `:`-separated parts only."""
    return or_(channel_key == scope, channel_key.startswith(f"{scope}:", autoescape=True))


PERSONAL_FIELDS = {"text": "", "author_name": None}
"""What an inbox row's message says of a person (what they wrote, their name), and what is left in its place
when their history is deleted. The rest (ids, where to answer) is what refuses a message delivered again."""


async def _scrub_inbox(session: AsyncSession, where: Any) -> None:
    """Blank what people wrote in the inbox rows `where` selects, once answered (or given up): deleting a
    person's history must not leave their words in the inbox. The rows stay, so that a redelivered message
    is still refused; one not answered yet keeps its text, which it is still to be answered from."""
    query = select(InboxRow.id, InboxRow.message).where(where, InboxRow.state != InboxState.RECEIVED.value)
    for row_id, message in (await session.execute(query)).all():
        try:
            data = json.loads(message)
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        scrubbed = {**data, **PERSONAL_FIELDS}
        if scrubbed != data:  # not blanked before
            await session.execute(
                update(InboxRow).where(InboxRow.id == row_id).values(message=json.dumps(scrubbed))
            )


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
        detail = "; ".join(part for part in (audit.detail, outcome) if part)
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


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if url.database.startswith("file:"):  # a URI filename: no plain path to watch
        return None
    return Path(url.database).expanduser().absolute()


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _read_header(path: Path) -> bytes:
    """The first 16 bytes of the file; an empty file (a database not written yet) passes as a header."""
    with open(path, "rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    return header or SQLITE_HEADER


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        # The message of `make_url` repeats the URL, and with it any password: never show it.
        raise StorageError(f"not a database URL (expected {URL_EXAMPLES})") from None


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, the driver error it wraps, and what caused those, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return seen


def describe_failure(exc: BaseException, url: URL) -> str:
    """Why the database at `url` could not be used, in one line without the password."""
    causes = _causes(exc)
    texts = " | ".join(str(c) for c in causes)
    path = sqlite_file(url)
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    for cause in causes:
        if isinstance(cause, StorageError):
            return str(cause)
        if isinstance(cause, NoSuchModuleError | ModuleNotFoundError):
            return f"database driver {url.drivername!r} is not available (expected {URL_EXAMPLES})"
        if type(cause).__name__ == "InvalidPasswordError":
            return f"PostgreSQL at {where} refused the password of user {url.username!r}"
        if type(cause).__name__ == "InvalidCatalogNameError":
            return f"PostgreSQL at {where} has no database {url.database!r}"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the database host {url.host!r}: {cause.strerror or cause}"
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError)
            and (cause.errno == errno.ECONNREFUSED or "Connect call failed" in str(cause))
        ):
            return f"cannot connect to the database at {where}: connection refused"
        if isinstance(cause, PermissionError | NotADirectoryError | FileExistsError) and cause.filename:
            return f"cannot create the database directory {cause.filename}: {cause.strerror}"
    if "async driver" in texts or "is not async" in texts:
        return f"{url.drivername!r} is not an async driver (expected {URL_EXAMPLES})"
    if path is not None:
        if "file is not a database" in texts:
            return f"{path} is not a SQLite database (overwritten, or another kind of file)"
        if path.is_dir():
            return f"{path} is a directory, not a database file"
        if not path.parent.is_dir():
            return f"the database directory {path.parent} does not exist"
        if "readonly database" in texts or "unable to open" in texts:
            if not os.access(path.parent, os.W_OK):
                return f"the database directory {path.parent} is read-only"
            if path.exists() and not os.access(path, os.R_OK | os.W_OK):
                return f"{path} cannot be read and written (permissions)"
        if "readonly database" in texts:
            return f"{path} is read-only"
    if isinstance(exc, TimeoutError):
        return "the database did not answer in time"
    return first_line(causes[-1] if len(causes) > 1 and not str(causes[0]).strip() else causes[0])


@contextlib.asynccontextmanager
async def storage_errors(url: str, setting: str = "storage") -> AsyncIterator[None]:
    """Turn a failure to open or use the database into one `StorageError` line: `<setting>: <cause>`."""
    try:
        yield
    except DialobotError as exc:
        if isinstance(exc, StorageError) and not str(exc).startswith(("storage", setting)):
            raise StorageError(f"{setting}: {exc}") from None
        raise
    except Exception as exc:
        logger.debug("database failure", exc_info=True)
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StorageError(f"{setting}: not a database URL (expected {URL_EXAMPLES})") from None
        raise StorageError(f"{setting}: {describe_failure(exc, parsed)}") from None


async def connect(url: str, setting: str = "storage") -> AsyncEngine:
    """An async engine for `url`; for SQLite, the file's directory is created and WAL mode is set."""
    async with storage_errors(url, setting):
        parsed = _parse_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                await asyncio.to_thread(_make_parent_dir, parsed.database)
            engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            event.listen(engine.sync_engine, "connect", _configure_sqlite)
        else:
            engine = create_async_engine(url, pool_pre_ping=True)
    return engine


async def open_store(url: str, setting: str = "storage") -> SqlHistoryStore:
    """Connect to `url` and check its schema revision: an empty database gets the current schema, a database
    at another revision raises `SchemaMismatchError` (the message names `dialobot db upgrade`).

    Any other failure is one `StorageError` line starting with `setting` (the config key naming the
    database, such as `storage.path`)."""
    engine = await connect(url, setting)
    try:
        async with storage_errors(url, setting), engine.begin() as conn:
            state = await conn.run_sync(prepare_schema)
    except BaseException:
        await engine.dispose()
        raise
    store = SqlHistoryStore(engine)
    logger.info("history store ready at %s (schema revision %s)", store.url, state.current)
    return store
