"""Alembic's environment for dialobot: migrations run on a connection handed over by the caller.

dialobot runs Alembic programmatically (there is no alembic.ini): `storage.schema_version` opens an async
engine, and inside `AsyncConnection.run_sync` puts the synchronous connection into
`config.attributes["connection"]`. The caller's transaction is reused, so on PostgreSQL an upgrade is one
transaction (DDL is transactional there) and is serialised across processes by an advisory lock.
"""

from __future__ import annotations

from alembic import context

from storage.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("dialobot migrations run through `dialobot db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
