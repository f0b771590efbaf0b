"""Helpers the access, command and retention tests share: a message, a chat turn, a seeded history."""

from bot.core.message import IncomingMessage
from bot.testing import Outbox


def msg(text, channel="discord:1:10", author="alice", admin=False, platform="discord", mentions=()):
    return IncomingMessage(
        platform=platform,
        channel_key=channel,
        author_id=author,
        text=text,
        admin_scope=platform if admin is True else (admin or None),
        mentioned_users=mentions,
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
