"""The shipped harness: a test of a conversation is a few lines, and it behaves like the real wiring."""

from bot.config import parse_config
from bot.core.message import IncomingMessage
from bot.testing import Outbox, ScriptedGenerator, make_engine


def said(text: str, key: str = "console:t") -> IncomingMessage:
    return IncomingMessage(platform="console", channel_key=key, author_id="me", text=text, is_direct=True)


async def test_a_conversation_through_the_harness(store):
    generator = ScriptedGenerator()
    engine = make_engine(store, generator, parse_config({}))
    out = Outbox()
    await engine.handle(said("hello"), out)
    generator.replies.append("scripted answer")
    await engine.handle(said("and now?"), out)
    assert out.sent == ["echo: hello (1 turns seen)", "scripted answer"]
    assert generator.calls[-1] == ["hello", "echo: hello (1 turns seen)", "and now?"]


async def test_the_harness_engine_uses_dialogpts_turn_rule(store):
    """A message left unanswered (the model failed) is joined with the next one, as `dialobot run` does."""
    generator = ScriptedGenerator()
    engine = make_engine(store, generator, parse_config({}))
    generator.fail_with = RuntimeError("model down")
    await engine.handle(said("first"), Outbox())
    generator.fail_with = None
    out = Outbox()
    await engine.handle(said("second"), out)
    assert generator.calls[-1] == ["first second"]


async def test_a_refusing_outbox_marks_the_reply_undelivered(store):
    engine = make_engine(store, ScriptedGenerator(), parse_config({}))
    out = Outbox()
    out.fail = True
    reply = await engine.handle(said("hello"), out)
    assert not reply.delivered and out.sent == []
