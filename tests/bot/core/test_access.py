"""Who is answered at all: channel allow/deny lists and the user deny list."""

import pytest

from bot.config import parse_config
from bot.core.message import ReplyKind
from bot.testing import Outbox, make_engine
from bot.testing import ScriptedGenerator as FakeGenerator
from tests.bot.conversation import chat, msg

# ---- channel and user lists ----


@pytest.mark.parametrize(
    ("access", "channel", "author", "answered"),
    [
        ({}, "discord:1:10", "alice", True),
        ({"allow_channels": ["discord:1"]}, "discord:1:10:99", "alice", True),  # a thread of the server
        ({"allow_channels": ["discord:1"]}, "discord:12:10", "alice", False),  # a prefix is a whole part
        ({"allow_channels": ["discord:1:10"]}, "discord:1:20", "alice", False),
        ({"deny_channels": ["discord:1:10"]}, "discord:1:10", "alice", False),
        ({"deny_channels": ["discord:1:10"]}, "discord:1:10:5", "alice", False),
        ({"allow_channels": ["discord:1"], "deny_channels": ["discord:1:10"]}, "discord:1:10", "a", False),
        ({"deny_users": ["discord:mallory"]}, "discord:1:10", "mallory", False),
        ({"deny_users": ["slack:mallory"]}, "discord:1:10", "mallory", True),  # ids are per platform
    ],
)
async def test_channel_and_user_lists(store, access, channel, author, answered):
    generator = FakeGenerator()
    engine = make_engine(store, generator, parse_config({"access": access}))
    out = Outbox()
    reply = await engine.handle(msg("hello", channel=channel, author=author), out)
    assert (reply.kind is ReplyKind.CHAT) is answered
    if not answered:
        assert reply.kind is ReplyKind.IGNORED and out.sent == [] and generator.calls == []
        assert await store.count_turns(channel) == 0


async def test_a_denied_user_cannot_run_commands_either(store):
    engine = make_engine(store, FakeGenerator(), parse_config({"access": {"deny_users": ["discord:root"]}}))
    await chat(engine, "keep me", author="alice")
    out = Outbox()
    reply = await engine.handle(msg("reset", author="root", admin=True), out)
    assert reply.kind is ReplyKind.IGNORED and out.sent == []
    assert await store.count_turns("discord:1:10") == 2
