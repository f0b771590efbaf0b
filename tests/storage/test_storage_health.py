"""The store's health probe (`check`), and a SQLite file that is deleted, replaced or overwritten under a
running store: noticed, and from then on every read and write is refused instead of going into a file that
is gone."""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import func, select

from bot.errors import StorageError
from storage import NewTurn, Role, open_store
from storage.schema import ProcessedEventRow

TURN = [NewTurn(Role.USER, "u", "hello")]


async def test_a_healthy_database_passes_the_probe_and_keeps_no_trace_of_it(store):
    for _ in range(3):
        await store.check()
    async with store._sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEventRow)) == 0


def sqlite_path(db_url: str) -> str:
    return db_url.removeprefix("sqlite+aiosqlite:///")


def exists(path: str) -> bool:
    return os.path.exists(path)


def overwrite_in_place(path: str) -> None:
    """The same file (inode), other bytes: what `cp notes.txt dialobot.db` does."""
    with open(path, "r+b") as fh:
        fh.write(b"these are not the pages you are looking for\n" * 100)


@pytest.mark.sqlite_only
async def test_a_deleted_database_file_is_noticed_and_nothing_more_is_written(db_url):
    store = await open_store(db_url)
    path = sqlite_path(db_url)
    try:
        await store.append_turns("console:a", TURN)
        os.remove(path)
        with pytest.raises(StorageError, match="was deleted while the bot was running"):
            await store.check()
        with pytest.raises(StorageError, match="deleted"):
            await store.append_turns("console:a", TURN)
        with pytest.raises(StorageError, match="deleted"):
            await store.recent_turns("console:a", 10)
        assert not exists(path)  # not recreated, nothing written anywhere
    finally:
        await store.close()


@pytest.mark.sqlite_only
async def test_a_replaced_database_file_is_noticed_before_the_next_write(db_url, tmp_path):
    store = await open_store(db_url)
    path = sqlite_path(db_url)
    other = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    await other.close()
    try:
        await store.append_turns("console:a", TURN)
        os.replace(tmp_path / "other.db", path)  # a restored backup, say, moved into place
        with pytest.raises(StorageError, match="was replaced by another file"):
            await store.append_turns("console:a", TURN)  # noticed by the write itself, no probe needed
        with pytest.raises(StorageError, match="replaced"):
            await store.check()
    finally:
        await store.close()


@pytest.mark.sqlite_only
async def test_a_database_file_overwritten_in_place_is_noticed_by_the_probe(db_url):
    store = await open_store(db_url)
    path = sqlite_path(db_url)
    try:
        await store.append_turns("console:a", TURN)
        overwrite_in_place(path)
        with pytest.raises(StorageError, match="overwritten: it is no longer a SQLite database"):
            await store.check()
        with pytest.raises(StorageError, match="overwritten"):
            await store.append_turns("console:a", TURN)
    finally:
        await store.close()


@pytest.mark.sqlite_only
async def test_a_database_moved_away_and_back_is_the_same_file(db_url, tmp_path):
    """Identity is the file, not the path's history: moving it back is no failure."""
    store = await open_store(db_url)
    path = sqlite_path(db_url)
    try:
        shutil.move(path, tmp_path / "aside.db")
        shutil.move(tmp_path / "aside.db", path)
        await store.check()
        await store.append_turns("console:a", TURN)
    finally:
        await store.close()
