"""Access through the real Slack adapter (the fake Slack of test_slack.py): a non-admin cannot reset or
purge in a channel or a DM; `forget me` needs no admin and deletes only the asker's own turns."""

# ruff: noqa: F811
from __future__ import annotations

from bot.bench.fake_slack import direct_message, event_callback, mention
from bot.core.admission import BUSY
from storage import NewTurn, Role

# The fake Slack and the running adapter are test_slack.py's fixtures, imported to be reused (pytest finds
# them by name).
from tests.adapters.test_slack import CHANNEL_KEY, DM_KEY, bot, deliver, fake  # noqa: F401

REFUSAL = "Sorry, only admins can use `{}` here."


async def seed(store, key, user, text):
    await store.append_turns(key, [NewTurn(Role.USER, user, text), NewTurn(Role.BOT, "bot", "ok")])


async def test_a_non_admin_cannot_reset_or_purge_by_any_path(fake, bot, store):
    fake.users["U1USER"] = {}
    fake.users["U2ADMIN"] = {"is_admin": True}
    await seed(store, CHANNEL_KEY, "U2ADMIN", "admin notes")
    await deliver(fake, bot, mention("purge U2ADMIN"), "Ev1")
    await deliver(fake, bot, mention("reset", ts="1700000001.000100"), "Ev2")
    await deliver(fake, bot, direct_message("purge <@U2ADMIN>"), "Ev3")
    await deliver(fake, bot, mention("!purge U2ADMIN", user="U9GHOST", ts="1700000002.000100"), "Ev4")
    assert [p["text"] for p in fake.posted] == [
        REFUSAL.format("purge"),
        REFUSAL.format("reset"),
        REFUSAL.format("purge"),
        REFUSAL.format("purge"),
    ]
    assert await store.count_turns(CHANNEL_KEY) == 2
    assert await store.audit_entries() == []


async def test_forget_me_over_slack_needs_no_admin_and_deletes_only_the_askers_turns(fake, bot, store):
    await seed(store, CHANNEL_KEY, "U1USER", "mine")
    await seed(store, CHANNEL_KEY, "U2OTHER", "theirs")
    await seed(store, DM_KEY, "U1USER", "mine in private")
    await deliver(fake, bot, mention("forget me"), "Ev1")
    await deliver(fake, bot, mention("forget me confirm", ts="1700000001.000100"), "Ev2")
    assert fake.posted[1]["text"].startswith("Done: I deleted 4 stored messages")
    assert [t.text for t in await store.recent_turns(CHANNEL_KEY, 10)] == ["theirs", "ok"]
    assert await store.count_turns(DM_KEY) == 0
    assert fake.calls_to("users.info") == []  # no admin lookup for a command anyone may run


async def test_a_flood_through_slack_gets_exactly_one_reply_per_event(fake, bot, store, fake_generator):
    """30 mentions at once over Socket Mode: one post each (an answer or "busy"), answers stored in order."""
    fake_generator.delay = 0.02
    for i in range(30):
        event = mention(f"flood {i}", ts=f"1700000100.{i:06d}")
        await fake.send_event(event_callback(event, f"EvFlood{i}"))
    await bot.wait_idle()
    texts = [p["text"] for p in fake.posted]
    assert len(texts) == 30
    answers = [t for t in texts if t.startswith("echo: ")]
    busy = [t for t in texts if not t.startswith("echo: ")]
    assert all(t == BUSY for t in busy)
    assert [int(a.split()[2]) for a in answers] == sorted(int(a.split()[2]) for a in answers)
    turns = await store.recent_turns(CHANNEL_KEY, 100)
    assert [t.text for t in turns if t.role is Role.BOT] == answers
