"""The SQL history store on a real SQLite file and on a real PostgreSQL server (see tests/conftest.py)."""

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from storage import AuditRecord, InboxState, NewTurn, Role, open_store


def turn(text, role=Role.USER, author="u1"):
    return NewTurn(role, author, text)


async def test_recent_turns_are_the_last_n_oldest_first(store):
    for i in range(5):
        await store.append_turns("c", [turn(f"q{i}"), turn(f"a{i}", Role.BOT, "bot")])
    recent = await store.recent_turns("c", 3)
    assert [(t.role, t.text) for t in recent] == [(Role.BOT, "a3"), (Role.USER, "q4"), (Role.BOT, "a4")]
    assert await store.recent_turns("c", 0) == []
    assert await store.count_turns("c") == 10


async def test_channels_are_separate_and_reset_is_per_channel(store):
    await store.append_turns("a", [turn("in a")])
    await store.append_turns("b", [turn("in b")])
    assert await store.reset_channel("a") == 1
    assert await store.recent_turns("a", 10) == []
    assert [t.text for t in await store.recent_turns("b", 10)] == ["in b"]
    assert await store.reset_channel("a") == 0


async def test_text_round_trips_exactly(store):
    text = "héllo\n<|endoftext|>\u200b\u202e שלום 🙂 '; DROP TABLE messages; --"
    await store.append_turns("c", [turn(text)])
    assert (await store.recent_turns("c", 1))[0].text == text


@pytest.mark.sqlite_only
async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(store, tmp_path):
    async with store._engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    assert mode == "wal"
    assert timeout >= 5000


async def test_concurrent_writers_never_fail(store):
    async def writer(channel):
        for i in range(20):
            await store.append_turns(channel, [turn(f"{channel}-{i}"), turn(f"r{i}", Role.BOT, "bot")])

    await asyncio.gather(*(writer(f"c{n}") for n in range(10)))
    counts = await asyncio.gather(*(store.count_turns(f"c{n}") for n in range(10)))
    assert counts == [40] * 10


async def test_two_processes_worth_of_stores_share_one_file(db_url):
    first, second = await open_store(db_url), await open_store(db_url)
    await asyncio.gather(
        *(first.append_turns("c", [turn(f"x{i}")]) for i in range(20)),
        *(second.append_turns("c", [turn(f"y{i}")]) for i in range(20)),
    )
    assert await first.count_turns("c") == 40
    await first.close()
    await second.close()


@pytest.mark.sqlite_only
async def test_history_survives_reopening(db_url, tmp_path):
    store = await open_store(db_url)
    await store.append_turns("c", [turn("kept")])
    await store.close()
    # The file is a plain SQLite database an admin can inspect.
    rows = (
        sqlite3.connect(tmp_path / "history.db")
        .execute("SELECT channel_key, role, text FROM messages")
        .fetchall()
    )
    assert rows == [("c", "user", "kept")]
    reopened = await open_store(db_url)
    assert [t.text for t in await reopened.recent_turns("c", 5)] == ["kept"]
    await reopened.close()


async def test_claim_event_is_true_once_even_after_a_restart(db_url):
    store = await open_store(db_url)
    assert await store.claim_event("slack:T1:Ev1")
    assert not await store.claim_event("slack:T1:Ev1")
    await store.close()
    again = await open_store(db_url)
    assert not await again.claim_event("slack:T1:Ev1")
    assert await again.claim_event("slack:T1:Ev2")
    await again.close()


async def test_the_database_directory_is_created(tmp_path):
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'deep' / 'er' / 'h.db'}")
    await store.append_turns("c", [turn("x")])
    await store.close()
    assert (tmp_path / "deep" / "er" / "h.db").is_file()


@pytest.mark.sqlite_only
def test_many_processes_switching_a_new_database_to_wal_all_succeed(tmp_path):
    """SQLite answers "database is locked" at once, busy timeout or not, to some of several connections
    switching a new file to WAL together (about 1 in 10 rounds of six here without the retry)."""
    import threading

    from storage.history_store import SQLITE_BUSY_TIMEOUT_MS, _switch_to_wal

    failures = []
    for round_ in range(100):
        path = tmp_path / f"new-{round_}.db"
        start = threading.Barrier(6)

        def open_like_the_bot(path=path, start=start):
            connection = sqlite3.connect(path, timeout=0, isolation_level=None)
            start.wait()
            try:
                connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                _switch_to_wal(connection.cursor())
            except sqlite3.OperationalError as exc:
                failures.append(str(exc))
            finally:
                connection.close()

        threads = [threading.Thread(target=open_like_the_bot) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


async def test_an_audit_entry_on_its_own(store):
    await store.append_turns("c1", [turn("hello")])
    await store.record_audit(AuditRecord("safety", "filtered reply", "c1", "profanity_check 0.97 >= 0.80"))
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("safety", "filtered reply", "c1")
    assert entry.detail == "profanity_check 0.97 >= 0.80"
    assert await store.count_turns("c1") == 1  # nothing deleted


async def test_the_inbox_refuses_a_second_copy_and_lists_what_is_recent(store):
    first = await store.receive("discord", "m1", "discord:g:c", "u1", "{}")
    assert first is not None
    assert await store.receive("discord", "m1", "discord:g:c", "u1", "{}") is None
    await store.receive("slack", "m1", "slack:t:c", "u1", "{}")  # the id is unique per platform only
    await store.finish(first, InboxState.ANSWERED, ["r1"])
    await store.receive("discord", "m2", "discord:g:c", "u1", "{}")
    assert [e.platform_id for e in await store.unanswered("discord")] == ["m2"]
    now = datetime.now(UTC)
    recent = await store.received_since("discord", now - timedelta(minutes=1))
    assert [(e.platform_id, e.state) for e in recent] == [
        ("m1", InboxState.ANSWERED),
        ("m2", InboxState.RECEIVED),
    ]
    assert await store.received_since("discord", now + timedelta(minutes=1)) == []
