"""The safety filter in the engine, with the real offline classifier (no stand-in for it): flagged model
output is never sent nor stored, a fresh sample is tried, then the fallback goes out and is what history
keeps; flagged messages are not answered nor kept as context; everything counted and audited without text."""

from __future__ import annotations

import pytest

from bot.config import parse_config
from bot.core.commands import parse_invocation
from bot.core.message import IncomingMessage, ReplyKind
from bot.core.metrics import REGISTRY
from bot.safety import build_filter
from bot.safety.blocklist import Blocklist
from bot.safety.filter import SafetyFilter
from bot.testing import Outbox, ScriptedGenerator, make_engine
from storage import Role

OFFENSIVE = ["You're a fucking idiot.", "Shut the fuck up.", "Go fuck yourself, moron."]
BENIGN = "I could kill for a coffee right now."
FALLBACK = "Let's talk about something else."


def msg(text, channel="console:a", author="u1", admin=False):
    scope = channel if admin else None
    return IncomingMessage(
        platform="test", channel_key=channel, author_id=author, text=text, admin_scope=scope
    )


def filtered(what: str, reason: str) -> float:
    labels = {"what": what, "reason": reason}
    return REGISTRY.get_sample_value("dialobot_safety_filtered_total", labels) or 0.0


def safety_config(**safety):
    return parse_config({"history": {"max_turns": 10}, "safety": safety})


@pytest.fixture
def reply_filter(profanity_check):
    return SafetyFilter(profanity_check, 0.8, Blocklist(["bananas"]))


async def stored_texts(store, key="console:a"):
    return [(t.role, t.text) for t in await store.recent_turns(key, 100)]


async def test_a_benign_reply_passes_unchanged(store, reply_filter):
    generator = ScriptedGenerator()
    generator.replies = [BENIGN]
    engine = make_engine(store, generator, safety_config(), reply_filter)
    out = Outbox()
    reply = await engine.handle(msg("what would you do for a coffee?"), out)
    assert (reply.kind, out.sent) == (ReplyKind.CHAT, [BENIGN])
    assert len(generator.calls) == 1
    assert await stored_texts(store) == [(Role.USER, "what would you do for a coffee?"), (Role.BOT, BENIGN)]


async def test_an_offensive_reply_is_regenerated_and_the_clean_sample_sent(store, reply_filter):
    generator = ScriptedGenerator()
    generator.replies = [OFFENSIVE[0], "Sorry, I meant: nice to meet you."]
    engine = make_engine(store, generator, safety_config(), reply_filter)
    before = filtered("reply", "classifier")
    out = Outbox()
    await engine.handle(msg("hi"), out)
    assert out.sent == ["Sorry, I meant: nice to meet you."]
    assert len(generator.calls) == 2
    assert generator.calls[0] == generator.calls[1]  # the same prompt, sampled again
    assert await stored_texts(store) == [(Role.USER, "hi"), (Role.BOT, "Sorry, I meant: nice to meet you.")]
    assert filtered("reply", "classifier") == before + 1


async def test_offensive_every_time_sends_the_fallback_and_history_holds_it(store, reply_filter):
    generator = ScriptedGenerator()
    generator.replies = list(OFFENSIVE)
    engine = make_engine(store, generator, safety_config(regenerations=2), reply_filter)
    out = Outbox()
    await engine.handle(msg("say something"), out)
    assert out.sent == [FALLBACK]
    assert len(generator.calls) == 3  # the first reply and 2 regenerations
    assert await stored_texts(store) == [(Role.USER, "say something"), (Role.BOT, FALLBACK)]
    # The next prompt holds the fallback, not what the model said.
    await engine.handle(msg("ok"), out)
    assert generator.calls[-1] == ["say something", FALLBACK, "ok"]
    for text in OFFENSIVE:
        assert all(text not in sent for sent in out.sent)


async def test_no_regeneration_with_greedy_decoding(store, reply_filter):
    generator = ScriptedGenerator()
    generator.replies = [OFFENSIVE[0], "never asked for"]
    config = parse_config({"generation": {"do_sample": False}, "safety": {"regenerations": 3}})
    out = Outbox()
    await make_engine(store, generator, config, reply_filter).handle(msg("hi"), out)
    assert out.sent == [FALLBACK] and len(generator.calls) == 1  # the same prompt would give the same reply


async def test_the_blocklist_catches_what_the_classifier_lets_through(store, reply_filter):
    generator = ScriptedGenerator()
    generator.replies = ["I like b4n4n4s", "I like b.a.n.a.n.a.s", "I like BANANAS"]
    before = filtered("reply", "blocklist")
    out = Outbox()
    await make_engine(store, generator, safety_config(), reply_filter).handle(msg("fruit?"), out)
    assert out.sent == [FALLBACK]
    assert filtered("reply", "blocklist") == before + 3


async def test_the_audit_log_records_no_text_unless_asked(store, reply_filter, caplog):
    generator = ScriptedGenerator()
    generator.replies = [OFFENSIVE[0], "fine"]
    caplog.set_level("DEBUG")
    await make_engine(store, generator, safety_config(), reply_filter).handle(msg("hi"), Outbox())
    [entry] = await store.audit_entries()
    assert (entry.actor, entry.action, entry.target) == ("safety", "filtered reply", "console:a")
    assert "profanity_check" in entry.detail
    assert "idiot" not in entry.detail and "idiot" not in caplog.text

    generator.replies = [OFFENSIVE[0], "fine"]
    config = safety_config(log_text=True)
    await make_engine(store, generator, config, reply_filter).handle(msg("hi"), Outbox())
    latest = (await store.audit_entries())[0]
    assert OFFENSIVE[0] in latest.detail and OFFENSIVE[0] in caplog.text


async def test_a_filter_that_fails_lets_nothing_unchecked_out(store):
    class Broken:
        async def check(self, text, channel_key):
            raise RuntimeError("classifier crashed")

        def describe(self, channel_key):
            return "Safety filter: on"

        async def close(self):
            pass

    generator = ScriptedGenerator()
    out = Outbox()
    config = safety_config(check_input=True)
    await make_engine(store, generator, config, Broken()).handle(msg("hi"), out)
    assert out.sent == [FALLBACK]  # the input was answered, the unchecked replies were not sent


async def test_a_flagged_message_gets_the_short_reply_and_is_not_context(store, reply_filter):
    generator = ScriptedGenerator()
    config = safety_config(check_input=True)
    engine = make_engine(store, generator, config, reply_filter)
    before = filtered("input", "classifier")
    out = Outbox()
    reply = await engine.handle(msg("shut the fuck up, you stupid bot"), out)
    assert reply.kind is ReplyKind.NOTICE
    assert out.sent == [config.safety.input_reply]
    assert generator.calls == [] and await stored_texts(store) == []
    assert filtered("input", "classifier") == before + 1
    [entry] = await store.audit_entries()
    assert (entry.action, entry.target) == ("filtered input", "console:a test:u1")
    await engine.handle(msg("hello"), out)
    assert generator.calls == [["hello"]]  # the flagged message is not in the next prompt


async def test_a_flagged_message_can_be_ignored(store, reply_filter):
    generator = ScriptedGenerator()
    config = safety_config(check_input=True, input_action="ignore")
    engine = make_engine(store, generator, config, reply_filter)
    out = Outbox()
    reply = await engine.handle(msg("you fucking moron"), out)
    assert (reply.kind, out.sent, generator.calls) == (ReplyKind.IGNORED, [], [])


async def test_status_says_whether_the_filter_is_on_and_how_strict(store, profanity_check):
    config = safety_config(threshold=0.8, channel_thresholds={"console:kids": 0.5, "console:adults": 1.0})
    engine = make_engine(store, ScriptedGenerator(), config, build_filter(config.safety))
    for channel, expected in (
        ("console:a", " · safety filter on: profanity_check, threshold 0.80 here (lower is stricter) · "),
        ("console:kids", " · safety filter on: profanity_check, threshold 0.50 here (lower is stricter) · "),
        ("console:adults", " · safety filter off · "),
    ):
        out = Outbox()
        await engine.handle(msg("status", channel=channel), out)
        assert expected in out.sent[0]
    assert parse_invocation("status") is not None


async def test_classifier_none_and_no_blocklist_is_off(store):
    config = safety_config(classifier="none")
    engine = make_engine(store, ScriptedGenerator(), config, build_filter(config.safety))
    generator = engine.generator
    generator.replies = [OFFENSIVE[0]]
    out = Outbox()
    await engine.handle(msg("hi"), out)
    assert out.sent == [OFFENSIVE[0]]
    await engine.handle(msg("status"), out)
    assert " · safety filter off · " in out.sent[-1]
