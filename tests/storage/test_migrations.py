"""Schema revisions: a fresh database is created at the current revision, a 0.1.0 database is upgraded by
`dialobot db upgrade` with every row kept, and start-up refuses any other mismatch with one line."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, select, text

from storage import NewTurn, Role, open_store
from storage.history_store import connect
from storage.schema import Base
from storage.schema_version import (
    FIRST_REVISION,
    SchemaMismatchError,
    SchemaStatus,
    expected_revision,
    schema_state,
    upgrade,
)
from tests.storage.first_release_schema import create_first_release_database, messages, processed_events

ROWS = 250


async def _fill_first_release(engine) -> list[tuple]:
    await create_first_release_database(engine)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [
        {
            "channel_key": f"discord:1:{i % 7}",
            "role": "user" if i % 2 == 0 else "bot",
            "author_id": f"u{i}",
            "text": f"turn {i} héllo 🙂",
            "created_at": when,
        }
        for i in range(ROWS)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(messages), rows)
        await conn.execute(insert(processed_events), [{"event_key": "slack:Ev1", "created_at": when}])
        return [tuple(r) for r in (await conn.execute(select(messages).order_by(messages.c.id))).all()]


async def test_a_fresh_database_is_created_at_the_current_revision(db_url):
    store = await open_store(db_url)
    try:
        state = await schema_state(store._engine)
        assert (state.status, state.current) == (SchemaStatus.CURRENT, expected_revision())
    finally:
        await store.close()


async def test_migrations_build_exactly_the_models_schema(db_url):
    """The migrations and storage/schema.py must agree; a model change without a migration fails here."""
    store = await open_store(db_url)
    try:
        async with store._engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync_conn: compare_metadata(MigrationContext.configure(sync_conn), Base.metadata)
            )
    finally:
        await store.close()
    assert diff == []


async def test_start_up_refuses_a_first_release_database_with_one_line(db_url):
    engine = await connect(db_url)
    await _fill_first_release(engine)
    await engine.dispose()
    with pytest.raises(SchemaMismatchError) as refused:
        await open_store(db_url)
    message = str(refused.value)
    assert "dialobot db upgrade" in message
    assert "\n" not in message


async def test_db_upgrade_adopts_a_first_release_database_and_keeps_every_row(db_url):
    engine = await connect(db_url)
    before_rows = await _fill_first_release(engine)
    before, after = await upgrade(engine)
    assert (before.status, before.current, before.stamped) == (SchemaStatus.OLDER, FIRST_REVISION, False)
    assert (after.status, after.current) == (SchemaStatus.CURRENT, expected_revision())
    async with engine.connect() as conn:
        after_rows = [tuple(r) for r in (await conn.execute(select(messages).order_by(messages.c.id))).all()]
    await engine.dispose()
    assert after_rows == before_rows

    store = await open_store(db_url)  # now accepted, and the old rows are the history
    try:
        assert await store.count_turns("discord:1:0") == len([i for i in range(ROWS) if i % 7 == 0])
        assert [t.text for t in await store.recent_turns("discord:1:3", 1)] == ["turn 248 héllo 🙂"]
        assert await store.claim_event("slack:Ev1") is False  # an answered event stays answered
        await store.append_turns("discord:1:0", [NewTurn(Role.USER, "u", "new")])
        async with store._engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(messages))
        assert total == ROWS + 1
    finally:
        await store.close()


async def test_db_upgrade_twice_changes_nothing(db_url):
    engine = await connect(db_url)
    await _fill_first_release(engine)
    await upgrade(engine)
    before, after = await upgrade(engine)
    await engine.dispose()
    assert before.status is after.status is SchemaStatus.CURRENT


async def test_a_newer_schema_is_refused_by_start_up_and_by_upgrade(db_url):
    store = await open_store(db_url)
    async with store._engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await store.close()
    with pytest.raises(SchemaMismatchError, match="newer than this dialobot") as refused:
        await open_store(db_url)
    assert "\n" not in str(refused.value)
    engine = await connect(db_url)
    try:
        with pytest.raises(SchemaMismatchError, match="upgrade dialobot"):
            await upgrade(engine)
    finally:
        await engine.dispose()


async def test_a_database_with_a_stray_table_of_ours_is_not_touched(db_url):
    engine = await connect(db_url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE messages (id INTEGER PRIMARY KEY, other TEXT)"))
    await engine.dispose()
    with pytest.raises(SchemaMismatchError, match="not made by dialobot"):
        await open_store(db_url)


async def test_several_processes_starting_together_on_an_empty_database_all_start(db_url):
    stores = await asyncio.gather(*(open_store(db_url) for _ in range(4)))
    try:
        await stores[0].append_turns("c", [NewTurn(Role.USER, "u", "shared")])
        assert [await s.count_turns("c") for s in stores] == [1, 1, 1, 1]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
