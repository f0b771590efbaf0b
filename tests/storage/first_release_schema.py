"""The database exactly as dialobot 0.1.0 made it: `create_all` on its two tables, no alembic_version table.

A frozen copy of 0.1.0's models on their own MetaData, so that later changes to storage/schema.py never
change what "a database made by the first release" means in the upgrade tests.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel_key", String(255), nullable=False),
    Column("role", String(8), nullable=False),
    Column("author_id", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_messages_channel_id", "channel_key", "id"),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("event_key", String(255), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


async def create_first_release_database(engine: AsyncEngine) -> None:
    """What `open_store` did in 0.1.0: `Base.metadata.create_all`, nothing else."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
