"""The retention limit: old turns deleted and audited, on a schedule while the bot serves."""

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import parse_config
from bot.errors import ConfigError
from bot.ops.app import background_jobs
from bot.ops.retention import prune_inbox, purge_expired
from bot.ops.shutdown import StopSignals, serve_until_stopped
from bot.testing import ScriptedGenerator as FakeGenerator
from bot.testing import make_engine
from tests.bot.conversation import chat, seed
from tests.waiting import eventually

# ---- retention ----


async def test_retention_deletes_only_old_turns_and_is_audited(engine, store):
    await seed(engine)
    settings = parse_config({"access": {"retention_days": 1}}).access
    assert await purge_expired(store, settings) == 0
    assert await store.audit_entries() == []  # a run that deletes nothing leaves no row
    later = datetime.now(UTC) + timedelta(days=1, minutes=1)
    assert await purge_expired(store, settings, now=later) == 10
    assert await store.count_turns("discord:1:10") == 0
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action) == ("system:retention", "retention")


async def test_retention_off_deletes_nothing(engine, store):
    await seed(engine)
    off = parse_config({}).access
    assert await purge_expired(store, off, now=datetime.now(UTC) + timedelta(days=3650)) == 0
    assert await store.count_turns("discord:1:10") == 4


async def test_the_bot_applies_retention_on_a_schedule_while_it_serves(store):
    config = parse_config({"access": {"retention_days": 0.2 / 86400, "retention_check_minutes": 0.1 / 60}})
    engine = make_engine(store, FakeGenerator(), config)
    await chat(engine, "soon forgotten")

    async def emptied() -> bool:
        return await store.count_turns("discord:1:10") == 0

    async def adapter():  # serves until the schedule has emptied the conversation
        await eventually(emptied, what="retention emptied the conversation")

    signals = StopSignals()
    loop = asyncio.get_running_loop()
    try:
        await serve_until_stopped(engine, adapter(), signals, background_jobs(store, config))
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
    [entry] = await store.audit_entries()
    assert entry.actor == "system:retention" and entry.detail == "2 turns deleted"


def test_the_schedule_runs_with_retention_off_for_the_inbox(store):
    jobs = background_jobs(store, parse_config({}))
    names = [job.__name__ for job in jobs]
    for job in jobs:
        job.close()
    assert names == ["watch_storage", "run_retention"]


async def test_answered_inbox_rows_go_after_keep_days_and_history_stays(engine, store):
    """The inbox would otherwise grow by a row per message for ever, retention off (the default) or not."""
    await chat(engine, "hello")
    waiting = await store.receive("discord", "still-waiting", "discord:1:10", "u2", "{}")
    config = parse_config({})
    assert await prune_inbox(store, config) == 0
    later = datetime.now(UTC) + timedelta(days=config.inbox.keep_days, minutes=1)
    assert await prune_inbox(store, config, now=later) == 1
    assert [e.id for e in await store.inbox_entries()] == [waiting]  # not answered yet: kept
    assert await store.count_turns("discord:1:10") == 2


def test_inbox_rows_must_outlive_the_recovery_age():
    with pytest.raises(ConfigError, match=r"inbox\.keep_days .* inbox\.recover_max_age_seconds"):
        parse_config({"inbox": {"keep_days": 0.001, "recover_max_age_seconds": 600}})
