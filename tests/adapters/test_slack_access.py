"""Access through the real Slack adapter (the fake Slack of test_slack.py): a non-admin cannot reset or
purge in a channel or a DM; `forget me` needs no admin and deletes only the asker's own turns."""

# ruff: noqa: F811
from __future__ import annotations

from bot.bench.fake_slack import TEAM_ID, direct_message, event_callback, mention
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


# ---- scoped authority: a workspace admin administers that workspace ----

OTHER_TEAM = "T0OTHER"


async def test_a_workspace_admins_purge_cannot_touch_another_workspaces_turns(fake, bot, store):
    """U2ADMIN administers the fake's workspace; U1USER also talked in another workspace the bot serves."""
    fake.users["U2ADMIN"] = {"is_admin": True}
    other_key = f"slack:{OTHER_TEAM}:C9ELSE"
    for key in (CHANNEL_KEY, DM_KEY, other_key):
        await seed(store, key, "U1USER", f"mine in {key}")
    await deliver(fake, bot, mention("purge <@U1USER>", user="U2ADMIN"), "Ev1")
    assert fake.posted[0]["text"].startswith("Purged slack:U1USER: 4 stored messages deleted")
    assert await store.count_turns(CHANNEL_KEY) == await store.count_turns(DM_KEY) == 0
    assert await store.count_turns(other_key) == 2
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("slack:U2ADMIN", "purge", "slack:U1USER")
    assert entry.detail == f"scope slack:{TEAM_ID}; 4 turns deleted"

    # The same admin writing in a channel of the other workspace (a shared channel) administers nothing.
    event = event_callback(mention("purge <@U1USER>", user="U2ADMIN", channel="C9ELSE"), "Ev2")
    event["team_id"] = OTHER_TEAM
    event["authorizations"][0]["team_id"] = OTHER_TEAM
    await fake.send_event(event)
    await bot.wait_idle()
    assert fake.posted[1]["text"] == REFUSAL.format("purge")
    assert await store.count_turns(other_key) == 2


async def test_a_configured_operator_purges_across_workspaces(fake, engine, store):
    from tests.adapters.test_slack import running, slack_config

    other_key = f"slack:{OTHER_TEAM}:C9ELSE"
    for key in (CHANNEL_KEY, other_key):
        await seed(store, key, "U1USER", f"mine in {key}")
    async with running(engine, slack_config(fake, admin_user_ids=["U4OPS"]), fake) as adapter:
        await deliver(fake, adapter, direct_message("purge U1USER", user="U4OPS"), "Ev1")
    assert fake.posted[0]["text"].startswith("Purged slack:U1USER: 4 stored messages deleted")
    assert await store.count_turns(other_key) == 0
    [entry] = await store.audit_entries()
    assert entry.detail == "scope slack; 4 turns deleted"
