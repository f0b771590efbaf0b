"""Access through the real Discord adapter (the fake Discord of test_discord.py): a member without Manage
Server cannot reset, purge or read anyone's history, by mention, slash command or DM; `forget me` deletes
only the asker's own turns; an admin's purge works, stays inside the server they manage, and is audited; a
server missing from the cache is never taken for a DM."""

# ruff: noqa: F811
from __future__ import annotations

import asyncio

from bot.core.metrics import MESSAGES_RECEIVED
from storage import NewTurn, Role

# The fake Discord and the running bot are test_discord.py's fixtures, imported to be reused: pytest finds
# them by name, which ruff sees as unused imports shadowed by the test arguments.
from tests.adapters.test_discord import bot, fake, start_bot, stored, world  # noqa: F401
from tests.waiting import eventually

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


# ---- scoped authority: a server's managers administer that server, operators the platform ----


async def test_a_server_managers_purge_cannot_touch_another_servers_turns(world, bot, store):
    """Anyone can invite the bot to a server they own and hold Manage Server there: that power ends at their
    server's edge. Alice talked in the test server, in the manager's own server and in a DM."""
    fake = world.fake
    own = fake.add_guild("the manager's own server")  # the bot joins it (GUILD_CREATE) like any other
    own_channel = fake.add_channel(own, "lobby")
    await fake.dispatch("GUILD_CREATE", own)
    own_key = f"discord:{own['id']}:{own_channel['id']}"
    general, dm = world.key(world.general), world.key(world.dm)
    for key in (general, own_key, dm):
        await seed(store, key, world.alice["id"], f"alice in {key}")

    await world.say(
        own_channel,
        f"{world.mention} purge <@{world.alice['id']}>",
        author=world.mod,
        roles=[fake.admin_role_id(own)],
    )
    [reply] = await world.replies(own_channel)
    assert reply["content"].startswith(f"Purged discord:{world.alice['id']}: 2 stored messages deleted")
    assert await store.count_turns(own_key) == 0
    assert await store.count_turns(general) == 2  # the test server's history is not theirs to delete
    assert await store.count_turns(dm) == 2
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == (
        f"discord:{world.mod['id']}",
        "purge",
        f"discord:{world.alice['id']}",
    )
    assert entry.detail == f"scope discord:{own['id']}; 2 turns deleted"

    # Their Manage Server in one server counts for nothing in another, nor in a DM.
    await world.say(world.general, f"{world.mention} purge <@{world.alice['id']}>", author=world.mod)
    mod_dm = fake.add_dm(world.mod)
    await world.say(mod_dm, f"purge {world.alice['id']}", author=world.mod)
    [refused] = await world.replies(world.general)
    [refused_dm] = await world.replies(mod_dm)
    assert refused["content"] == refused_dm["content"] == REFUSAL.format("purge")
    assert await store.count_turns(general) == 2 and await store.count_turns(dm) == 2


async def test_a_configured_operator_purges_platform_wide_even_from_a_dm(world, start_bot, store):
    fake = world.fake
    other = fake.add_guild("elsewhere")
    other_channel = fake.add_channel(other)
    await start_bot(admin_user_ids=[world.mod["id"]])
    keys = [world.key(world.general), f"discord:{other['id']}:{other_channel['id']}", world.key(world.dm)]
    for key in keys:
        await seed(store, key, world.alice["id"], f"alice in {key}")
    mod_dm = fake.add_dm(world.mod)
    await world.say(mod_dm, f"purge {world.alice['id']}", author=world.mod)
    [reply] = await world.replies(mod_dm)
    assert reply["content"].startswith(f"Purged discord:{world.alice['id']}: 6 stored messages deleted")
    assert [await store.count_turns(key) for key in keys] == [0, 0, 0]
    [entry] = await store.audit_entries()
    assert entry.detail == "scope discord; 6 turns deleted"


# ---- a server missing from the cache ----


async def test_a_message_from_a_server_not_in_the_cache_is_never_a_dm(world, start_bot, store):
    """A MESSAGE_CREATE naming a server the client has no GUILD_CREATE for (an outage, a late join): it is
    that server's message, not a DM: a mention is needed, it is keyed under the server, and the server's
    access rules apply."""
    fake = world.fake
    unknown = fake.add_guild("not cached")
    channel = fake.add_channel(unknown, "somewhere")
    denied = fake.add_guild("not cached, denied")
    denied_channel = fake.add_channel(denied, "somewhere else")
    for guild in (unknown, denied):
        del fake.guilds[guild["id"]]  # never sent to the bot
    bot = await start_bot(access={"deny_channels": [f"discord:{denied['id']}"]})
    assert bot.get_guild(int(unknown["id"])) is None

    await world.say(channel, "no mention here")  # in a DM this would be answered
    await world.say(channel, f"{world.mention} hello from an unknown server")
    [reply] = await world.replies(channel)
    # A channel's messages are answered in arrival order: had the first been answered, its reply came first.
    assert reply["content"] == "echo: hello from an unknown server (1 turns seen)"
    assert fake.sent(channel) == [reply]
    key = f"discord:{unknown['id']}:{channel['id']}"
    turns = await stored(store, key, 2)
    assert turns[0].text == "hello from an unknown server"

    received = MESSAGES_RECEIVED.labels(platform="discord")
    before = received._value.get()
    await world.say(denied_channel, f"{world.mention} hello from a denied server")
    # The adapter took it up and the engine decided on it (refused by the deny rule, before any typing).
    await eventually(lambda: received._value.get() == before + 1 and not bot._answering)
    assert fake.sent(denied_channel) == []
    assert await store.count_turns(f"discord:dm:{channel['id']}") == 0
    assert await store.count_turns(f"discord:{denied['id']}:{denied_channel['id']}") == 0
