"""Which schema revision a database is at, and upgrading it with the Alembic migrations in storage/migrations.

Start-up never changes an existing database behind the operator's back: an empty database (a fresh SQLite
file, an empty PostgreSQL database) gets the current schema at once, so the embedded default needs no
set-up, but a database at an older or newer revision is refused with one line naming what to run.

A database made by dialobot 0.1.0 has the tables of revision 0001 but no `alembic_version` table (0.1.0 used
`create_all`); it counts as revision 0001, and `dialobot db upgrade` stamps it so before upgrading.

Several bot processes may start against one PostgreSQL database together: checking and creating the schema
happen in one transaction under a PostgreSQL advisory lock, so exactly one of them creates it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import DialobotError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"
FIRST_RELEASE_TABLES = frozenset({"messages", "processed_events"})
"""The tables dialobot 0.1.0 created: their presence without `alembic_version` means revision 0001."""
VERSION_TABLE = "alembic_version"
_PG_LOCK_KEY = 0x6469616C6F626F74  # "dialobot": serialises schema changes between processes


class SchemaMismatchError(DialobotError):
    """The database's schema is not the one this dialobot expects; the message says what to run."""


class SchemaStatus(StrEnum):
    EMPTY = "empty"  # none of dialobot's tables: the current schema can be created
    CURRENT = "current"
    OLDER = "older"  # `dialobot db upgrade` brings it up to date
    NEWER = "newer"  # made by a later dialobot: upgrade dialobot, never downgrade data
    FOREIGN = "foreign"  # some of our table names without a known revision: not touched


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None
    """The database's revision (FIRST_REVISION for a 0.1.0 database); None when there is none."""
    expected: str
    status: SchemaStatus
    stamped: bool = True
    """False for a 0.1.0 database: it has revision 0001's tables but no `alembic_version` table."""

    def describe(self) -> str:
        """One line for the operator: where the database is and what to do about it."""
        match self.status:
            case SchemaStatus.CURRENT:
                return f"database schema is at revision {self.current} (current)"
            case SchemaStatus.EMPTY:
                return f"database is empty; the schema (revision {self.expected}) is created on first start"
            case SchemaStatus.OLDER if not self.stamped:
                return (
                    "database was made by dialobot 0.1.0 and has no schema revision yet: "
                    "back up the database, then run `dialobot db upgrade`"
                )
            case SchemaStatus.OLDER:
                return (
                    f"database schema is at revision {self.current}, this dialobot needs {self.expected}: "
                    "back up the database, then run `dialobot db upgrade`"
                )
            case SchemaStatus.NEWER:
                return (
                    f"database schema is at revision {self.current}, newer than this dialobot knows "
                    f"({self.expected}): upgrade dialobot to the version that wrote it"
                )
            case SchemaStatus.FOREIGN:
                return (
                    "database has some of dialobot's tables but no schema revision: it was not made by "
                    "dialobot; use an empty database"
                )


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration with no alembic.ini: the scripts ship inside this package."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


@cache
def expected_revision() -> str:
    """The newest revision among the migration scripts: what this dialobot's code reads and writes."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revision 0001
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def _lock(connection: Connection) -> None:
    """Hold the schema lock until the transaction ends, so that processes check and migrate one at a time."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # Python's sqlite3 opens transactions lazily; take the write lock now (others wait busy_timeout).
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def inspect_schema(connection: Connection) -> SchemaState:
    """Where the database on `connection` stands relative to this dialobot's migrations."""
    expected = expected_revision()
    tables = set(inspect(connection).get_table_names())
    recorded = None
    if VERSION_TABLE in tables:
        recorded = MigrationContext.configure(connection).get_current_revision()
    current = recorded
    if current is None:
        if tables >= FIRST_RELEASE_TABLES:
            current, status = FIRST_REVISION, SchemaStatus.OLDER
        elif tables & FIRST_RELEASE_TABLES:
            status = SchemaStatus.FOREIGN
        else:
            status = SchemaStatus.EMPTY
    elif current == expected:
        status = SchemaStatus.CURRENT
    elif current in _known_revisions():
        status = SchemaStatus.OLDER
    else:
        status = SchemaStatus.NEWER
    return SchemaState(current=current, expected=expected, status=status, stamped=recorded is not None)


def _upgrade(connection: Connection, state: SchemaState) -> None:
    config = alembic_config(connection)
    if not state.stamped and state.current is not None:
        # A 0.1.0 database: its tables are revision 0001; record that, then migrate from there.
        logger.info("database predates schema revisions; stamping it at revision %s", state.current)
        command.stamp(config, state.current)
    command.upgrade(config, "head")


def prepare_schema(connection: Connection) -> SchemaState:
    """At start-up: create the schema in an empty database; refuse any other mismatch.

    Raises SchemaMismatchError with the one line to show the operator.
    """
    _lock(connection)
    state = inspect_schema(connection)
    if state.status is SchemaStatus.EMPTY:
        _upgrade(connection, state)
        logger.info("created the database schema at revision %s", state.expected)
        return inspect_schema(connection)
    if state.status is not SchemaStatus.CURRENT:
        raise SchemaMismatchError(state.describe())
    return state


def upgrade_schema(connection: Connection) -> tuple[SchemaState, SchemaState]:
    """`dialobot db upgrade`: bring the database to this dialobot's revision; return (before, after)."""
    _lock(connection)
    before = inspect_schema(connection)
    if before.status in (SchemaStatus.NEWER, SchemaStatus.FOREIGN):
        raise SchemaMismatchError(before.describe())
    if before.status is not SchemaStatus.CURRENT:
        _upgrade(connection, before)
    return before, inspect_schema(connection)


async def schema_state(engine: AsyncEngine) -> SchemaState:
    async with engine.connect() as conn:
        return await conn.run_sync(inspect_schema)


async def upgrade(engine: AsyncEngine) -> tuple[SchemaState, SchemaState]:
    async with engine.begin() as conn:
        return await conn.run_sync(upgrade_schema)
