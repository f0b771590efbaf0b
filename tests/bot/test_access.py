"""Who may do what: channel and user lists, `forget me`, admin-only `reset`/`purge`, the audit log, retention.

The rule under test: a non-admin cannot reset, purge or read another user's history by any command.
"""

import asyncio
import getpass
import signal
from datetime import UTC, datetime, timedelta

import pytest

from bot.commands import COMMANDS, parse_command, parse_invocation
from bot.config import parse_config
from bot.engine import ChatEngine
from bot.message import IncomingMessage, ReplyKind
from bot.retention import purge_expired
from bot.shutdown import StopSignals, serve_until_stopped
from storage import NewTurn, Role, open_store
from tests.bot.test_cli import dialobot
from tests.conftest import FakeGenerator, Outbox


def msg(text, channel="discord:1:10", author="alice", admin=False, platform="discord"):
    return IncomingMessage(
        platform=platform, channel_key=channel, author_id=author, text=text, is_admin=admin
    )


async def chat(engine, text, **kwargs) -> str:
    out = Outbox()
    await engine.handle(msg(text, **kwargs), out)
    return out.sent[-1]


async def seed(engine):
    """Alice and Bob talk in two channels; Bob also in a third; Carol on Slack with Alice's id."""
    await chat(engine, "alice secret one", channel="discord:1:10", author="alice")
    await chat(engine, "bob private words", channel="discord:1:10", author="bob")
    await chat(engine, "alice secret two", channel="discord:1:20", author="alice")
    await chat(engine, "bob elsewhere", channel="discord:2:30", author="bob")
    await chat(engine, "slack alice", channel="slack:T:C", author="alice", platform="slack")


async def texts(store, key):
    return [t.text for t in await store.recent_turns(key, 100)]


async def exchanges_not_by(store, key, author):
    """The channel's stored exchanges (question, answer) whose question is not `author`'s."""
    turns = await store.recent_turns(key, 1000)
    pairs = list(zip(turns[::2], turns[1::2], strict=True))
    return [(q.author_id, q.text, a.text) for q, a in pairs if q.author_id != author]


# ---- channel and user lists ----


@pytest.mark.parametrize(
    ("access", "channel", "author", "answered"),
    [
        ({}, "discord:1:10", "alice", True),
        ({"allow_channels": ["discord:1"]}, "discord:1:10:99", "alice", True),  # a thread of the server
        ({"allow_channels": ["discord:1"]}, "discord:12:10", "alice", False),  # a prefix is a whole part
        ({"allow_channels": ["discord:1:10"]}, "discord:1:20", "alice", False),
        ({"deny_channels": ["discord:1:10"]}, "discord:1:10", "alice", False),
        ({"deny_channels": ["discord:1:10"]}, "discord:1:10:5", "alice", False),
        ({"allow_channels": ["discord:1"], "deny_channels": ["discord:1:10"]}, "discord:1:10", "a", False),
        ({"deny_users": ["discord:mallory"]}, "discord:1:10", "mallory", False),
        ({"deny_users": ["slack:mallory"]}, "discord:1:10", "mallory", True),  # ids are per platform
    ],
)
async def test_channel_and_user_lists(store, access, channel, author, answered):
    generator = FakeGenerator()
    engine = ChatEngine(store, generator, parse_config({"access": access}))
    out = Outbox()
    reply = await engine.handle(msg("hello", channel=channel, author=author), out)
    assert (reply.kind is ReplyKind.CHAT) is answered
    if not answered:
        assert reply.kind is ReplyKind.IGNORED and out.sent == [] and generator.calls == []
        assert await store.count_turns(channel) == 0


async def test_a_denied_user_cannot_run_commands_either(store):
    engine = ChatEngine(store, FakeGenerator(), parse_config({"access": {"deny_users": ["discord:root"]}}))
    await chat(engine, "keep me", author="alice")
    out = Outbox()
    reply = await engine.handle(msg("reset", author="root", admin=True), out)
    assert reply.kind is ReplyKind.IGNORED and out.sent == []
    assert await store.count_turns("discord:1:10") == 2


# ---- the command parser ----


@pytest.mark.parametrize(
    ("text", "name", "args"),
    [
        ("forget me", "forget me", ()),
        ("/Forget  ME", "forget me", ()),
        ("!forget me confirm", "forget me", ("confirm",)),
        ("forget me CONFIRM", "forget me", ("CONFIRM",)),
        ("purge U123", "purge", ("U123",)),
        ("purge", "purge", ()),
        ("reset", "reset", ()),
    ],
)
def test_commands_with_words_after_them(text, name, args):
    command, found = parse_invocation(text)
    assert (command.name, found) == (name, args)


@pytest.mark.parametrize(
    "text",
    [
        "forget me not",
        "forget me, please",
        "forget it",
        "purge the old stuff please",
        "reset everything now",
        "",
    ],
)
def test_sentences_starting_with_command_words_are_chat(text):
    assert parse_invocation(text) is None and parse_command(text) is None


# ---- forget me ----


async def test_forget_me_asks_first_then_deletes_only_the_users_turns_on_that_platform(engine, store):
    await seed(engine)
    ask = await chat(engine, "forget me", author="alice")
    assert "forget me confirm" in ask
    assert await store.count_turns("discord:1:10") == 4  # nothing deleted yet
    done = await chat(engine, "forget me confirm", channel="discord:2:30", author="alice")
    assert "deleted 4 stored messages" in done
    assert await texts(store, "discord:1:10") == [
        "bob private words",
        "echo: bob private words (3 turns seen)",
    ]
    assert await texts(store, "discord:1:20") == []
    assert await texts(store, "discord:2:30") == ["bob elsewhere", "echo: bob elsewhere (1 turns seen)"]
    assert len(await texts(store, "slack:T:C")) == 2  # the same id on another platform is someone else
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("discord:alice", "forget me", "discord:alice")
    assert "4 turns deleted" in entry.detail


async def test_forget_me_confirm_without_asking_first_deletes_nothing(engine, store):
    await seed(engine)
    answer = await chat(engine, "forget me confirm", author="alice")
    assert "Send `forget me` first" in answer
    assert await store.count_turns("discord:1:10") == 4
    assert await store.audit_entries() == []


async def test_one_users_confirmation_does_not_confirm_for_another(engine, store):
    await seed(engine)
    await chat(engine, "forget me", author="alice")
    answer = await chat(engine, "forget me confirm", author="bob")
    assert "Send `forget me` first" in answer
    assert await store.count_turns("discord:2:30") == 2


async def test_the_confirmation_expires(engine, store, monkeypatch):
    await seed(engine)
    await chat(engine, "forget me", author="alice")
    engine.forget_requests[("discord", "alice")] -= 301
    assert "Send `forget me` first" in await chat(engine, "forget me confirm", author="alice")
    assert await store.count_turns("discord:1:20") == 2


# ---- admin commands and the audit log ----


async def test_purge_by_an_admin_deletes_that_users_turns_everywhere_and_is_audited(engine, store):
    await seed(engine)
    answer = await chat(engine, "purge <@!bob>", author="mod", admin=True, channel="discord:1:20")
    assert "Purged discord:bob: 4 stored messages deleted" in answer
    assert await texts(store, "discord:1:10") == ["alice secret one", "echo: alice secret one (1 turns seen)"]
    assert await store.count_turns("discord:2:30") == 0
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("discord:mod", "purge", "discord:bob")
    assert entry.at.replace(tzinfo=UTC) > datetime.now(UTC) - timedelta(minutes=1)


async def test_reset_is_audited_with_who_when_and_what(engine, store):
    await seed(engine)
    await chat(engine, "reset", author="mod", admin=True)
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("discord:mod", "reset", "discord:1:10")
    assert entry.detail == "4 turns deleted"


async def test_purge_without_a_user_shows_its_usage(engine, store):
    await seed(engine)
    assert "Usage: `purge <user id>`" in await chat(engine, "purge", author="mod", admin=True)
    assert await store.audit_entries() == []


@pytest.mark.parametrize("command", [c for c in COMMANDS])
@pytest.mark.parametrize("args", ["", " bob", " <@bob>", " confirm", " discord:1:10"])
async def test_no_command_lets_a_non_admin_delete_or_read_another_users_history(engine, store, command, args):
    await seed(engine)
    keys = ("discord:1:10", "discord:1:20", "discord:2:30")
    before = {key: await exchanges_not_by(store, key, "eve") for key in keys}
    eve = Outbox()
    for prefix in ("", "/", "!"):
        await engine.handle(msg(f"{prefix}{command.name}{args}", author="eve"), eve)
        await engine.handle(msg(f"{prefix}{command.name}{args}", author="eve", channel="discord:2:30"), eve)
    # Every reply eve got is free of what others said (a command's reply or the echo of her own words).
    others = ["alice secret", "bob private", "bob elsewhere"]
    assert not [reply for reply in eve.sent if any(word in reply for word in others)]
    assert {key: await exchanges_not_by(store, key, "eve") for key in keys} == before
    audit = await store.audit_entries()
    assert all(entry.actor == "discord:eve" and entry.target == "discord:eve" for entry in audit)


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


# ---- the operator's reset from the command line ----


async def test_an_operators_history_reset_is_audited_too(db_url, tmp_path):
    config_file = tmp_path / "dialobot.toml"
    config_file.write_text(f'[storage]\npath = "{tmp_path / "history.db"}"\n')
    store = await open_store(db_url)
    await store.append_turns("slack:T:C", [NewTurn(Role.USER, "u", "bye")])
    await store.close()
    args = ("history", "reset", "--channel", "slack:T:C", "--yes", "--config", str(config_file))
    assert (await asyncio.to_thread(dialobot, *args)).returncode == 0
    store = await open_store(db_url)
    [entry] = await store.audit_entries()
    await store.close()
    assert (entry.actor, entry.action, entry.target) == (f"cli:{getpass.getuser()}", "reset", "slack:T:C")


async def test_the_bot_applies_retention_on_a_schedule_while_it_serves(store):
    config = parse_config({"access": {"retention_days": 0.2 / 86400, "retention_check_minutes": 0.1 / 60}})
    engine = ChatEngine(store, FakeGenerator(), config)
    await chat(engine, "soon forgotten")

    async def adapter():  # serves until the schedule has emptied the conversation
        async with asyncio.timeout(5):
            while await store.count_turns("discord:1:10"):  # noqa: ASYNC110 - polling the real store
                await asyncio.sleep(0.05)

    signals = StopSignals()
    loop = asyncio.get_running_loop()
    try:
        await serve_until_stopped(engine, adapter(), signals)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
    [entry] = await store.audit_entries()
    assert entry.actor == "system:retention" and entry.detail == "2 turns deleted"
