"""Faults: the model raising or hanging, the database failing, the platform refusing a send, a shutdown.

Each fault gets a clear reply or log line for that message only; history stays consistent (an exchange is
stored whole after delivery, or as far as it was delivered; the user turn of a reply that could not be sent
is kept alone), and other channels keep being served.
"""

import asyncio
import logging

from bot.config import parse_config
from bot.core.engine import GENERATION_FAILED, GENERATION_TIMED_OUT, SHUTTING_DOWN, STORE_FAILED
from bot.core.message import IncomingMessage, ReplyKind
from bot.testing import Outbox, make_engine
from bot.testing import ScriptedGenerator as FakeGenerator
from tests.waiting import eventually


async def until(predicate, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def msg(text, channel="console:a", author="u1", admin=False):
    return IncomingMessage(
        platform="test",
        channel_key=channel,
        author_id=author,
        text=text,
        admin_scope=channel.split(":")[0] if admin else None,
    )


class ChannelFaultGenerator(FakeGenerator):
    """Raises for a last turn ending in "boom please"; never finishes one ending in "hang please"."""

    async def generate(self, turns):
        if turns[-1].endswith("boom please"):
            self.calls.append(list(turns))
            raise RuntimeError("CUDA is not even here")
        if turns[-1].endswith("hang please"):
            self.calls.append(list(turns))
            self.hung = True
            await asyncio.sleep(3600)
        return await super().generate(turns)


async def test_generator_failure_and_timeout_affect_only_their_own_channel(store, caplog):
    config = parse_config({"generation": {"timeout_seconds": 0.2}})
    engine = make_engine(store, ChannelFaultGenerator(delay=0.01), config)
    outs = {name: Outbox() for name in ("boom", "hang", "ok1", "ok2")}
    replies = await asyncio.gather(
        *(engine.handle(msg(f"{name} please", channel=f"c:{name}"), out) for name, out in outs.items())
    )
    assert [r.kind for r in replies] == [ReplyKind.NOTICE, ReplyKind.NOTICE, ReplyKind.CHAT, ReplyKind.CHAT]
    assert outs["boom"].sent == [GENERATION_FAILED]
    assert outs["hang"].sent == [GENERATION_TIMED_OUT]
    assert "took over 0s; gave up" in caplog.text or "gave up" in caplog.text
    # No reply, but what the user said is kept.
    assert await store.count_turns("c:boom") == 1 and await store.count_turns("c:hang") == 1
    assert await store.count_turns("c:ok1") == 2 and await store.count_turns("c:ok2") == 2
    # The timed-out channel is not stuck: its lock was released.
    assert (await engine.handle(msg("fine now", channel="c:hang"), Outbox())).kind is ReplyKind.CHAT


class FlakyStore:
    """Wraps the real store; fails reads or writes on demand, like a full disk or a dropped connection."""

    def __init__(self, inner):
        self.inner = inner
        self.fail_reads = self.fail_writes = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def recent_turns(self, key, limit):
        if self.fail_reads:
            raise OSError("disk I/O error")
        return await self.inner.recent_turns(key, limit)

    async def append_turns(self, key, turns):
        if self.fail_writes:
            raise OSError("database or disk is full")
        return await self.inner.append_turns(key, turns)

    async def finish(self, *args, **kwargs):
        if self.fail_writes:
            raise OSError("database or disk is full")
        return await self.inner.finish(*args, **kwargs)


async def test_a_failed_write_is_logged_the_reply_still_arrives_and_history_stays_whole(store, caplog):
    flaky = FlakyStore(store)
    engine = make_engine(flaky, FakeGenerator(), parse_config({}))
    await engine.handle(msg("one"), Outbox())
    flaky.fail_writes = True
    out = Outbox()
    reply = await engine.handle(msg("two"), out)
    assert reply.delivered and out.sent == ["echo: two (3 turns seen)"]
    assert "was sent but could not be stored" in caplog.text
    flaky.fail_writes = False
    await engine.handle(msg("three"), Outbox())
    # Neither half of the failed exchange is there: no question without its answer.
    assert [t.text for t in await store.recent_turns("console:a", 10)] == [
        "one",
        "echo: one (1 turns seen)",
        "three",
        "echo: three (3 turns seen)",
    ]


async def test_a_failed_read_gets_an_apology_and_no_model_call(store):
    flaky = FlakyStore(store)
    generator = FakeGenerator()
    engine = make_engine(flaky, generator, parse_config({}))
    flaky.fail_reads = True
    out = Outbox()
    reply = await engine.handle(msg("hello"), out)
    assert reply.kind is ReplyKind.NOTICE and out.sent == [STORE_FAILED]
    assert generator.calls == []


async def test_a_failing_command_gets_an_apology(store, caplog):
    flaky = FlakyStore(store)
    engine = make_engine(flaky, FakeGenerator(), parse_config({}))

    async def fail(*args, **kwargs):
        raise OSError("database is gone")

    flaky.reset_channel = fail
    out = Outbox()
    reply = await engine.handle(msg("reset", admin=True), out)
    assert reply.kind is ReplyKind.NOTICE and out.sent == [STORE_FAILED]
    assert "command reset failed" in caplog.text


async def test_a_failed_send_keeps_the_users_turn_and_other_channels_carry_on(engine, store, caplog):
    caplog.set_level(logging.WARNING)
    refused, fine = Outbox(), Outbox()
    refused.fail = True
    replies = await asyncio.gather(
        engine.handle(msg("lost words", channel="c:403"), refused),
        engine.handle(msg("kept words", channel="c:ok"), fine),
    )
    assert [r.delivered for r in replies] == [False, True]
    assert "could not send a chat reply in c:403" in caplog.text
    assert "answered" not in caplog.text  # never "answered" after "could not send"
    assert [t.text for t in await store.recent_turns("c:403", 10)] == ["lost words"]  # what the user said
    assert await store.count_turns("c:ok") == 2


# ---- shutdown ----


async def test_drain_finishes_answers_in_progress_and_refuses_new_ones(store):
    generator = FakeGenerator(delay=0.2)
    engine = make_engine(store, generator, parse_config({}))
    outs = [Outbox() for _ in range(5)]
    generator = engine.generator
    tasks = [asyncio.create_task(engine.handle(msg(f"m{i}", channel=f"c:{i}"), outs[i])) for i in range(5)]
    await eventually(lambda: len(generator.calls) == 5, what="five answers generating")
    drained = asyncio.create_task(engine.drain(deadline=5))
    await asyncio.sleep(0)  # one turn of the loop, not a wait: the drain starts and stops taking messages
    late = Outbox()
    assert (await engine.handle(msg("too late", channel="c:late"), late)).kind is ReplyKind.NOTICE
    assert late.sent == [SHUTTING_DOWN]
    result = await drained
    assert result.cancelled == 0 and result.finished >= 5  # the late one is told, and kept for later
    await asyncio.gather(*tasks)
    assert all(out.sent for out in outs)
    assert [await store.count_turns(f"c:{i}") for i in range(5)] == [2] * 5
    assert await store.count_turns("c:late") == 0


async def test_drain_cancels_what_misses_the_deadline_and_writes_nothing_half(store):
    generator = ChannelFaultGenerator(delay=0.1)
    engine = make_engine(store, generator, parse_config({"generation": {"timeout_seconds": 0}}))
    quick = asyncio.create_task(engine.handle(msg("quick", channel="c:q"), Outbox()))
    stuck_out = Outbox()
    stuck = asyncio.create_task(engine.handle(msg("hang please", channel="c:h"), stuck_out))
    await eventually(lambda: len(generator.calls) == 2, what="both answers generating")
    result = await engine.drain(deadline=2)  # the quick one (0.1 s) finishes, the hung one cannot
    assert (result.finished, result.cancelled) == (1, 1)
    assert quick.done() and stuck.cancelled()
    assert await store.count_turns("c:q") == 2 and await store.count_turns("c:h") == 0
    # The cancelled one is told, and stays in the inbox for the next start to answer.
    assert stuck_out.sent == [SHUTTING_DOWN]
    [state] = [e.state.value for e in await store.inbox_entries() if "hang" in e.message]
    assert state == "received"


async def test_drain_waits_for_the_answer_not_for_an_adapter_task_that_lives_on(store):
    """The console handles messages inline in its one long-lived task: the drain must end with the answer."""
    generator = FakeGenerator(delay=0.1)
    engine = make_engine(store, generator, parse_config({}))
    out = Outbox()

    async def console_like():
        await engine.handle(msg("hi"), out)
        await asyncio.sleep(3600)  # waiting for the next line

    adapter = asyncio.create_task(console_like())
    await eventually(lambda: generator.calls, what="the answer is generating")
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await engine.drain(deadline=10)
    assert (result.finished, result.cancelled) == (1, 0)
    assert loop.time() - started < 2
    assert out.sent == ["echo: hi (1 turns seen)"] and not adapter.done()
    adapter.cancel()
