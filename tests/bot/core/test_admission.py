"""Back-pressure and flood control through the engine: bounded pending generations, cooldowns, rates."""

import asyncio

import pytest

from bot.config import parse_config
from bot.core.admission import BUSY, TOO_LONG_NOTICE, cut_to_limit
from bot.core.message import IncomingMessage, ReplyKind
from bot.errors import ConfigError
from bot.testing import Outbox, make_engine
from bot.testing import ScriptedGenerator as FakeGenerator
from tests.waiting import eventually


def msg(text, channel="console:a", author="u1"):
    return IncomingMessage(platform="test", channel_key=channel, author_id=author, text=text)


def engine_with(store, generator, **limits):
    return make_engine(store, generator, parse_config({"limits": limits}))


async def test_beyond_the_global_bound_users_are_told_busy_at_once(store):
    generator = FakeGenerator(delay=0.3)
    engine = engine_with(store, generator, max_pending=4, max_pending_per_channel=4)
    outs = [Outbox() for _ in range(10)]
    tasks = [asyncio.create_task(engine.handle(msg(f"m{i}", channel=f"c:{i}"), outs[i])) for i in range(10)]
    # The six beyond the bound are answered before any generation finished (each is written to the inbox
    # first; those writes finish in any order, so which six is not fixed).
    async with asyncio.timeout(5):
        while sum(out.sent == [BUSY] for out in outs) < 6:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    assert not any(t.done() and t.result().kind is ReplyKind.CHAT for t in tasks)
    assert engine.admission.pending == 4
    replies = await asyncio.gather(*tasks)
    assert sorted(r.kind for r in replies) == sorted([ReplyKind.CHAT] * 4 + [ReplyKind.NOTICE] * 6)
    assert len(generator.calls) == 4
    assert engine.admission.pending == 0
    busy_channel = next(i for i, r in enumerate(replies) if r.kind is ReplyKind.NOTICE)
    assert await store.count_turns(f"c:{busy_channel}") == 0  # a busy reply stores nothing


class GatedGenerator(FakeGenerator):
    """Generates nothing until `gate` is set: what is admitted is decided while every reply is pending."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def generate(self, turns):
        await self.gate.wait()
        return await super().generate(turns)


async def test_one_flooded_channel_does_not_starve_the_others(store):
    generator = GatedGenerator()
    engine = engine_with(store, generator, max_pending=100, max_pending_per_channel=3)
    outs = [Outbox() for _ in range(20)]
    flood = [asyncio.create_task(engine.handle(msg(f"f{i}", channel="c:flood"), outs[i])) for i in range(20)]
    quiet = Outbox()
    calm = asyncio.create_task(engine.handle(msg("hello", channel="c:quiet"), quiet))
    async with asyncio.timeout(10):  # the 17 beyond the channel's bound are told at once
        while sum(bool(out.sent) for out in outs) < 17:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    generator.gate.set()
    replies = await asyncio.gather(*flood, calm)
    assert sum(r.kind is ReplyKind.CHAT for r in replies[:20]) == 3
    assert replies[20].kind is ReplyKind.CHAT and quiet.sent == ["echo: hello (1 turns seen)"]


async def test_commands_are_not_counted_or_refused_as_busy(store):
    generator = FakeGenerator(delay=0.2)
    engine = engine_with(store, generator, max_pending=1, max_pending_per_channel=1)
    chat = asyncio.create_task(engine.handle(msg("long one", channel="c:1"), Outbox()))
    await eventually(lambda: generator.calls, what="the chat message is generating")
    out = Outbox()
    reply = await engine.handle(msg("help", channel="c:2"), out)
    assert reply.kind is ReplyKind.COMMAND
    await chat


async def test_user_cooldown_says_how_long_to_wait_and_is_per_user(store):
    engine = engine_with(store, FakeGenerator(), user_cooldown_seconds=30)
    out = Outbox()
    assert (await engine.handle(msg("first"), out)).kind is ReplyKind.CHAT
    refused = await engine.handle(msg("second"), out)
    assert refused.kind is ReplyKind.NOTICE
    assert "next message in 30 s" in out.sent[-1] or "next message in 29 s" in out.sent[-1]
    other = Outbox()
    assert (await engine.handle(msg("me too", author="u2"), other)).kind is ReplyKind.CHAT
    assert await store.count_turns("console:a") == 4  # the refused message was not stored


async def test_channel_rate_limit_counts_all_users_of_a_channel(store):
    engine = engine_with(store, FakeGenerator(), channel_rate="3/minute")
    out = Outbox()
    kinds = [(await engine.handle(msg(f"m{i}", author=f"u{i}"), out)).kind for i in range(5)]
    assert kinds == [ReplyKind.CHAT] * 3 + [ReplyKind.NOTICE] * 2
    assert "take the next message in" in out.sent[-1]
    seconds = int(out.sent[-1].split(" in ")[1].split()[0])
    assert 50 <= seconds <= 60
    assert (await engine.handle(msg("elsewhere", channel="console:b"), Outbox())).kind is ReplyKind.CHAT


async def test_limits_are_off_by_default(store):
    engine = make_engine(store, FakeGenerator(), parse_config({}))
    out = Outbox()
    for i in range(30):
        assert (await engine.handle(msg(f"m{i}"), out)).kind is ReplyKind.CHAT


def test_a_bad_rate_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"limits\.channel_rate: .*20/minute"):
        parse_config({"limits": {"channel_rate": "lots"}})


async def test_an_enormous_message_is_cut_with_a_notice_and_stored_cut(store):
    generator = FakeGenerator()
    engine = engine_with(store, generator, max_message_chars=100)
    out = Outbox()
    words = " ".join(f"w{i}" for i in range(50_000))
    reply = await engine.handle(msg(words), out)
    assert reply.kind is ReplyKind.CHAT
    seen = generator.calls[0][-1]
    assert len(seen) <= 100 and words.startswith(seen) and not seen.endswith(" ")
    assert out.sent[0].endswith(TOO_LONG_NOTICE.format(chars=len(seen)))
    stored = await store.recent_turns("console:a", 2)
    assert stored[0].text == seen
    assert "(Your message was long" not in stored[1].text  # the notice is not part of the history


def test_cut_to_limit_keeps_short_text_and_cuts_unbroken_text_exactly():
    assert cut_to_limit("short", 10) == ("short", False)
    assert cut_to_limit("x" * 50, 10) == ("x" * 10, True)
    assert cut_to_limit("ab cd ef", 5) == ("ab", True)
