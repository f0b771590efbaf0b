"""The chat engine with a fake generator and a real SQLite file."""

import asyncio
from datetime import UTC, datetime

import pytest

from bot.config import parse_config
from bot.core.engine import EMPTY_MESSAGE_HINT, GENERATION_FAILED, MODEL_SERVER_DOWN, RecoveryResult
from bot.core.message import IncomingMessage, ReplyKind
from bot.errors import GenerationUnavailable
from bot.generation.prompt import prompt_turns
from bot.testing import Outbox, make_engine
from bot.testing import ScriptedGenerator as FakeGenerator
from storage import Role, StoredTurn, open_store


def msg(text, channel="console:a", author="u1", admin=False):
    return IncomingMessage(
        platform="test",
        channel_key=channel,
        author_id=author,
        text=text,
        admin_scope=channel.split(":")[0] if admin else None,
    )


async def test_reply_is_sent_and_the_exchange_stored(engine, store):
    out = Outbox()
    reply = await engine.handle(msg("hello"), out)
    assert reply.kind is ReplyKind.CHAT and reply.delivered
    assert out.sent == ["echo: hello (1 turns seen)"]
    turns = await store.recent_turns("console:a", 10)
    assert [(t.role, t.author_id, t.text) for t in turns] == [
        (Role.USER, "u1", "hello"),
        (Role.BOT, "bot", "echo: hello (1 turns seen)"),
    ]


async def test_history_is_fed_back_oldest_first(engine, fake_generator):
    out = Outbox()
    await engine.handle(msg("one"), out)
    await engine.handle(msg("two"), out)
    assert fake_generator.calls[-1] == ["one", "echo: one (1 turns seen)", "two"]


async def test_history_is_bounded_by_max_turns(store, fake_generator, config):
    bounded = config.model_copy(update={"history": config.history.model_copy(update={"max_turns": 3})})
    engine = make_engine(store, fake_generator, bounded)
    for i in range(6):
        await engine.handle(msg(f"m{i}"), Outbox())
    assert fake_generator.calls[-1] == ["echo: m3 (4 turns seen)", "m4", "echo: m4 (4 turns seen)", "m5"]


async def test_messages_in_one_channel_are_answered_in_arrival_order(store, config):
    generator = FakeGenerator(delay=0.02)
    engine = make_engine(store, generator, config)
    out = Outbox()
    await asyncio.gather(*(engine.handle(msg(f"m{i}"), out) for i in range(8)))
    assert [s.split(" ")[1] for s in out.sent] == [f"m{i}" for i in range(8)]
    # Each message saw every earlier exchange: nothing ran concurrently within the channel.
    assert [len(call) for call in generator.calls] == [min(2 * i, 10) + 1 for i in range(8)]


async def test_different_channels_proceed_concurrently(store, config):
    generator = FakeGenerator(delay=0.3)
    engine = make_engine(store, generator, config)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(engine.handle(msg("hi", channel=f"console:{i}"), Outbox()) for i in range(8)))
    # Serially this takes 8 x 0.3 s; concurrently about 0.3 s.
    assert loop.time() - started < 1.2


async def test_no_history_is_shared_between_channels(engine, fake_generator, store):
    await engine.handle(msg("secret in a", channel="console:a"), Outbox())
    await engine.handle(msg("hello from b", channel="console:b"), Outbox())
    assert fake_generator.calls[-1] == ["hello from b"]
    assert [t.text for t in await store.recent_turns("console:b", 10)] == [
        "hello from b",
        "echo: hello from b (1 turns seen)",
    ]


async def test_history_survives_a_restart(db_url, config):
    first = await open_store(db_url)
    await make_engine(first, FakeGenerator(), config).handle(msg("remember me"), Outbox())
    await first.close()
    second = await open_store(db_url)
    generator = FakeGenerator()
    await make_engine(second, generator, config).handle(msg("still there?"), Outbox())
    await second.close()
    assert generator.calls == [["remember me", "echo: remember me (1 turns seen)", "still there?"]]


async def test_admin_reset_clears_only_that_channel(engine, store):
    await engine.handle(msg("a1", channel="console:a"), Outbox())
    await engine.handle(msg("b1", channel="console:b"), Outbox())
    out = Outbox()
    reply = await engine.handle(msg("/reset", channel="console:a", admin=True), out)
    assert reply.kind is ReplyKind.COMMAND
    assert "2 turns deleted" in out.sent[0]
    assert await store.count_turns("console:a") == 0
    assert await store.count_turns("console:b") == 2


async def test_reset_is_refused_to_non_admins_and_deletes_nothing(engine, store):
    await engine.handle(msg("a1"), Outbox())
    out = Outbox()
    reply = await engine.handle(msg("reset", admin=False), out)
    assert reply.kind is ReplyKind.NOTICE
    assert "only admins" in out.sent[0]
    assert await store.count_turns("console:a") == 2


async def test_help_and_status_answer_without_touching_history(engine, store, fake_generator):
    out = Outbox()
    await engine.handle(msg("help"), out)
    await engine.handle(msg("!status"), out)
    assert "reset" in out.sent[0] and "(admins only)" in out.sent[0]
    assert "Model: fake" in out.sent[1] and "turns stored in this conversation: 0" in out.sent[1]
    assert fake_generator.calls == []
    assert await store.count_turns("console:a") == 0


async def test_a_sentence_starting_with_a_command_word_is_chat(engine, fake_generator):
    await engine.handle(msg("reset my password please"), Outbox())
    assert fake_generator.calls == [["reset my password please"]]


async def test_an_empty_message_gets_a_hint_not_a_model_call(engine, fake_generator, store):
    out = Outbox()
    reply = await engine.handle(msg("   \n "), out)
    assert out.sent == [EMPTY_MESSAGE_HINT] and reply.kind is ReplyKind.NOTICE
    assert fake_generator.calls == []
    assert await store.count_turns("console:a") == 0


async def test_an_empty_reply_is_retried_once(engine, fake_generator):
    fake_generator.replies = ["   ", "second try"]
    out = Outbox()
    await engine.handle(msg("hi"), out)
    assert out.sent == ["second try"]
    assert len(fake_generator.calls) == 2


async def test_two_empty_replies_become_the_fallback(engine, fake_generator, config, store):
    fake_generator.replies = ["", " "]
    out = Outbox()
    await engine.handle(msg("hi"), out)
    assert out.sent == [config.generation.fallback_reply]
    assert (await store.recent_turns("console:a", 2))[-1].text == config.generation.fallback_reply


@pytest.mark.parametrize("invisible", ["\u200b", "\u200b\u2060 \u200e", "\ufeff\n\u200d"])
async def test_a_reply_of_only_invisible_characters_is_empty_too(engine, fake_generator, config, invisible):
    """Found with a model that answered a zero-width space: it was posted as an invisible message."""
    fake_generator.replies = [invisible, invisible]
    out = Outbox()
    await engine.handle(msg("hi"), out)
    assert out.sent == [config.generation.fallback_reply]
    assert len(fake_generator.calls) == 2


async def test_a_failed_send_keeps_only_the_users_turn(engine, store, fake_generator):
    out = Outbox()
    out.fail = True
    reply = await engine.handle(msg("hello"), out)
    assert not reply.delivered
    assert [t.text for t in await store.recent_turns("console:a", 10)] == ["hello"]  # what the user said
    out.fail = False
    await engine.handle(msg("again"), out)
    assert fake_generator.calls[-1] == ["hello again"]  # the unanswered turn joins the next one
    assert await store.count_turns("console:a") == 3


async def test_a_generation_failure_gets_an_apology_and_keeps_the_user_turn(engine, fake_generator, store):
    fake_generator.fail_with = RuntimeError("model exploded")
    out = Outbox()
    reply = await engine.handle(msg("hello"), out)
    assert out.sent == [GENERATION_FAILED] and reply.kind is ReplyKind.NOTICE
    assert [t.text for t in await store.recent_turns("console:a", 10)] == ["hello"]
    fake_generator.fail_with = None
    await engine.handle(msg("hello again"), out)
    # DialoGPT knows speakers only by alternation: the unanswered turn and the new one are one user turn.
    assert fake_generator.calls[-1] == ["hello hello again"]
    assert [t.text for t in await store.recent_turns("console:a", 10)] == [
        "hello",
        "hello again",
        out.sent[-1],
    ]


def test_prompt_turns_alternate_speakers():
    def turn(role, text):
        return StoredTurn(role=role, author_id="u", text=text, created_at=datetime.now(UTC))

    user, bot = Role.USER, Role.BOT
    history = [turn(user, "hi"), turn(bot, "hello"), turn(user, "are you there?"), turn(user, "hello?")]
    assert prompt_turns(history, "anyone?") == ["hi", "hello", "are you there? hello? anyone?"]
    # The same message sent again after a failed reply is not repeated.
    assert prompt_turns([turn(bot, "hey"), turn(user, "ping")], "ping") == ["hey", "ping"]
    assert prompt_turns([], "first") == ["first"]


async def test_a_model_server_outage_gets_its_own_apology(engine, fake_generator, store):
    fake_generator.fail_with = GenerationUnavailable("http://127.0.0.1:9/v1 refused the connection")
    out = Outbox()
    reply = await engine.handle(msg("are you there?"), out)
    assert out.sent == [MODEL_SERVER_DOWN] and reply.kind is ReplyKind.NOTICE
    assert [t.text for t in await store.recent_turns("console:a", 10)] == ["are you there?"]


async def test_channel_locks_do_not_accumulate(engine):
    await asyncio.gather(*(engine.handle(msg("x", channel=f"console:{i}"), Outbox()) for i in range(20)))
    assert len(engine._channels) == 0


# ---- the inbox and recovery ----


async def test_a_partly_delivered_reply_is_stored_as_the_user_saw_it(engine, store):
    from bot.core.message import PartialDelivery

    async def half(text):
        raise PartialDelivery([("id1", "the first half")], ConnectionError("gone"))

    reply = await engine.handle(msg("hello"), half)
    assert reply.delivered and not reply.complete and reply.reply_ids == ("id1",)
    assert [t.text for t in await store.recent_turns("console:a", 10)] == ["hello", "the first half"]
    [entry] = await store.inbox_entries()
    assert (entry.state.value, entry.reply_ids) == ("answered", ("id1",))


async def test_unanswered_messages_are_answered_at_the_next_start_in_order(store, config):
    first = make_engine(store, FakeGenerator(), config)
    for n in range(3):  # taken on, then the process stopped before answering
        assert await first.accept(msg(f"left {n}")) is not None
    await first.accept(msg("elsewhere", channel="console:b"))
    restarted = make_engine(store, FakeGenerator(), config)
    outs: dict[str, Outbox] = {"console:a": Outbox(), "console:b": Outbox()}
    result = await restarted.recover("test", lambda m: outs[m.channel_key])
    assert (result.answering, result.expired) == (4, 0)
    new = asyncio.create_task(restarted.handle(msg("new one"), outs["console:a"]))  # arrives meanwhile
    await new
    await restarted.drain(deadline=10)
    assert outs["console:a"].sent == [
        "echo: left 0 (1 turns seen)",
        "echo: left 1 (3 turns seen)",
        "echo: left 2 (5 turns seen)",
        "echo: new one (7 turns seen)",
    ]
    assert outs["console:b"].sent == ["echo: elsewhere (1 turns seen)"]
    assert {e.state.value for e in await store.inbox_entries()} == {"answered"}
    assert await restarted.recover("test", lambda m: outs[m.channel_key]) == RecoveryResult(0, 0)


async def test_unanswered_messages_older_than_the_recovery_age_expire(store, caplog):
    config = parse_config({"inbox": {"recover_max_age_seconds": 0}})
    await make_engine(store, FakeGenerator(), config).accept(msg("too old by now"))
    out = Outbox()
    result = await make_engine(store, FakeGenerator(), config).recover("test", lambda m: out)
    assert (result.answering, result.expired) == (0, 1) and out.sent == []
    assert "marked expired" in caplog.text
    [entry] = await store.inbox_entries()
    assert entry.state.value == "expired"


async def test_a_message_delivered_twice_is_answered_once(engine, store, fake_generator):
    out = Outbox()
    first = IncomingMessage(
        platform="test", channel_key="console:a", author_id="u", text="hi", message_id="42"
    )
    await asyncio.gather(engine.handle(first, out), engine.handle(first, out))
    assert out.sent == ["echo: hi (1 turns seen)"] and len(fake_generator.calls) == 1
