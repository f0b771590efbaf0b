"""Deleting a user's data and old data, with the audit row written in the same transaction."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.message import IncomingMessage
from storage import AuditRecord, InboxState, NewTurn, Role


async def exchange(store, key, author, text):
    await store.append_turns(key, [NewTurn(Role.USER, author, text), NewTurn(Role.BOT, "bot", f"re: {text}")])


async def texts(store, key):
    return [t.text for t in await store.recent_turns(key, 10_000)]


async def test_a_users_turns_and_the_replies_to_them_go_everywhere_on_that_platform(store):
    for i in range(3):
        await exchange(store, "discord:1:a", "alice", f"a{i}")
        await exchange(store, "discord:1:a", "bob", f"b{i}")
        await exchange(store, "discord:2:b", "alice", f"x{i}")
    await exchange(store, "slack:T:C", "alice", "other platform")
    audit = AuditRecord("discord:alice", "forget me", "discord:alice")
    assert await store.delete_user_turns("discord", "alice", audit=audit) == 12
    assert await texts(store, "discord:1:a") == ["b0", "re: b0", "b1", "re: b1", "b2", "re: b2"]
    assert await texts(store, "discord:2:b") == []
    assert await texts(store, "slack:T:C") == ["other platform", "re: other platform"]
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target, entry.detail) == (
        "discord:alice",
        "forget me",
        "discord:alice",
        "12 turns deleted",
    )


async def test_a_user_turn_that_got_no_reply_does_not_take_the_next_users_reply(store):
    # Alice's message got no reply (the model server was down), so it was stored alone; Bob's came next.
    await store.append_turns("discord:1:a", [NewTurn(Role.USER, "alice", "hello?")])
    await exchange(store, "discord:1:a", "bob", "hi")
    assert await store.delete_user_turns("discord", "alice") == 1
    assert await texts(store, "discord:1:a") == ["hi", "re: hi"]


async def test_exchanges_stored_at_once_by_several_processes_stay_paired(db_url, store):
    from storage import open_store

    # Four bot processes (four connection pools) storing exchanges in one channel at the same moment.
    others = [await open_store(db_url) for _ in range(3)]
    try:
        writers = [store, *others]
        await asyncio.gather(
            *(exchange(writers[i % 4], "slack:T:C", f"user{i % 4}", f"m{i}") for i in range(80))
        )
    finally:
        for other in others:
            await other.close()
    turns = await store.recent_turns("slack:T:C", 1000)
    assert len(turns) == 160
    for asked, answer in zip(turns[::2], turns[1::2], strict=True):
        assert (asked.role, answer.role, answer.text) == (Role.USER, Role.BOT, f"re: {asked.text}")
    assert await store.delete_user_turns("slack", "user1") == 40
    theirs = {f"m{i}" for i in range(1, 80, 4)}
    left = await texts(store, "slack:T:C")
    assert len(left) == 120 and not {t.removeprefix("re: ") for t in left} & theirs


async def test_more_turns_than_one_delete_statement_takes(store):
    for i in range(700):
        await store.append_turns(
            f"discord:{i % 3}",
            [NewTurn(Role.USER, "alice", f"m{i}"), NewTurn(Role.BOT, "bot", f"r{i}")],
        )
    assert await store.delete_user_turns("discord", "alice") == 1400
    assert sum([await store.count_turns(f"discord:{i}") for i in range(3)]) == 0


async def test_an_unknown_user_deletes_nothing_but_is_still_audited(store):
    await exchange(store, "discord:1:a", "alice", "hi")
    audit = AuditRecord("discord:mod", "purge", "discord:nobody")
    assert await store.delete_user_turns("discord", "nobody", audit=audit) == 0
    assert await store.count_turns("discord:1:a") == 2
    assert [e.detail for e in await store.audit_entries()] == ["0 turns deleted"]


async def test_platform_prefix_is_matched_literally(store):
    await exchange(store, "discord:1:a", "alice", "hi")
    assert await store.delete_user_turns("disc%", "alice") == 0
    assert await store.delete_user_turns("disco_d", "alice") == 0
    assert await store.count_turns("discord:1:a") == 2


async def test_turns_before_a_cutoff_are_deleted_and_audited_only_when_some_were(store):
    await exchange(store, "discord:1:a", "alice", "old")
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    audit = AuditRecord("system:retention", "retention", "before now")
    assert await store.delete_turns_before(datetime.now(UTC) - timedelta(days=1), audit=audit) == 0
    assert await store.audit_entries() == []
    assert await store.delete_turns_before(cutoff, audit=audit) == 2
    assert [(e.actor, e.detail) for e in await store.audit_entries()] == [
        ("system:retention", "2 turns deleted")
    ]


async def test_reset_writes_its_audit_row(store):
    await exchange(store, "discord:1:a", "alice", "hi")
    await store.reset_channel("discord:1:a", audit=AuditRecord("discord:mod", "reset", "discord:1:a"))
    await store.reset_channel("discord:1:a")  # without an audit record: none written
    entries = await store.audit_entries()
    assert [(e.action, e.detail) for e in entries] == [("reset", "2 turns deleted")]


async def test_a_scoped_delete_stays_inside_its_prefix_at_whole_key_parts(store):
    for key in ("discord:1:10", "discord:1:10:7", "discord:12:10", "discord:dm:5", "discord:1"):
        await store.append_turns(key, [NewTurn(Role.USER, "alice", key), NewTurn(Role.BOT, "bot", "re")])
    assert await store.delete_user_turns("discord", "alice", within="discord:1") == 6
    assert await store.count_turns("discord:12:10") == 2
    assert await store.count_turns("discord:dm:5") == 2
    assert await store.count_turns("discord:1:10:7") == 0
    assert await store.delete_user_turns("discord", "alice", within="discord:1%") == 0  # no LIKE wildcards
    with pytest.raises(ValueError, match="not a discord conversation prefix"):
        await store.delete_user_turns("discord", "alice", within="slack:T")


async def take_on(store, key: str, author: str, text: str, answered: bool = True) -> int:
    """A message through the inbox as the engine takes it on: received, then answered (or not yet)."""
    platform = key.split(":")[0]
    message = IncomingMessage(platform=platform, channel_key=key, author_id=author, text=text)
    message = replace(message, message_id=f"{key}:{text}", author_name=f"{author} the person")
    inbox_id = await store.receive(platform, message.message_id, key, author, message.to_json())
    if answered:
        await store.finish(inbox_id, InboxState.ANSWERED, ["r1"])
    return inbox_id


async def inbox_texts(store) -> dict[str, tuple[str, str | None]]:
    """Each inbox row's (text, author name), by platform message id."""
    return {
        e.platform_id: (m.text, m.author_name)
        for e in await store.inbox_entries(1000)
        for m in [IncomingMessage.from_json(e.message)]
    }


async def test_forget_me_blanks_the_users_words_in_the_inbox_and_keeps_refusing_their_repeats(store):
    await take_on(store, "discord:1:a", "alice", "my secret")
    await take_on(store, "discord:1:a", "bob", "bob's words")
    await take_on(store, "discord:2:b", "alice", "not answered yet", answered=False)
    await take_on(store, "slack:T:C", "alice", "another platform")
    await store.delete_user_turns("discord", "alice")
    assert await inbox_texts(store) == {
        "discord:1:a:my secret": ("", None),
        "discord:1:a:bob's words": ("bob's words", "bob the person"),
        # Still to be answered after a restart, from its text.
        "discord:2:b:not answered yet": ("not answered yet", "alice the person"),
        "slack:T:C:another platform": ("another platform", "alice the person"),
    }
    # The row stays: the same message delivered again is still refused.
    assert await store.receive("discord", "discord:1:a:my secret", "discord:1:a", "alice", "{}") is None
    # A scoped purge blanks only inside its scope.
    await take_on(store, "discord:3:c", "bob", "in server 3")
    await store.delete_user_turns("discord", "bob", within="discord:3")
    texts_now = await inbox_texts(store)
    assert texts_now["discord:3:c:in server 3"] == ("", None)
    assert texts_now["discord:1:a:bob's words"] == ("bob's words", "bob the person")


async def test_reset_blanks_the_channels_answered_inbox_rows(store):
    await take_on(store, "discord:1:a", "alice", "in a")
    await take_on(store, "discord:1:a", "bob", "waiting in a", answered=False)
    await take_on(store, "discord:1:b", "alice", "in b")
    await store.reset_channel("discord:1:a")
    assert await inbox_texts(store) == {
        "discord:1:a:in a": ("", None),
        "discord:1:a:waiting in a": ("waiting in a", "bob the person"),
        "discord:1:b:in b": ("in b", "alice the person"),
    }


async def test_retention_deletes_answered_inbox_rows_of_that_age(store):
    from bot.config import parse_config
    from bot.ops.retention import prune_inbox

    await take_on(store, "discord:1:a", "alice", "answered")
    await take_on(store, "discord:1:a", "alice", "still waiting", answered=False)
    config = parse_config({"access": {"retention_days": 1}})  # shorter than inbox.keep_days
    assert await prune_inbox(store, config, now=datetime.now(UTC) + timedelta(hours=1)) == 0
    assert len(await store.inbox_entries()) == 2  # nothing that old
    assert await prune_inbox(store, config, now=datetime.now(UTC) + timedelta(days=1, seconds=1)) == 1
    assert list(await inbox_texts(store)) == ["discord:1:a:still waiting"]
