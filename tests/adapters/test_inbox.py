"""Every accepted message answered exactly once, through the real adapters against the fake platforms.

Each test reproduces a failure seen from outside (issue 13's observations): a Discord burst right before a
shutdown, the same MESSAGE_CREATE delivered twice, a split reply whose second part fails, an HTTP 500 from
Slack's `chat.postMessage`, and a reply cancelled by a shutdown's deadline, answered by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import discord

from adapters.discord import CATCH_UP_LIMIT, MESSAGE_LIMIT, DiscordBot
from adapters.slack import SlackAdapter, make_client
from bot.bench.fake_discord import FakeDiscord
from bot.bench.fake_slack import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    TEAM_ID,
    FakeSlack,
    event_callback,
    mention,
)
from bot.config import Config, parse_config
from bot.core.engine import SHUTTING_DOWN, ChatEngine
from bot.testing import ScriptedGenerator, make_engine
from storage import InboxState


async def until(predicate, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def until_async(predicate, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# ---- Discord ----


@contextlib.asynccontextmanager
async def discord_bot(engine: ChatEngine, config: Config, fake: FakeDiscord) -> AsyncIterator[DiscordBot]:
    bot = DiscordBot(engine, config.discord, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.run_until_closed(fake.token))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), timeout=10)
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(task, timeout=10)


def discord_config(**keys) -> Config:
    return parse_config({"discord": {"enabled": True, **keys}, "history": {"max_turns": 10}})


async def test_a_discord_burst_right_before_a_shutdown_is_answered_and_stored(discord_fake, store):
    """Observation 2: messages still in the adapter's first steps (typing) when the drain starts."""
    fake = discord_fake
    guild = fake.add_guild()
    general = fake.add_channel(guild)
    alice = fake.user("alice")
    mention_ = f"<@{fake.bot_user['id']}>"
    engine = make_engine(store, ScriptedGenerator(), discord_config())
    async with discord_bot(engine, discord_config(), fake):
        fake.typing_delay = 0.5
        for n in range(3):
            await fake.dispatch("MESSAGE_CREATE", fake.message(general, alice, f"{mention_} burst {n}"))
        await fake.wait_for(lambda r: r.path.endswith("/typing"))  # the first is in its typing step
        drained = await engine.drain(deadline=10)
        assert drained.cancelled == 0 and drained.finished >= 1
        posted = fake.sent(general)
        # Every message of the burst is in the inbox and answered (the drain waited for each), in order.
        assert sorted(p["content"] for p in posted if p["content"].startswith("echo")) == [
            f"echo: burst {n} ({1 + 2 * n} turns seen)" for n in range(3)
        ]
    key = f"discord:{guild['id']}:{general['id']}"
    assert len(await store.recent_turns(key, 100)) == 6
    assert {e.state for e in await store.inbox_entries()} == {InboxState.ANSWERED}


async def test_the_same_message_create_twice_is_answered_once(discord_fake, store):
    """Observation 3: the gateway replays an event (a resumed session): answered once."""
    fake = discord_fake
    guild = fake.add_guild()
    general = fake.add_channel(guild)
    payload = fake.message(general, fake.user("alice"), f"<@{fake.bot_user['id']}> once please")
    generator = ScriptedGenerator()
    engine = make_engine(store, generator, discord_config())
    async with discord_bot(engine, discord_config(), fake):
        await fake.dispatch("MESSAGE_CREATE", payload)
        await fake.dispatch("MESSAGE_CREATE", payload)
        await fake.wait_for(lambda r: r.method == "POST" and r.path.endswith("/messages"))
        await until_async(lambda: _inbox_done(store, 1))
        third = fake.message(general, fake.user("bob"), f"<@{fake.bot_user['id']}> after")
        await fake.dispatch("MESSAGE_CREATE", third)  # a later message: the duplicate was handled before it
        await fake.wait_for(lambda r: r.method == "POST" and r.path.endswith("/messages"), count=2)
    assert [p["content"] for p in fake.sent(general)] == [
        "echo: once please (1 turns seen)",
        "echo: after (3 turns seen)",
    ]
    assert len(generator.calls) == 2


async def test_messages_posted_while_the_bot_was_away_are_answered_once_at_the_next_start(
    discord_fake, store
):
    """Discord does not send a stopped bot's missed events to its next session (and a kill can come between
    receiving a message and writing it to the inbox): the next start reads back each channel the bot took a
    message on recently, and each channel active since, and answers what is addressed to it, once."""
    fake = discord_fake
    guild = fake.add_guild()
    general, quiet, idle = (fake.add_channel(guild, name) for name in ("general", "quiet", "idle"))
    alice, bob = fake.user("alice"), fake.user("bob")
    dm = fake.add_dm(bob)
    at = f"<@{fake.bot_user['id']}>"
    config = discord_config()
    old = fake.message(idle, alice, "a message older than the recovery age, not for the bot")
    old["id"] = str(discord.utils.time_snowflake(discord.utils.utcnow() - timedelta(hours=1)))
    fake.post(old)
    async with discord_bot(make_engine(store, ScriptedGenerator(), config), config, fake):
        await fake.dispatch("MESSAGE_CREATE", fake.message(general, alice, f"{at} before"))
        await fake.dispatch("MESSAGE_CREATE", fake.message(dm, bob, "dm before"))
        await until_async(lambda: _inbox_done(store, 2))
    # Away: what people post now reaches the channels, not the bot.
    missed = [fake.message(general, alice, f"{at} missed {n}") for n in range(2)]
    for message in [missed[0], fake.message(general, alice, "not for the bot"), missed[1]]:
        fake.post(message)
    fake.post(fake.message(dm, bob, "dm missed"))
    fake.post(fake.message(quiet, alice, f"{at} first words in a new channel"))
    alice_dm = fake.add_dm(alice)  # alice never wrote to the bot directly before
    fake.post(fake.message(alice_dm, alice, "are you there?"))
    generator = ScriptedGenerator()
    async with discord_bot(make_engine(store, generator, config), config, fake):
        await until_async(lambda: _inbox_done(store, 7))
        live = fake.message(general, alice, f"{at} live")
        await fake.dispatch("MESSAGE_CREATE", live)
        await until_async(lambda: _inbox_done(store, 8))
    replies = fake.sent(general)
    assert [p["content"] for p in replies] == [
        "echo: before (1 turns seen)",
        "echo: missed 0 (3 turns seen)",
        "echo: missed 1 (5 turns seen)",
        "echo: live (7 turns seen)",
    ]
    # Each answer is a reply to the message it answers.
    assert [str(p["message_reference"]["message_id"]) for p in replies[1:3]] == [m["id"] for m in missed]
    assert [p["content"] for p in fake.sent(dm)] == [
        "echo: dm before (1 turns seen)",
        "echo: dm missed (3 turns seen)",
    ]
    assert [p["content"] for p in fake.sent(quiet)] == ["echo: first words in a new channel (1 turns seen)"]
    assert [p["content"] for p in fake.sent(alice_dm)] == ["echo: are you there? (1 turns seen)"]
    # A channel with nothing newer than the recovery age is not read at all.
    assert not fake.requests_to("GET", rf"/channels/{idle['id']}/messages")
    assert len(generator.calls) == 6  # each missed message once, and the live one


async def test_a_message_missed_before_one_taken_on_later_is_still_read_back(discord_fake, store, caplog):
    """A session that took a message on may have stopped before it read its channels back (killed during
    start-up, or without the permission to read them): what it took on says nothing of the messages
    before. The next start reads back the whole recovery age, skipping what was taken on."""
    fake = discord_fake
    general = fake.add_channel(fake.add_guild())
    alice = fake.user("alice")
    at = f"<@{fake.bot_user['id']}>"
    config = discord_config()
    async with discord_bot(make_engine(store, ScriptedGenerator(), config), config, fake):
        await fake.dispatch("MESSAGE_CREATE", fake.message(general, alice, f"{at} first"))
        await until_async(lambda: _inbox_done(store, 1))
    missed = fake.message(general, alice, f"{at} posted while away")
    fake.post(missed)
    fake.unreadable_channels.add(general["id"])  # this session cannot read it back...
    async with discord_bot(make_engine(store, ScriptedGenerator(), config), config, fake):
        await fake.dispatch(
            "MESSAGE_CREATE", fake.message(general, alice, f"{at} later")
        )  # ...but answers this
        await until_async(lambda: _inbox_done(store, 2))
    assert "could not read channel" in caplog.text
    fake.unreadable_channels.clear()
    generator = ScriptedGenerator()
    async with discord_bot(make_engine(store, generator, config), config, fake):
        await until_async(lambda: _inbox_done(store, 3))
    replies = fake.sent(general)
    assert [p["content"] for p in replies][-1] == "echo: posted while away (5 turns seen)"
    assert str(replies[-1]["message_reference"]["message_id"]) == missed["id"]
    assert len(generator.calls) == 1  # "first" and "later" were taken on before: skipped, not answered again


async def test_a_channel_busier_than_one_read_is_read_back_newest_first_and_says_so(
    discord_fake, store, caplog
):
    fake = discord_fake
    general = fake.add_channel(fake.add_guild())
    alice = fake.user("alice")
    at = f"<@{fake.bot_user['id']}>"
    posted = [fake.message(general, alice, f"{at} m{n}") for n in range(CATCH_UP_LIMIT + 3)]
    for message in posted:  # while the bot was away
        fake.post(message)
    config = discord_config()
    async with discord_bot(make_engine(store, ScriptedGenerator(), config), config, fake):
        await until_async(lambda: _inbox_done(store, CATCH_UP_LIMIT))
    taken = [e.platform_id for e in reversed(await store.inbox_entries(1000))]
    assert taken == [m["id"] for m in posted[3:]]  # the newest, taken on in order
    assert f"read back only its newest {CATCH_UP_LIMIT} messages" in caplog.text


async def test_nothing_is_read_back_from_channels_older_than_the_recovery_age(discord_fake, store):
    fake = discord_fake
    general = fake.add_channel(fake.add_guild())
    alice = fake.user("alice")
    at = f"<@{fake.bot_user['id']}>"
    config = parse_config({"discord": {"enabled": True}, "inbox": {"recover_max_age_seconds": 0}})
    async with discord_bot(make_engine(store, ScriptedGenerator(), config), config, fake):
        await fake.dispatch("MESSAGE_CREATE", fake.message(general, alice, f"{at} before"))
        await until_async(lambda: _inbox_done(store, 1))
    fake.post(fake.message(general, alice, f"{at} too late"))
    async with discord_bot(make_engine(store, ScriptedGenerator(), config), config, fake):
        await asyncio.sleep(0)
    assert not fake.requests_to("GET", r"/channels/\d+/messages")
    assert [p["content"] for p in fake.sent(general)] == ["echo: before (1 turns seen)"]


async def _inbox_done(store, count: int) -> bool:
    entries = await store.inbox_entries()
    return len(entries) >= count and all(e.state is not InboxState.RECEIVED for e in entries)


async def test_a_split_reply_whose_second_part_fails_is_stored_as_delivered(discord_fake, store, caplog):
    """Observation 4: the first part is visible, so it is history; the user's turn is kept too."""
    fake = discord_fake
    guild = fake.add_guild()
    general = fake.add_channel(guild)
    generator = ScriptedGenerator()
    long_reply = " ".join(["word"] * (MESSAGE_LIMIT // 5 + 50))  # two messages
    generator.replies.append(long_reply)
    engine = make_engine(store, generator, discord_config())
    caplog.set_level(logging.INFO)
    async with discord_bot(engine, discord_config(), fake):
        fake.failing_sends, fake.fail_sends_after, fake.failing_status = 1, 1, 403
        await fake.dispatch(
            "MESSAGE_CREATE", fake.message(general, fake.user("a"), f"<@{fake.bot_user['id']}> hi")
        )
        await until_async(lambda: _inbox_done(store, 1))
    [first] = fake.created
    turns = await store.recent_turns(f"discord:{guild['id']}:{general['id']}", 10)
    assert [(t.role.value, t.text) for t in turns] == [("user", "hi"), ("bot", first["content"])]
    [entry] = await store.inbox_entries()
    assert entry.state is InboxState.ANSWERED and entry.reply_ids == (fake.created[0]["id"],)
    sending_log = caplog.text[caplog.text.index("could not send all of") :]
    assert "answered" not in sending_log  # never "answered" after "could not send"


# ---- Slack ----


def slack_config(fake: FakeSlack, **keys) -> Config:
    return parse_config(
        {"history": {"max_turns": 10}, "slack": {"enabled": True, "api_url": fake.api_url}, **keys}
    )


@contextlib.asynccontextmanager
async def slack_running(engine: ChatEngine, config: Config, fake: FakeSlack) -> AsyncIterator[SlackAdapter]:
    adapter = SlackAdapter(engine, config, make_client(BOT_TOKEN, fake.api_url), SIGNING_SECRET)
    await adapter.check_auth()
    await adapter.recover()
    await adapter.start_socket_mode(APP_TOKEN)
    await fake.wait_connected()
    try:
        yield adapter
    finally:
        await adapter.close()


async def test_an_http_500_from_chat_post_message_is_retried(slack_fake, store):
    """Observation 4 (Slack): a 5xx is retried, and the reply arrives once."""
    engine = make_engine(store, ScriptedGenerator(), slack_config(slack_fake))
    slack_fake.server_error_next("chat.postMessage")
    async with slack_running(engine, slack_config(slack_fake), slack_fake) as bot:
        await slack_fake.send_event(event_callback(mention("hello"), "Ev1"))
        await bot.wait_idle()
    assert [p["text"] for p in slack_fake.posted] == ["echo: hello (1 turns seen)"]
    assert len(slack_fake.calls_to("chat.postMessage")) == 2
    assert len(await store.recent_turns(f"slack:{TEAM_ID}:C1CHAN", 10)) == 2


async def test_a_reply_cancelled_at_shutdown_is_announced_then_answered_by_the_next_start(slack_fake, store):
    """Observation 1: the deadline cancels a slow reply; the user is told, the next start answers it once,
    in its thread, and Slack's retry of the event is not answered again."""
    config = slack_config(slack_fake, shutdown={"deadline_seconds": 0.2})
    slow = ScriptedGenerator(delay=30)
    engine = make_engine(store, slow, config)
    event = mention("a slow one", ts="1700000009.000100", thread_ts="1700000000.000100")
    async with slack_running(engine, config, slack_fake):
        await slack_fake.send_event(event_callback(event, "Ev9"))
        await until(lambda: slow.calls)
        drained = await engine.drain(deadline=0.2)
    assert drained.cancelled == 1
    assert [p["text"] for p in slack_fake.posted] == [SHUTTING_DOWN.replace("'", "'")]
    [entry] = await store.inbox_entries()
    assert entry.state is InboxState.RECEIVED

    restarted = make_engine(store, ScriptedGenerator(), config)
    async with slack_running(restarted, config, slack_fake) as bot:
        await until_async(lambda: _inbox_done(store, 1))
        await slack_fake.send_event(event_callback(event, "Ev9"), retry_attempt=1, retry_reason="timeout")
        await bot.wait_idle()
    answers = [p for p in slack_fake.posted if p["text"].startswith("echo")]
    assert answers == [
        {"channel": "C1CHAN", "thread_ts": "1700000000.000100", "text": "echo: a slow one (1 turns seen)"}
    ]
    key = f"slack:{TEAM_ID}:C1CHAN:1700000000.000100"
    assert [t.text for t in await store.recent_turns(key, 10)] == [
        "a slow one",
        "echo: a slow one (1 turns seen)",
    ]


async def test_a_reply_posted_but_not_recorded_is_not_posted_again(slack_fake, store):
    """A stop between posting a reply and recording it: the next start finds the reply (its metadata names
    the message) and records it instead of answering twice."""
    config = slack_config(slack_fake)
    engine = make_engine(store, ScriptedGenerator(), config)
    original = store.finish

    async def lost_record(*args, **kwargs):  # the process died right after the post
        raise asyncio.CancelledError

    store.finish = lost_record
    try:
        async with slack_running(engine, config, slack_fake) as bot:
            await slack_fake.send_event(
                event_callback(mention("posted once", ts="1700000010.000100"), "Ev10")
            )
            with contextlib.suppress(BaseException):
                await bot.wait_idle()
    finally:
        store.finish = original
    assert len(slack_fake.posted) == 1
    [entry] = await store.inbox_entries()
    assert entry.state is InboxState.RECEIVED

    restarted = make_engine(store, ScriptedGenerator(), config)
    async with slack_running(restarted, config, slack_fake):
        await until_async(lambda: _inbox_done(store, 1))
    assert [p["text"] for p in slack_fake.posted] == ["echo: posted once (1 turns seen)"]
    turns = await store.recent_turns(f"slack:{TEAM_ID}:C1CHAN", 10)
    assert [t.text for t in turns] == ["posted once", "echo: posted once (1 turns seen)"]
