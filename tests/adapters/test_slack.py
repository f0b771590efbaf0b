"""End-to-end tests of the Slack adapter: the real slack-bolt app against a fake Slack on 127.0.0.1.

Socket Mode runs slack_sdk's aiohttp WebSocket client against the fake's socket; HTTP mode posts signed
requests to the app's own aiohttp endpoint, through bolt's signature verification. Tests read "Slack sends
this event, expect these Web API calls and this stored history".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from adapters import slack
from adapters.slack import MESSAGE_LIMIT, SlackAdapter, make_client
from bot.bench import fake_slack
from bot.bench.fake_slack import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER_ID,
    SIGNING_SECRET,
    TEAM_ID,
    FakeSlack,
    direct_message,
    event_callback,
    mention,
)
from bot.config import Config, parse_config
from bot.core.engine import ChatEngine
from bot.errors import ConfigError, DialobotError
from bot.safety.blocklist import Blocklist
from bot.safety.filter import SafetyFilter
from bot.testing import make_engine
from storage import NewTurn, Role, open_store
from tests.waiting import eventually

CHANNEL_KEY = f"slack:{TEAM_ID}:C1CHAN"
DM_KEY = f"slack:{TEAM_ID}:D1DM"
THREADED = mention("in a thread", ts="1700000002.000100", thread_ts="1700000000.000100")
THREAD_START = "1700000005.000100"
REFUSAL = "Sorry, only admins can use `reset` here."


@pytest.fixture
def fake(slack_fake: FakeSlack) -> FakeSlack:
    return slack_fake


@pytest.fixture
def slack_env(monkeypatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)


def slack_config(fake: FakeSlack, **slack_keys) -> Config:
    return parse_config(
        {"history": {"max_turns": 10}, "slack": {"enabled": True, "api_url": fake.api_url, **slack_keys}}
    )


@contextlib.asynccontextmanager
async def running(engine: ChatEngine, config: Config, fake: FakeSlack) -> AsyncIterator[SlackAdapter]:
    """A started adapter, connected to the fake over Socket Mode."""
    adapter = SlackAdapter(engine, config, make_client(BOT_TOKEN, fake.api_url), SIGNING_SECRET)
    await adapter.start_socket_mode(APP_TOKEN)
    await fake.wait_connected()
    try:
        yield adapter
    finally:
        await adapter.close()


@contextlib.asynccontextmanager
async def serving_http(engine: ChatEngine, fake: FakeSlack) -> AsyncIterator[tuple[SlackAdapter, str]]:
    """A started adapter in HTTP mode, and the URL of its Events API endpoint."""
    config = slack_config(fake, mode="http")
    adapter = SlackAdapter(engine, config, make_client(BOT_TOKEN, fake.api_url), SIGNING_SECRET)
    port = await adapter.start_http("127.0.0.1", 0)
    try:
        yield adapter, f"http://127.0.0.1:{port}{slack.EVENTS_PATH}"
    finally:
        await adapter.close()


@pytest.fixture
async def bot(engine, fake) -> AsyncIterator[SlackAdapter]:
    """The adapter in Socket Mode with the default config."""
    async with running(engine, slack_config(fake), fake) as adapter:
        yield adapter


async def deliver(fake: FakeSlack, bot: SlackAdapter, event: dict, event_id: str, retry: int = 0) -> None:
    """Send `event` over the socket, wait for its ack, then for the answer to be finished."""
    reason = "timeout" if retry else ""
    await fake.send_event(event_callback(event, event_id), retry_attempt=retry, retry_reason=reason)
    await bot.wait_idle()


async def history(store, key: str) -> list[tuple[str, str]]:
    return [(turn.role.value, turn.text) for turn in await store.recent_turns(key, 100)]


# ---- conversations ----


async def test_the_first_event_reuses_the_start_up_auth_test_and_is_acked_at_once(fake, engine, store):
    """Found with a slow `auth.test` (3.5 s): the first event after start waited for a second one before it
    was acknowledged, past Slack's 3 s. The answer from start-up now serves every event."""
    adapter = SlackAdapter(engine, slack_config(fake), make_client(BOT_TOKEN, fake.api_url), SIGNING_SECRET)
    await adapter.check_auth()
    await adapter.start_socket_mode(APP_TOKEN)
    await fake.wait_connected()
    try:
        fake.slow["auth.test"] = 3.5
        envelope = await fake.send_event(event_callback(mention("first!"), "Ev1"), wait_for_ack=False)
        async with asyncio.timeout(2):  # acknowledged well within Slack's 3 s
            await fake.wait_for(f"ack:{envelope}")
        await adapter.wait_idle()
        assert fake.posted == [{"channel": "C1CHAN", "text": "echo: first! (1 turns seen)"}]
        assert len(fake.calls_to("auth.test")) == 1  # start-up's own
    finally:
        await adapter.close()


async def test_mention_in_channel_is_acked_then_answered_in_the_channel(fake, bot, store, fake_generator):
    envelope = await fake.send_event(event_callback(mention("hello there"), "Ev1"))
    await bot.wait_idle()

    assert [ack["envelope_id"] for ack in fake.acks] == [envelope]
    assert fake.log.index(f"ack:{envelope}") < fake.log.index("call:chat.postMessage")
    assert len(fake.calls_to("auth.test")) == 1, "without start-up's answer, the first event asks once"
    assert fake.posted == [{"channel": "C1CHAN", "text": "echo: hello there (1 turns seen)"}]
    assert fake_generator.calls == [["hello there"]]  # the <@U0BOT> mention never reaches the model
    assert await history(store, CHANNEL_KEY) == [
        ("user", "hello there"),
        ("bot", "echo: hello there (1 turns seen)"),
    ]


async def test_dm_and_channel_are_separate_conversations(fake, bot, store, fake_generator):
    await deliver(fake, bot, mention("in the channel"), "Ev1")
    await deliver(fake, bot, direct_message("in private"), "Ev2")
    await deliver(fake, bot, direct_message(f"<@{BOT_USER_ID}> again", ts="1700000001.000200"), "Ev3")

    assert [(p["channel"], p["text"]) for p in fake.posted] == [
        ("C1CHAN", "echo: in the channel (1 turns seen)"),
        ("D1DM", "echo: in private (1 turns seen)"),
        ("D1DM", "echo: again (3 turns seen)"),
    ]
    assert len(await history(store, CHANNEL_KEY)) == 2
    assert len(await history(store, DM_KEY)) == 4


async def test_thread_is_answered_in_the_thread_as_its_own_conversation(fake, bot, store):
    await deliver(fake, bot, mention("top level"), "Ev1")
    await deliver(fake, bot, THREADED, "Ev2")

    assert fake.posted[1] == {
        "channel": "C1CHAN",
        "thread_ts": "1700000000.000100",
        "text": "echo: in a thread (1 turns seen)",
    }
    assert len(await history(store, CHANNEL_KEY)) == 2
    assert len(await history(store, f"{CHANNEL_KEY}:1700000000.000100")) == 2


async def test_thread_folded_into_the_channel_when_configured(fake, engine, store):
    config = slack_config(fake, thread_is_conversation=False)
    async with running(engine, config, fake) as bot:
        await deliver(fake, bot, mention("top level"), "Ev1")
        await deliver(fake, bot, THREADED, "Ev2")

    assert fake.posted[1]["thread_ts"] == "1700000000.000100"
    assert fake.posted[1]["text"] == "echo: in a thread (3 turns seen)"
    assert len(await history(store, CHANNEL_KEY)) == 4


async def test_always_thread_answers_top_level_mentions_in_a_thread(fake, engine, store):
    async with running(engine, slack_config(fake, always_thread=True), fake) as bot:
        await deliver(fake, bot, mention("start", ts=THREAD_START), "Ev1")
        await deliver(fake, bot, mention("go on", ts="1700000006.000100", thread_ts=THREAD_START), "Ev2")
        await deliver(fake, bot, direct_message("hi"), "Ev3")

    assert [(p.get("thread_ts"), p["text"]) for p in fake.posted] == [
        (THREAD_START, "echo: start (1 turns seen)"),
        (THREAD_START, "echo: go on (3 turns seen)"),
        (None, "echo: hi (1 turns seen)"),  # DMs stay flat
    ]
    assert len(await history(store, f"{CHANNEL_KEY}:{THREAD_START}")) == 4


async def test_bot_edited_deleted_and_own_messages_are_acked_and_ignored(fake, bot, fake_generator):
    ignored = [
        direct_message("from another bot", bot_id="B0OTHER", subtype="bot_message"),
        direct_message("my own reply", user=BOT_USER_ID, bot_id=fake_slack.BOT_ID),
        {"type": "message", "channel_type": "im", "channel": "D1DM", "subtype": "message_changed",
         "message": {"user": "U1USER", "text": "edited"}, "ts": "1700000003.000100"},
        {"type": "message", "channel_type": "im", "channel": "D1DM", "subtype": "message_deleted",
         "deleted_ts": "1700000000.000200", "ts": "1700000003.000200"},
        {**direct_message("a channel message"), "channel_type": "channel", "channel": "C1CHAN"},
        mention("a mention inside a DM also arrives as a message event", channel="D1DM"),
    ]  # fmt: skip
    for number, event in enumerate(ignored):
        await deliver(fake, bot, event, f"EvIgnored{number}")

    assert len(fake.acks) == len(ignored)
    assert fake.posted == []
    assert fake_generator.calls == []


async def test_slack_markup_is_unescaped_for_the_model_and_escaped_in_replies(fake, bot, fake_generator):
    fake_generator.replies = ["<!channel> fish & chips"]
    await deliver(fake, bot, mention("is 1 &lt; 2 &amp; 3 &gt; 2?"), "Ev1")

    assert fake_generator.calls == [["is 1 < 2 & 3 > 2?"]]
    assert fake.posted[0]["text"] == "&lt;!channel&gt; fish &amp; chips"  # no @channel ping from the model


# ---- Slack re-deliveries ----


async def test_socket_mode_retry_of_the_same_event_is_answered_once(fake, bot, store):
    await deliver(fake, bot, mention("hello"), "EvSame")
    await deliver(fake, bot, mention("hello"), "EvSame", retry=1)
    await deliver(fake, bot, mention("hello"), "EvSame", retry=2)

    assert len(fake.acks) == 3, "every delivery is acked, so Slack stops re-sending"
    assert len(fake.posted) == 1
    assert len(await history(store, CHANNEL_KEY)) == 2


async def test_retry_racing_the_original_is_answered_once(fake, engine, fake_generator):
    fake_generator.delay = 0.3  # the retry arrives while the original is still being generated
    async with running(engine, slack_config(fake), fake) as bot:
        await fake.send_event(event_callback(mention("slow"), "EvRace"))
        await fake.send_event(event_callback(mention("slow"), "EvRace"), retry_attempt=1, retry_reason="x")
        await bot.wait_idle()

    assert len(fake.acks) == 2
    assert len(fake.posted) == 1


async def test_retry_after_a_restart_is_not_answered_again(fake, db_url, fake_generator, config):
    first_store = await open_store(db_url)
    async with running(make_engine(first_store, fake_generator, config), slack_config(fake), fake) as bot:
        await deliver(fake, bot, mention("hello"), "EvRestart")
    await first_store.close()

    second_store = await open_store(db_url)
    try:
        async with running(
            make_engine(second_store, fake_generator, config), slack_config(fake), fake
        ) as bot:
            await deliver(fake, bot, mention("hello"), "EvRestart", retry=1)
            await deliver(fake, bot, mention("something new", ts="1700000009.000100"), "EvNew")
        turns = await history(second_store, CHANNEL_KEY)
    finally:
        await second_store.close()

    assert len(fake.acks) == 3
    assert [p["text"] for p in fake.posted] == [
        "echo: hello (1 turns seen)",
        "echo: something new (3 turns seen)",
    ]
    assert len(turns) == 4


# ---- HTTP Events API ----


async def test_http_mention_is_answered_and_its_retry_only_acked(fake, engine, store):
    async with serving_http(engine, fake) as (bot, url):
        payload = event_callback(mention("over http"), "EvHttp")
        first = await fake.deliver(url, payload)
        await bot.wait_idle()
        retried = await fake.deliver(url, payload, retry_num=1)
        await bot.wait_idle()

    assert first[0] == retried[0] == 200
    assert fake.posted == [{"channel": "C1CHAN", "text": "echo: over http (1 turns seen)"}]
    assert len(await history(store, CHANNEL_KEY)) == 2


async def test_http_url_verification_is_answered(fake, engine):
    async with serving_http(engine, fake) as (_, url):
        status, body = await fake.deliver(url, {"type": "url_verification", "challenge": "abc123"})

    assert status == 200
    assert "abc123" in body


async def test_http_bad_or_stale_signature_gets_401(fake, engine, fake_generator):
    payload = event_callback(mention("let me in"), "EvForged")
    async with serving_http(engine, fake) as (bot, url):
        forged = await fake.deliver(url, payload, secret="not-the-secret")
        stale = await fake.deliver(url, payload, timestamp=int(time.time()) - 10 * 60)
        await bot.wait_idle()

    assert forged[0] == 401
    assert stale[0] == 401
    assert fake.posted == []
    assert fake_generator.calls == []


# ---- commands and admins ----


async def seed_history(store, key: str = CHANNEL_KEY) -> None:
    await store.append_turns(key, [NewTurn(Role.USER, "U1USER", "hi"), NewTurn(Role.BOT, "bot", "hello")])


async def test_reset_by_a_workspace_admin_clears_the_conversation(fake, bot, store):
    await seed_history(store)
    fake.users["U2ADMIN"] = {"is_admin": True}
    await deliver(fake, bot, mention("reset", user="U2ADMIN"), "Ev1")
    await deliver(fake, bot, mention("reset", user="U2ADMIN", ts="1700000001.000100"), "Ev2")

    assert fake.posted[0]["text"].startswith("History cleared (2 turns deleted)")
    assert await store.count_turns(CHANNEL_KEY) == 0
    assert [call.args["user"] for call in fake.calls_to("users.info")] == ["U2ADMIN"], "roles are cached"


async def test_reset_by_an_owner_or_a_configured_admin_is_allowed(fake, engine, store):
    fake.users["U3OWNER"] = {"is_owner": True}
    async with running(engine, slack_config(fake, admin_user_ids=["U4LISTED"]), fake) as bot:
        await seed_history(store)
        await deliver(fake, bot, mention("reset", user="U3OWNER"), "Ev1")
        await seed_history(store)
        await deliver(fake, bot, mention("!reset", user="U4LISTED", ts="1700000001.000100"), "Ev2")

    assert [p["text"][:15] for p in fake.posted] == ["History cleared"] * 2
    assert [call.args["user"] for call in fake.calls_to("users.info")] == ["U3OWNER"]


async def test_reset_by_a_non_admin_is_refused_and_deletes_nothing(fake, bot, store):
    await seed_history(store)
    fake.users["U1USER"] = {}
    await deliver(fake, bot, mention("reset"), "Ev1")
    await deliver(fake, bot, direct_message("reset"), "Ev2")  # the DM is no way around it
    await deliver(fake, bot, mention("reset", user="U9GHOST", ts="1700000001.000100"), "Ev3")  # unknown user

    assert [p["text"] for p in fake.posted] == [REFUSAL, REFUSAL, REFUSAL]
    assert await store.count_turns(CHANNEL_KEY) == 2


async def test_help_and_status_need_no_role_lookup(fake, bot, store):
    await deliver(fake, bot, mention("help"), "Ev1")
    await deliver(fake, bot, mention("status", ts="1700000001.000100"), "Ev2")
    await deliver(fake, bot, mention("", ts="1700000002.000100"), "Ev3")

    help_text, status_text, hint = (p["text"] for p in fake.posted)
    assert "reset" in help_text and "(admins only)" in help_text
    assert "turns stored in this conversation: 0" in status_text
    assert "Say something" in hint
    assert fake.calls_to("users.info") == []
    assert await store.count_turns(CHANNEL_KEY) == 0  # command answers are not chat history


# ---- output ----


async def test_long_answer_is_split_below_the_limit_in_the_same_thread(fake, bot, store, fake_generator):
    long_answer = " ".join(f"word{n}" for n in range(2000))  # ~15,000 characters
    fake_generator.replies = [long_answer]
    await deliver(fake, bot, mention("tell me everything", thread_ts="1700000000.000001"), "Ev1")

    assert len(fake.posted) >= 5
    assert all(len(p["text"]) <= MESSAGE_LIMIT for p in fake.posted)
    assert {p["thread_ts"] for p in fake.posted} == {"1700000000.000001"}
    assert " ".join(p["text"] for p in fake.posted).split() == long_answer.split()
    assert (await history(store, f"{CHANNEL_KEY}:1700000000.000001"))[-1] == ("bot", long_answer)


async def test_a_long_reply_is_never_split_inside_an_html_entity(fake, bot, store, fake_generator):
    """Found with a reply whose `<` fell at the 3,000-character cut: Slack got `...xyz&` then `lt;xyz...`."""
    answer = "x" * 2997 + "<xyz " + "fish & chips <b> " * 400
    fake_generator.replies = [answer]
    await deliver(fake, bot, mention("a long one please"), "Ev1")

    posted = [p["text"] for p in fake.posted]
    assert len(posted) >= 3
    assert all(len(text) <= MESSAGE_LIMIT for text in posted)
    for text in posted:  # every `&` starts a whole entity, and none is cut at either end
        assert re.fullmatch(r"(?:[^&<>]|&(?:amp|lt|gt);)*", text), text[:40] + "..." + text[-40:]
    unescaped = [t.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for t in posted]
    assert "".join(unescaped).replace(" ", "") == answer.replace(" ", "")  # cuts drop only spaces
    assert (await history(store, CHANNEL_KEY))[-1] == ("bot", answer.strip())


async def test_rate_limited_post_is_retried_and_delivered(fake, bot, store):
    fake.rate_limit_next("chat.postMessage", retry_after=0)
    await deliver(fake, bot, mention("hello"), "Ev1")

    assert [call.status for call in fake.calls_to("chat.postMessage")] == [429, 200]
    assert fake.posted == [{"channel": "C1CHAN", "text": "echo: hello (1 turns seen)"}]
    assert len(await history(store, CHANNEL_KEY)) == 2


async def test_failed_post_is_logged_and_only_the_users_turn_is_kept(fake, bot, store, caplog):
    fake.fail_next("chat.postMessage", "not_in_channel")
    with caplog.at_level(logging.WARNING):
        await deliver(fake, bot, mention("hello"), "Ev1")

    assert fake.posted == []
    assert await history(store, CHANNEL_KEY) == [("user", "hello")]
    assert "not_in_channel" in caplog.text


# ---- serve(), secrets and the manifest ----


async def test_serve_in_socket_mode_answers_until_cancelled(fake, engine, slack_env):
    task = asyncio.create_task(slack.serve(engine, slack_config(fake)))
    await fake.wait_connected()
    await fake.send_event(event_callback(mention("via serve"), "Ev1"))
    await fake.wait_for("call:chat.postMessage")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert fake.posted == [{"channel": "C1CHAN", "text": "echo: via serve (1 turns seen)"}]
    assert fake.calls_to("apps.connections.open")[0].token == APP_TOKEN


async def test_serve_in_http_mode_listens_on_the_configured_port(fake, engine, slack_env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = slack_config(fake, mode="http", http_host="127.0.0.1", http_port=port)
    task = asyncio.create_task(slack.serve(engine, config))
    url = f"http://127.0.0.1:{port}{slack.EVENTS_PATH}"

    async def delivered() -> tuple[int, str] | None:
        with contextlib.suppress(OSError):  # refused until the server is listening
            return await fake.deliver(url, event_callback(mention("via http serve"), "Ev1"))
        return None

    status, _ = await eventually(delivered, what="the Events API endpoint is listening")
    await fake.wait_for("call:chat.postMessage")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert status == 200
    assert fake.posted[0]["text"] == "echo: via http serve (1 turns seen)"


async def test_build_app_serves_under_an_aiohttp_server_of_your_own(fake, engine, slack_env):
    app = slack.build_app(engine, slack_config(fake, mode="http"))
    runner = web.AppRunner(app.web_app(path="/events"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
    try:
        forged = await fake.deliver(url, event_callback(mention("forged"), "Ev0"), secret="guess")
        signed = await fake.deliver(url, event_callback(mention("signed"), "Ev1"))
        await fake.wait_for("call:chat.postMessage")
    finally:
        await runner.cleanup()

    assert (forged[0], signed[0]) == (401, 200)
    assert fake.posted == [{"channel": "C1CHAN", "text": "echo: signed (1 turns seen)"}]


async def test_missing_secret_is_a_config_error_naming_the_key(fake, engine, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"slack\.bot_token_env: environment variable SLACK_BOT_TOKEN"):
        await slack.serve(engine, slack_config(fake))
    monkeypatch.setenv("MY_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"slack\.signing_secret_env"):
        await slack.serve(engine, slack_config(fake, mode="http", bot_token_env="MY_BOT_TOKEN"))


async def test_refused_tokens_stop_start_up_with_one_line(fake, engine, slack_env, monkeypatch):
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-wrong")
    with pytest.raises(DialobotError, match="app token was refused: invalid_auth"):
        await asyncio.wait_for(slack.serve(engine, slack_config(fake)), 5)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong")
    with pytest.raises(DialobotError, match="bot token was refused: invalid_auth"):
        await asyncio.wait_for(slack.serve(engine, slack_config(fake)), 5)


def test_manifest_enables_socket_mode_and_the_events_the_adapter_handles():
    manifest = yaml.safe_load((Path(slack.__file__).parent / "slack_manifest.yml").read_text())
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert set(settings["event_subscriptions"]["bot_events"]) == {"app_mention", "message.im"}
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "im:history", "users:read"} <= scopes
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True


# ---- the safety filter, with the real offline classifier ----

OFFENSIVE = ["You're a fucking idiot.", "Shut the fuck up, moron.", "Go fuck yourself."]


async def test_offensive_model_output_never_reaches_slack(fake, store, fake_generator, profanity_check):
    config = parse_config(
        {
            "history": {"max_turns": 10},
            "slack": {"enabled": True, "api_url": fake.api_url},
            "safety": {"check_input": True, "input_action": "ignore"},
        }
    )
    engine = make_engine(store, fake_generator, config, SafetyFilter(profanity_check, 0.8, Blocklist([])))
    fake_generator.replies = [*OFFENSIVE, "I could kill for a coffee right now."]
    async with running(engine, config, fake) as bot:
        await deliver(fake, bot, mention("say something rude", ts="1700000001.000100"), "Ev1")
        await deliver(fake, bot, mention("you stupid fucking bot", ts="1700000002.000100"), "Ev2")
        await deliver(fake, bot, mention("and now?", ts="1700000003.000100"), "Ev3")

    assert [p["text"] for p in fake.posted] == [
        config.safety.fallback_reply,
        "I could kill for a coffee right now.",  # a benign reply passes unchanged
    ]  # the flagged message was ignored: no reply at all
    assert len(fake_generator.calls) == 4  # the first reply, 2 regenerations, then "and now?"
    assert fake_generator.calls[-1] == ["say something rude", config.safety.fallback_reply, "and now?"]
    sent = " ".join(str(call) for call in fake.calls).lower()  # every Web API call the bot made
    assert not [word for word in ("fuck", "idiot", "moron") if word in sent]
    assert await history(store, CHANNEL_KEY) == [
        ("user", "say something rude"),
        ("bot", config.safety.fallback_reply),
        ("user", "and now?"),
        ("bot", "I could kill for a coffee right now."),
    ]
