"""Access through the real Discord adapter (the fake Discord of test_discord.py): a member without Manage
Server cannot reset, purge or read anyone's history, by mention, slash command or DM; `forget me` deletes
only the asker's own turns; an admin's purge works and is audited."""

# ruff: noqa: F811
from __future__ import annotations

import asyncio

from storage import NewTurn, Role

# The fake Discord and the running bot are test_discord.py's fixtures, imported to be reused: pytest finds
# them by name, which ruff sees as unused imports shadowed by the test arguments.
from tests.adapters.test_discord import bot, fake, start_bot, stored, world  # noqa: F401

REFUSAL = "Sorry, only admins can use `{}` here."


async def seed(store, key, author_id, text):
    await store.append_turns(key, [NewTurn(Role.USER, author_id, text), NewTurn(Role.BOT, "bot", "ok")])


async def test_a_member_cannot_reset_purge_or_read_others_by_any_path(world, bot, store):
    general, dm = world.key(world.general), world.key(world.dm)
    await seed(store, general, world.mod["id"], "the mod's secret plan")
    await seed(store, dm, world.alice["id"], "alice in private")
    asked = [
        f"{world.mention} reset",
        f"{world.mention} purge {world.mod['id']}",
        f"{world.mention} /purge <@{world.mod['id']}>",
        f"{world.mention} status",
        f"{world.mention} help",
    ]
    for content in asked:
        await world.say(world.general, content)
    replies = [r["content"] for r in await world.replies(world.general, count=len(asked))]
    assert replies[:3] == [REFUSAL.format("reset"), REFUSAL.format("purge"), REFUSAL.format("purge")]
    _, slash_answer = await world.slash("reset", world.general, world.alice)
    assert slash_answer == REFUSAL.format("reset")
    await world.say(world.dm, "purge " + world.mod["id"])  # a DM is no way around it
    [dm_reply] = await world.replies(world.dm)
    assert dm_reply["content"] == REFUSAL.format("purge")
    assert not [r for r in [*replies, slash_answer] if "secret plan" in r]
    assert [t.text for t in await store.recent_turns(general, 10)] == ["the mod's secret plan", "ok"]
    assert await store.audit_entries() == []


async def test_forget_me_over_discord_deletes_only_the_askers_turns(world, bot, store):
    general, thread = world.key(world.general), world.key(world.thread)
    await seed(store, general, world.alice["id"], "alice here")
    await seed(store, general, world.mod["id"], "mod here")
    await seed(store, thread, world.alice["id"], "alice in a thread")
    await world.say(world.general, f"{world.mention} forget me")
    await world.say(world.general, f"{world.mention} forget me confirm")
    ask, done = [r["content"] for r in await world.replies(world.general, count=2)]
    assert "forget me confirm" in ask
    assert done.startswith("Done: I deleted 4 stored messages")
    assert [t.text for t in await store.recent_turns(general, 10)] == ["mod here", "ok"]
    assert await store.count_turns(thread) == 0
    [entry] = await store.audit_entries()
    assert entry.actor == entry.target == f"discord:{world.alice['id']}"


async def test_a_server_admins_purge_is_obeyed_and_audited(world, bot, store):
    general = world.key(world.general)
    await seed(store, general, world.alice["id"], "spam spam")
    await world.say(
        world.general,
        f"{world.mention} purge <@{world.alice['id']}>",
        author=world.mod,
        roles=[world.fake.admin_role_id(world.guild)],
    )
    [reply] = await world.replies(world.general)
    assert reply["content"].startswith(f"Purged discord:{world.alice['id']}: 2 stored messages deleted")
    assert await store.count_turns(general) == 0
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action) == (f"discord:{world.mod['id']}", "purge")


async def test_a_flood_through_discord_gets_exactly_one_reply_per_message(world, bot, store, fake_generator):
    """4 conversations x 20 messages at once through the real client: one reply each (an answer or "busy"),
    answers in order, history exactly the answered exchanges."""
    fake_generator.delay = 0.02
    conversations = [world.general, world.chat, world.thread, world.dm]
    asked: dict[str, list[str]] = {}
    for channel in conversations:
        prefix = "" if channel in (world.chat, world.dm) else f"{world.mention} "
        asked[channel["id"]] = [
            (await world.say(channel, f"{prefix}flood {i} in {channel['id']}"))["id"] for i in range(20)
        ]
    for channel in conversations:
        # Each message is written to the inbox first: on a loaded machine 80 of them take a while.
        replies = await world.replies(channel, count=20, within=60)
        answered_ids = [str(r["message_reference"]["message_id"]) for r in replies]
        assert sorted(answered_ids) == sorted(asked[channel["id"]])  # each exactly once
        answers = [r["content"] for r in replies if r["content"].startswith("echo: ")]
        numbers = [int(a.split()[2]) for a in answers]
        assert numbers == sorted(numbers)
        turns = await stored(store, world.key(channel), 2 * len(answers))  # stored just after sending
        assert len(turns) == 2 * len(answers)
        assert [t.text for t in turns if t.role is Role.BOT] == answers
        assert all(f"in {channel['id']}" in t.text for t in turns)  # nothing from another conversation


async def test_slow_typing_indicators_do_not_reorder_a_channels_messages(world, bot, store, monkeypatch):
    """Each message first starts the typing indicator (a REST call); those calls may finish in any order."""
    original = bot.http.send_typing
    delays = [0.3, 0.2, 0.1, 0.0, 0.0]

    async def slow_typing(channel_id):
        await asyncio.sleep(delays.pop(0) if delays else 0)
        return await original(channel_id)

    monkeypatch.setattr(bot.http, "send_typing", slow_typing)
    for i in range(5):
        await world.say(world.chat, f"in order {i}")
    replies = await world.replies(world.chat, count=5)
    assert [int(r["content"].split()[3]) for r in replies] == [0, 1, 2, 3, 4]
