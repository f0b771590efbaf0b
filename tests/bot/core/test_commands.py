"""The command table: parsing, `forget me` and its confirmation, admin-only `reset`/`purge`, audit rows.

The rule under test: a non-admin cannot reset, purge or read another user's history by any command.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.commands import COMMANDS, PendingConfirmations, parse_command, parse_invocation
from bot.testing import Outbox, ScriptedGenerator, make_engine
from tests.bot.conversation import chat, exchanges_not_by, msg, seed, texts

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
    engine.confirmations._asked[("forget me", "discord", "alice")] -= 301
    assert "Send `forget me` first" in await chat(engine, "forget me confirm", author="alice")
    assert await store.count_turns("discord:1:20") == 2


# ---- admin commands and the audit log ----


async def test_an_operators_purge_deletes_that_users_turns_platform_wide_and_is_audited(engine, store):
    await seed(engine)
    # The adapter lists who a message mentions; the core never parses a platform's mention syntax.
    answer = await chat(
        engine, "purge <@!bob>", author="mod", admin="discord", channel="discord:1:20", mentions=("bob",)
    )
    assert "Purged discord:bob: 4 stored messages deleted" in answer
    assert await texts(store, "discord:1:10") == ["alice secret one", "echo: alice secret one (1 turns seen)"]
    assert await store.count_turns("discord:2:30") == 0
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("discord:mod", "purge", "discord:bob")
    assert entry.detail == "scope discord; 4 turns deleted"
    assert entry.at.replace(tzinfo=UTC) > datetime.now(UTC) - timedelta(minutes=1)


async def test_a_server_managers_purge_deletes_only_inside_that_server(engine, store):
    await seed(engine)
    await chat(engine, "bob in server 12", channel="discord:12:40", author="bob")  # `discord:1` is no prefix
    answer = await chat(engine, "purge bob", author="mod", admin="discord:1", channel="discord:1:20")
    assert "Purged discord:bob: 2 stored messages deleted" in answer and "under discord:1." in answer
    assert await store.count_turns("discord:1:10") == 2  # alice's exchange stays
    assert await texts(store, "discord:2:30") == ["bob elsewhere", "echo: bob elsewhere (1 turns seen)"]
    assert await store.count_turns("discord:12:40") == 2
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("discord:mod", "purge", "discord:bob")
    assert entry.detail == "scope discord:1; 2 turns deleted"


@pytest.mark.parametrize("command", ["purge bob", "reset"])
async def test_an_admin_of_one_server_is_refused_in_another(engine, store, command):
    await seed(engine)
    answer = await chat(engine, command, author="mod", admin="discord:1", channel="discord:2:30")
    assert answer == f"Sorry, only admins can use `{command.split()[0]}` here."
    assert await store.count_turns("discord:2:30") == 2
    assert await store.audit_entries() == []


async def test_reset_is_audited_with_who_when_what_and_the_scope(engine, store):
    await seed(engine)
    await chat(engine, "reset", author="mod", admin="discord:1")
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("discord:mod", "reset", "discord:1:10")
    assert entry.detail == "scope discord:1; 4 turns deleted"


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


def test_pending_confirmations_are_per_command_platform_and_user_and_expire():
    now = [0.0]
    pending = PendingConfirmations(ttl=300, clock=lambda: now[0])
    pending.ask("forget me", "discord", "alice")
    assert not pending.confirm("forget me", "slack", "alice")
    assert not pending.confirm("forget me", "discord", "bob")
    assert pending.confirm("forget me", "discord", "alice")
    assert not pending.confirm("forget me", "discord", "alice")  # used up
    pending.ask("forget me", "discord", "alice")
    now[0] = 301
    assert not pending.confirm("forget me", "discord", "alice") and len(pending) == 0


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("/srv/models/dialogpt-int8", "dialogpt-int8"),
        ("/srv/models/dialogpt-int8/", "dialogpt-int8"),
        ("~/models/mine", "mine"),
        ("./models/mine", "mine"),
        ("C:\\models\\mine", "mine"),
        ("microsoft/DialoGPT-medium", "microsoft/DialoGPT-medium"),
    ],
)
async def test_status_never_shows_where_the_model_lives_on_disk(store, config, name, shown):
    generator = ScriptedGenerator()
    generator.info = replace(generator.info, name=name, source=name)
    answer = await chat(make_engine(store, generator, config), "status")
    assert answer.startswith(f"Model: {shown} · ")
    if shown != name:
        assert name.rstrip("/\\") not in answer and "models" not in answer
