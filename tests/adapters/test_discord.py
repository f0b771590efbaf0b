"""End-to-end tests of the Discord adapter: the real discord.py client against a fake Discord on 127.0.0.1.

Each test sends gateway events the way Discord would and asserts on what the bot sent back over REST
(messages, replies, typing, interaction responses) and on the history the store kept.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace

import pytest

from adapters.discord import MESSAGE_LIMIT, DiscordBot, serve
from bot.bench.fake_discord import ADMINISTRATOR, MANAGE_GUILD, FakeDiscord, Request
from bot.config import parse_config
from bot.core.engine import EMPTY_MESSAGE_HINT, GENERATION_FAILED
from bot.errors import ConfigError, DialobotError
from bot.safety.blocklist import Blocklist
from bot.safety.filter import SafetyFilter
from bot.testing import make_engine
from storage import NewTurn, Role
from tests.waiting import eventually

MESSAGE_CONTENT_INTENT = 1 << 15
CHANNEL_MESSAGE_WITH_SOURCE, DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 4, 5  # interaction response types


class World:
    """The fake Discord with one server (channels `general`, `chat`, a thread) and a few people."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.guild = fake.add_guild("test server")
        self.general = fake.add_channel(self.guild, "general")
        self.chat = fake.add_channel(self.guild, "chat")  # configured as "always answer"
        self.thread = fake.add_thread(self.general, "side topic")
        self.alice = fake.user("alice")
        self.mod = fake.user("mod")
        self.other_bot = fake.user("otherbot", bot=True)
        self.dm = fake.add_dm(self.alice)
        self.mention = f"<@{fake.bot_user['id']}>"

    def key(self, channel: dict) -> str:
        if channel["type"] == 1:
            return f"discord:dm:{channel['id']}"
        if channel["type"] == 11:
            return f"discord:{self.guild['id']}:{channel['parent_id']}:{channel['id']}"
        return f"discord:{self.guild['id']}:{channel['id']}"

    async def say(self, channel: dict, content: str, author: dict | None = None, roles=None) -> dict:
        payload = self.fake.message(channel, author or self.alice, content, roles=roles)
        await self.fake.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def replies(self, channel: dict, count: int = 1, within: float = 5.0) -> list[dict]:
        """The bot's next `count` messages in `channel`, waiting for them."""
        path = f"/channels/{channel['id']}/messages"
        found = await self.fake.wait_for(
            lambda r: r.method == "POST" and r.path == path, count=count, within=within
        )
        return [r.body for r in found]

    async def slash(self, name: str, channel: dict, user: dict, permissions: int = 0) -> tuple[Request, str]:
        """Run `/name`; return the interaction callback request and the text of the answer."""
        payload = self.fake.interaction(name, channel, user, permissions=permissions)
        await self.fake.dispatch("INTERACTION_CREATE", payload)
        token = payload["token"]
        [callback] = await self.fake.wait_for(lambda r: r.path.endswith(f"/{token}/callback"))
        if callback.body["type"] == CHANNEL_MESSAGE_WITH_SOURCE:
            return callback, callback.body["data"]["content"]
        assert callback.body["type"] == DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        [followup] = await self.fake.wait_for(lambda r: r.method == "POST" and r.path.endswith(f"/{token}"))
        return callback, followup.body["content"]


async def stored(store, key: str, count: int) -> list:
    """The turns stored under `key` once there are `count` of them (the exchange is stored after sending)."""

    # Polling the real store: the engine stores an exchange after sending it, with no event to wait on.
    async def enough() -> list | None:
        turns = await store.recent_turns(key, 100)
        return turns if len(turns) >= count else None

    return await eventually(enough, what=f"{count} turns stored under {key}")


@pytest.fixture
def fake(discord_fake: FakeDiscord) -> FakeDiscord:
    return discord_fake


@pytest.fixture
def world(fake) -> World:
    return World(fake)


@pytest.fixture
async def start_bot(fake, world, store, fake_generator):
    """Start the bot with some `[discord]` settings; it is connected and ready when this returns."""
    running: list[tuple[DiscordBot, asyncio.Task]] = []

    async def start(access: dict | None = None, **settings) -> DiscordBot:
        settings.setdefault("always_answer_channel_ids", [world.chat["id"]])
        config = parse_config(
            {"discord": {"enabled": True, **settings}, "history": {"max_turns": 10}, "access": access or {}}
        )
        bot = DiscordBot(make_engine(store, fake_generator, config), config.discord, guild_ready_timeout=0.05)
        task = asyncio.create_task(bot.run_until_closed(fake.token))
        running.append((bot, task))
        await asyncio.wait_for(bot.wait_until_ready(), timeout=5)
        return bot

    yield start
    for bot, task in running:
        await bot.close()
        await asyncio.wait_for(task, timeout=5)


@pytest.fixture
async def bot(start_bot) -> DiscordBot:
    return await start_bot()


async def test_answers_a_mention_with_a_reply_while_typing(fake, world, bot, store):
    asked = await world.say(world.general, f"{world.mention} hello there")
    [reply] = await world.replies(world.general)

    assert reply["content"] == "echo: hello there (1 turns seen)"
    assert reply["message_reference"]["message_id"] == int(asked["id"])
    assert reply["allowed_mentions"]["parse"] == []  # the model's text never pings anyone
    [typing] = fake.requests_to("POST", rf"/channels/{world.general['id']}/typing")
    [posted] = fake.requests_to("POST", rf"/channels/{world.general['id']}/messages")
    assert fake.requests.index(typing) < fake.requests.index(posted)
    turns = await stored(store, world.key(world.general), 2)
    assert [(t.role, t.author_id, t.text) for t in turns] == [
        (Role.USER, world.alice["id"], "hello there"),
        (Role.BOT, "bot", "echo: hello there (1 turns seen)"),
    ]


async def test_nickname_mention_form_is_stripped_too(world, bot, fake_generator):
    await world.say(world.general, f"how are <@!{world.fake.bot_user['id']}> you")
    [reply] = await world.replies(world.general)
    assert reply["content"] == "echo: how are you (1 turns seen)"


async def test_a_mention_of_the_bots_own_role_counts_as_a_mention(world, bot):
    await world.say(world.general, f"<@&{world.fake.bot_role_id(world.guild)}> you there?")
    [reply] = await world.replies(world.general)
    assert reply["content"] == "echo: you there? (1 turns seen)"


async def test_a_reply_to_the_bots_message_needs_no_mention(world, bot):
    await world.say(world.general, f"{world.mention} hello")
    await world.replies(world.general)
    bot_message = world.fake.last_bot_message
    follow_up = world.fake.message(world.general, world.alice, "tell me more")
    reference = {
        "message_id": bot_message["id"],
        "channel_id": world.general["id"],
        "guild_id": world.guild["id"],
    }
    follow_up |= {"type": 19, "message_reference": reference}
    follow_up["referenced_message"] = bot_message
    await world.fake.dispatch("MESSAGE_CREATE", follow_up)
    [_, reply] = await world.replies(world.general, count=2)
    assert reply["content"] == "echo: tell me more (3 turns seen)"
    assert reply["message_reference"]["message_id"] == int(follow_up["id"])


async def test_a_bare_mention_gets_a_hint_not_a_model_call(world, bot, fake_generator, store):
    await world.say(world.general, f"  {world.mention}  ")
    [reply] = await world.replies(world.general)
    assert reply["content"] == EMPTY_MESSAGE_HINT
    assert fake_generator.calls == []
    assert await store.count_turns(world.key(world.general)) == 0


async def test_ignores_server_messages_without_a_mention(world, bot, fake_generator):
    await world.say(world.general, "just people talking")
    await world.say(world.general, f"{world.mention} now you")
    [reply] = await world.replies(world.general)
    assert reply["content"] == "echo: now you (1 turns seen)"
    assert fake_generator.calls == [["now you"]]


async def test_answers_direct_messages_without_a_mention(world, bot, store):
    asked = await world.say(world.dm, "hi in private")
    [reply] = await world.replies(world.dm)
    assert reply["content"] == "echo: hi in private (1 turns seen)"
    assert reply["message_reference"]["message_id"] == int(asked["id"])
    assert len(await stored(store, world.key(world.dm), 2)) == 2


async def test_answers_every_message_in_an_always_answer_channel(world, bot, store):
    await world.say(world.chat, "no mention needed")
    [reply] = await world.replies(world.chat)
    assert reply["content"] == "echo: no mention needed (1 turns seen)"
    assert len(await stored(store, world.key(world.chat), 2)) == 2


async def test_ignores_other_bots_and_its_own_messages(world, bot, fake_generator):
    await world.say(world.chat, "beep from a bot", author=world.other_bot)
    await world.say(world.chat, f"{world.mention} talking to myself", author=world.fake.bot_user)
    await world.say(world.chat, "a human")
    # A channel's messages are answered in arrival order: one wrongly accepted would be answered before this.
    path = f"/channels/{world.chat['id']}/messages"
    await world.fake.wait_for(
        lambda r: r.path == path and r.body["content"] == "echo: a human (1 turns seen)"
    )
    [reply] = world.fake.sent(world.chat)
    assert reply["content"] == "echo: a human (1 turns seen)"
    assert fake_generator.calls == [["a human"]]
    assert len(world.fake.sent(world.chat)) == 1


async def test_answers_other_bots_when_configured(world, start_bot):
    await start_bot(answer_bots=True)
    await world.say(world.chat, "beep from a bot", author=world.other_bot)
    [reply] = await world.replies(world.chat)
    assert reply["content"] == "echo: beep from a bot (1 turns seen)"


async def test_channel_thread_and_dm_are_separate_conversations(world, bot, store, fake_generator):
    await world.say(world.general, f"{world.mention} in the channel")
    await world.replies(world.general)
    await world.say(world.thread, f"{world.mention} in the thread")
    [first] = await world.replies(world.thread)
    await world.say(world.thread, f"{world.mention} again in the thread")
    await world.replies(world.thread, count=2)
    await world.say(world.dm, "in private")
    [private] = await world.replies(world.dm)

    assert first["content"] == "echo: in the thread (1 turns seen)"  # the channel's history is not in it
    assert fake_generator.calls[2] == [
        "in the thread",
        "echo: in the thread (1 turns seen)",
        "again in the thread",
    ]
    assert private["content"] == "echo: in private (1 turns seen)"
    assert len(await stored(store, world.key(world.general), 2)) == 2
    assert len(await stored(store, world.key(world.thread), 4)) == 4
    assert len(await stored(store, world.key(world.dm), 2)) == 2
    assert (
        world.key(world.thread) == f"discord:{world.guild['id']}:{world.general['id']}:{world.thread['id']}"
    )


async def test_thread_of_an_always_answer_channel_needs_no_mention(world, fake, bot):
    thread = fake.add_thread(world.chat, "new thread")
    await fake.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
    await world.say(thread, "hello thread")
    [reply] = await world.replies(thread)
    assert reply["content"] == "echo: hello thread (1 turns seen)"


async def test_a_thread_missing_from_the_cache_is_looked_up_for_its_parent(world, fake, bot, store):
    thread = fake.add_thread(world.general, "created while nobody watched")  # no THREAD_CREATE sent
    await world.say(thread, f"{world.mention} hi")
    await world.replies(thread)
    assert fake.requests_to("GET", rf"/channels/{thread['id']}")
    assert (
        len(await stored(store, f"discord:{world.guild['id']}:{world.general['id']}:{thread['id']}", 2)) == 2
    )


async def test_long_answer_is_split_into_replies_with_code_blocks_intact(world, bot, fake_generator, store):
    code = "\n".join(f"    total += values[{i}]  # add item {i}" for i in range(80))
    prose = " ".join(f"word{i}" for i in range(500))
    answer = f"Here is the loop:\n```python\n{code}\n```\n{prose}\nThat's all."
    fake_generator.replies = [answer]
    asked = await world.say(world.general, f"{world.mention} show me code")
    [_, bot_turn] = await stored(store, world.key(world.general), 2)  # stored once every piece was sent
    pieces = world.fake.sent(world.general)

    assert len(pieces) >= 3
    assert all(len(p["content"]) <= MESSAGE_LIMIT for p in pieces)
    assert pieces[0]["message_reference"]["message_id"] == int(asked["id"])
    assert all(p.get("message_reference") is None for p in pieces[1:])
    for piece in pieces:
        assert len(re.findall(r"^```", piece["content"], re.MULTILINE)) % 2 == 0, piece["content"]
    code_pieces = [p["content"] for p in pieces if "total +=" in p["content"]]
    assert len(code_pieces) >= 2 and all(c.startswith("```python\n") for c in code_pieces)
    sent_code = [line for c in code_pieces for line in c.splitlines() if "total +=" in line]
    assert sent_code == code.splitlines()
    assert pieces[-1]["content"].endswith("That's all.")
    assert bot_turn.text == answer  # history keeps the answer whole


async def _seed_history(store, key: str) -> None:
    await store.append_turns(key, [NewTurn(Role.USER, "1", "hi"), NewTurn(Role.BOT, "bot", "hello")])


@pytest.mark.parametrize("permission", [MANAGE_GUILD, ADMINISTRATOR], ids=["manage-server", "administrator"])
async def test_slash_reset_by_a_server_admin(world, bot, store, permission):
    await _seed_history(store, world.key(world.general))
    callback, answer = await world.slash("reset", world.general, world.mod, permissions=permission)
    assert callback.body["type"] == CHANNEL_MESSAGE_WITH_SOURCE  # answered at once, no "thinking..."
    assert answer == "History cleared (2 turns deleted). Let's start over."
    assert await store.count_turns(world.key(world.general)) == 0


async def test_slash_command_in_a_busy_channel_is_deferred_then_followed_up(
    world, bot, store, fake_generator
):
    bot.defer_after = 0.05
    fake_generator.delay = 0.5  # the channel's conversation is busy generating; commands wait their turn
    await world.say(world.general, f"{world.mention} think hard")
    await eventually(lambda: fake_generator.calls, what="the answer is generating")
    callback, answer = await world.slash("reset", world.general, world.mod, permissions=MANAGE_GUILD)
    assert callback.body["type"] == DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE  # "dialobot is thinking..."
    assert answer == "History cleared (2 turns deleted). Let's start over."
    [reply] = world.fake.sent(world.general)
    assert reply["content"] == "echo: think hard (1 turns seen)"


async def test_slash_reset_by_anyone_else_is_refused(world, bot, store):
    await _seed_history(store, world.key(world.general))
    _, answer = await world.slash("reset", world.general, world.alice)
    assert answer == "Sorry, only admins can use `reset` here."
    assert await store.count_turns(world.key(world.general)) == 2


async def test_slash_reset_in_a_thread_clears_only_the_thread(world, bot, store):
    await _seed_history(store, world.key(world.general))
    await _seed_history(store, world.key(world.thread))
    await world.slash("reset", world.thread, world.mod, permissions=MANAGE_GUILD)
    assert await store.count_turns(world.key(world.thread)) == 0
    assert await store.count_turns(world.key(world.general)) == 2


async def test_reset_after_a_mention_follows_the_members_roles(world, bot, store):
    await _seed_history(store, world.key(world.general))
    await world.say(world.general, f"{world.mention} reset")
    [refusal] = await world.replies(world.general)
    assert refusal["content"] == "Sorry, only admins can use `reset` here."
    assert await store.count_turns(world.key(world.general)) == 2

    await world.say(
        world.general,
        f"{world.mention} reset",
        author=world.mod,
        roles=[world.fake.admin_role_id(world.guild)],
    )
    [_, done] = await world.replies(world.general, count=2)
    assert done["content"] == "History cleared (2 turns deleted). Let's start over."
    assert await store.count_turns(world.key(world.general)) == 0


async def test_reset_in_a_dm_only_for_configured_admins(world, start_bot, store):
    await start_bot(admin_user_ids=[world.mod["id"]])
    await _seed_history(store, world.key(world.dm))
    await world.say(world.dm, "reset")
    [refusal] = await world.replies(world.dm)
    assert refusal["content"] == "Sorry, only admins can use `reset` here."

    mod_dm = world.fake.add_dm(world.mod)
    await _seed_history(store, world.key(mod_dm))
    await world.say(mod_dm, "/reset", author=world.mod)
    [done] = await world.replies(mod_dm)
    assert done["content"].startswith("History cleared (2 turns deleted)")
    assert await store.count_turns(world.key(world.dm)) == 2


async def test_slash_help_and_status(world, bot, store):
    _, help_answer = await world.slash("help", world.dm, world.alice)
    assert "reset — forget this conversation's history (admins only)" in help_answer
    await _seed_history(store, world.key(world.dm))
    _, status = await world.slash("status", world.dm, world.alice)
    assert "turns stored in this conversation: 2" in status
    _, refusal = await world.slash("reset", world.dm, world.alice)
    assert refusal == "Sorry, only admins can use `reset` here."
    assert await store.count_turns(world.key(world.dm)) == 2


async def test_status_shows_a_local_models_name_but_not_its_path(world, bot, fake_generator):
    """Found by asking `status` with a model loaded from a directory: anyone saw the server's path."""
    fake_generator.info = replace(fake_generator.info, name="/srv/dialobot/models/my-dialogpt")
    await world.say(world.general, f"{world.mention} status")
    [reply] = await world.replies(world.general)
    assert reply["content"].startswith("Model: my-dialogpt · ")
    assert "/srv" not in reply["content"]


async def test_a_reply_of_a_zero_width_space_is_never_posted(world, bot, fake_generator):
    """Found with a model answering only U+200B: Discord showed an empty message from the bot."""
    fake_generator.replies = ["\u200b", "\u200b"]
    await world.say(world.general, f"{world.mention} say nothing")
    [reply] = await world.replies(world.general)
    assert reply["content"] == "Hmm, I'm not sure what to say to that."


async def test_startup_syncs_slash_commands_and_logs_the_invite_url(fake, world, start_bot, caplog):
    caplog.set_level(logging.INFO, logger="adapters.discord")
    await start_bot()
    [sync] = fake.requests_to("PUT", rf"/applications/{fake.application_id}/commands")
    assert sorted(c["name"] for c in sync.body) == ["help", "reset", "status"]
    assert all(c["description"] for c in sync.body)
    [identify] = fake.identified
    assert identify["intents"] & MESSAGE_CONTENT_INTENT
    invite = next(r.getMessage() for r in caplog.records if "invite" in r.getMessage())
    assert f"client_id={fake.application_id}" in invite
    assert "scope=bot+applications.commands" in invite
    assert "permissions=274877975552" in invite  # view, send, send in threads, read history
    assert fake.token not in caplog.text


async def test_command_guild_id_syncs_to_that_server_only(fake, world, start_bot, store):
    await start_bot(command_guild_id=world.guild["id"])
    [sync] = fake.requests_to("PUT", r"/applications/\d+(/guilds/\d+)?/commands")
    assert sync.path == f"/applications/{fake.application_id}/guilds/{world.guild['id']}/commands"
    await _seed_history(store, world.key(world.general))
    _, answer = await world.slash("reset", world.general, world.mod, permissions=MANAGE_GUILD)
    assert answer.startswith("History cleared")


async def test_runs_the_configured_shards(fake, start_bot):
    await start_bot(shard_count=2, shard_ids=[1])
    assert [i["shard"] for i in fake.identified] == [[1, 2]]


async def test_a_403_is_logged_once_per_channel_and_only_the_users_turn_is_kept(
    world, bot, store, fake_generator, caplog
):
    caplog.set_level(logging.WARNING, logger="adapters.discord")
    world.fake.forbidden_channels.add(world.general["id"])
    await world.say(world.general, f"{world.mention} first")
    await world.replies(world.general)  # refused with 403
    await world.say(world.general, f"{world.mention} second")
    await world.say(world.chat, "elsewhere")
    [reply] = await world.replies(world.chat)

    assert reply["content"] == "echo: elsewhere (1 turns seen)"  # the bot kept running
    assert [t.text for t in await store.recent_turns(world.key(world.general), 10)] == ["first"]
    assert fake_generator.calls == [["first"], ["elsewhere"]]  # the second message was skipped
    warnings = [r for r in caplog.records if "HTTP 403" in r.getMessage()]
    assert len(warnings) == 1 and world.general["id"] in warnings[0].getMessage()


async def test_rate_limits_are_left_to_discord_py(world, bot, store):
    world.fake.rate_limited_sends = 2
    await world.say(world.general, f"{world.mention} busy?")
    attempts = await world.fake.wait_for(
        lambda r: r.path == f"/channels/{world.general['id']}/messages", count=3
    )
    assert [a.body["content"] for a in attempts] == ["echo: busy? (1 turns seen)"] * 3  # retried, sent once
    assert len(await stored(store, world.key(world.general), 2)) == 2


async def test_a_generation_failure_gets_an_apology(world, bot, fake_generator, store):
    fake_generator.fail_with = RuntimeError("out of memory")
    await world.say(world.general, f"{world.mention} hello")
    [reply] = await world.replies(world.general)
    assert reply["content"] == GENERATION_FAILED
    assert [t.text for t in await stored(store, world.key(world.general), 1)] == ["hello"]  # kept, alone
    fake_generator.fail_with = None
    await world.say(world.general, f"{world.mention} hello again")
    [_, answer] = await world.replies(world.general, count=2)
    assert answer["content"] == "echo: hello hello again (1 turns seen)"  # the user's turns, joined


async def test_closing_cancels_answers_in_progress_and_stores_nothing(world, bot, store, fake_generator):
    fake_generator.delay = 30
    await world.say(world.general, f"{world.mention} take your time")
    await world.fake.wait_for(lambda r: r.path == f"/channels/{world.general['id']}/typing")
    await asyncio.wait_for(bot.close(), timeout=2)
    assert world.fake.sent(world.general) == []
    assert await store.count_turns(world.key(world.general)) == 0


async def test_refused_message_content_intent_is_one_clear_log_line(
    fake, world, store, fake_generator, caplog
):
    fake.refuse_intents = True
    config = parse_config({"discord": {"enabled": True}})
    bot = DiscordBot(make_engine(store, fake_generator, config), config.discord, guild_ready_timeout=0.05)
    with pytest.raises(DialobotError, match="Message Content intent"):
        await asyncio.wait_for(bot.run_until_closed(fake.token), timeout=5)
    [line] = [r for r in caplog.records if r.name == "adapters.discord" and r.levelno == logging.ERROR]
    assert "Message Content Intent" in line.getMessage()
    assert f"https://discord.com/developers/applications/{fake.application_id}/bot" in line.getMessage()


async def test_a_rejected_token_is_a_one_line_error(fake, store, fake_generator, caplog):
    config = parse_config({"discord": {"enabled": True}})
    bot = DiscordBot(make_engine(store, fake_generator, config), config.discord)
    with pytest.raises(DialobotError, match=r"Discord rejected the token in \$DISCORD_BOT_TOKEN") as error:
        await asyncio.wait_for(bot.run_until_closed("wrong-token"), timeout=5)
    assert "wrong-token" not in str(error.value) + caplog.text


def test_shard_ids_need_a_shard_count(store, fake_generator):
    config = parse_config({"discord": {"shard_ids": [0, 1]}})
    with pytest.raises(ConfigError, match=r"discord\.shard_ids: set discord\.shard_count"):
        DiscordBot(make_engine(store, fake_generator, config), config.discord)
    config = parse_config({"discord": {"shard_ids": [2], "shard_count": 2}})
    with pytest.raises(ConfigError, match="from 0 to 1"):
        DiscordBot(make_engine(store, fake_generator, config), config.discord)


async def test_serve_needs_the_token_variable(monkeypatch, store, fake_generator):
    monkeypatch.delenv("DIALOBOT_TEST_TOKEN", raising=False)
    config = parse_config({"discord": {"enabled": True, "token_env": "DIALOBOT_TEST_TOKEN"}})
    with pytest.raises(
        ConfigError, match=r"discord\.token_env: environment variable DIALOBOT_TEST_TOKEN is not set"
    ):
        await serve(make_engine(store, fake_generator, config), config)


async def test_serve_runs_until_cancelled(monkeypatch, fake, world, store, fake_generator):
    monkeypatch.setenv("DIALOBOT_TEST_TOKEN", fake.token)
    config = parse_config({"discord": {"enabled": True, "token_env": "DIALOBOT_TEST_TOKEN"}})
    task = asyncio.create_task(serve(make_engine(store, fake_generator, config), config))
    await asyncio.wait_for(fake.shard_connected.wait(), timeout=5)
    await world.say(world.dm, "are you there?")
    [reply] = await world.replies(world.dm)
    assert reply["content"] == "echo: are you there? (1 turns seen)"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ---- the safety filter, with the real offline classifier ----

OFFENSIVE = ["You're a fucking idiot.", "Shut the fuck up, moron.", "Go fuck yourself."]


async def test_offensive_model_output_never_reaches_discord(
    fake, world, store, fake_generator, profanity_check
):
    config = parse_config({"discord": {"enabled": True}, "history": {"max_turns": 10}})
    engine = make_engine(store, fake_generator, config, SafetyFilter(profanity_check, 0.8, Blocklist([])))
    bot = DiscordBot(engine, config.discord, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.run_until_closed(fake.token))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), timeout=5)
        fake_generator.replies = [*OFFENSIVE, "This song is sick!"]
        await world.say(world.general, f"{world.mention} say something rude")
        [fallback] = await world.replies(world.general)
        await world.say(world.general, f"{world.mention} and now?")
        [_, benign] = await world.replies(world.general, count=2)
        turns = await stored(store, world.key(world.general), 4)
    finally:
        await bot.close()
        await asyncio.wait_for(task, timeout=5)

    assert fallback["content"] == config.safety.fallback_reply
    assert benign["content"] == "This song is sick!"  # a benign reply passes unchanged
    assert len(fake_generator.calls) == 4  # the first reply, 2 regenerations, then the next message's
    sent = " ".join(str(r.body) for r in fake.requests).lower()  # everything the bot sent Discord
    assert not [word for word in ("fuck", "idiot", "moron") if word in sent]
    assert [(t.role, t.text) for t in turns] == [
        (Role.USER, "say something rude"),
        (Role.BOT, config.safety.fallback_reply),
        (Role.USER, "and now?"),
        (Role.BOT, "This song is sick!"),
    ]
