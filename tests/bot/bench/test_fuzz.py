"""Bad input, generated: arbitrary Unicode, control, right-to-left and zero-width characters, enormous and
empty messages, special-token text, command look-alikes. Through normalization (Slack's cleaning, the engine's
storable text), the command parser, prompt building and the whole engine: no crash, exactly one clear reply,
and history holds exactly what was answered."""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.slack import clean_text
from bot.bench.loadtest import CONTROL, RTL, SPECIAL, ZERO_WIDTH
from bot.config import parse_config
from bot.core.commands import COMMANDS, parse_invocation
from bot.core.engine import EMPTY_MESSAGE_HINT
from bot.core.message import IncomingMessage, ReplyKind
from bot.core.sanitize import is_blank, storable_text
from bot.generation.prompt import build_prompt_ids, encode_turn
from bot.testing import Outbox, make_engine
from bot.testing import ScriptedGenerator as FakeGenerator

MAX_CHARS = 300
FIXTURES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

pieces = st.sampled_from(
    SPECIAL + ZERO_WIDTH + RTL + CONTROL + ["hello", " ", "\n", "<@U1>", "&amp;", "🙂", "e\u0301", "ﷺ"]
)
commandish = st.sampled_from([c.name for c in COMMANDS]).flatmap(
    lambda name: st.tuples(st.sampled_from(["", "/", "!", "//"]), st.just(name), st.text(max_size=12)).map(
        "".join
    )
)
hostile = st.one_of(
    st.text(max_size=400),  # any code point, lone surrogates included
    st.lists(pieces, max_size=40).map("".join),
    commandish,
    st.integers(MAX_CHARS, 20 * MAX_CHARS).map(lambda n: ("word " * n)[:n]),
    st.integers(MAX_CHARS, 5 * MAX_CHARS).map(lambda n: "\u200b" * n + "x"),
)
channel_numbers = itertools.count()


@given(hostile)
def test_the_command_parser_never_crashes_and_only_matches_whole_commands(text):
    found = parse_invocation(text)
    if found is not None:
        command, args = found
        words = text.strip().lstrip("/!").split()
        assert [w.casefold() for w in words[: len(command.name.split())]] == command.name.split()
        assert len(args) <= 1


@given(hostile)
def test_storable_text_encodes_and_keeps_every_valid_character(text):
    clean = storable_text(text)
    clean.encode("utf-8")  # never raises: a database driver will accept it
    assert "\x00" not in clean
    if not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        assert clean == text.replace("\x00", "")


@given(hostile)
def test_slack_cleaning_never_crashes(text):
    cleaned = clean_text(text, "UBOT")
    assert cleaned == cleaned.strip()


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@settings(max_examples=100, deadline=None)
@given(st.lists(hostile, min_size=1, max_size=6), st.integers(2, 200))
def test_prompts_fit_and_user_text_never_forges_a_turn_boundary(tiny_tokenizer, turns, budget):
    eos = tiny_tokenizer.eos_token_id
    encoded = [encode_turn(tiny_tokenizer, t) for t in turns]
    assert all(eos not in ids for ids in encoded)  # `<|endoftext|>` typed by a user is text, not EOS
    prompt = build_prompt_ids(encoded, eos, budget)
    assert len(prompt) <= budget and prompt[-1] == eos
    boundaries = prompt.count(eos)
    assert 1 <= boundaries <= len(turns)


@FIXTURES
@given(text=hostile, admin=st.booleans())
async def test_the_engine_answers_anything_exactly_once_and_stores_it_whole(store, text, admin):
    generator = FakeGenerator()
    engine = make_engine(store, generator, parse_config({"limits": {"max_message_chars": MAX_CHARS}}))
    key = f"fuzz:{next(channel_numbers)}"
    out = Outbox()
    msg = IncomingMessage(
        platform="fuzz",
        channel_key=key,
        author_id="u",
        text=text,
        admin_scope="fuzz" if admin else None,
    )
    reply = await engine.handle(msg, out)
    assert len(out.sent) == 1 and out.sent[0].strip()
    stored = await store.recent_turns(key, 10)
    if reply.kind is ReplyKind.CHAT:
        [asked] = generator.calls
        assert 0 < len(asked[-1]) <= MAX_CHARS
        assert [t.text for t in stored] == [asked[-1], generator_answer(asked)]
    else:
        assert stored == []
    if is_blank(storable_text(text)):
        assert out.sent == [EMPTY_MESSAGE_HINT] and generator.calls == []


def generator_answer(turns):
    return f"echo: {turns[-1]} ({len(turns)} turns seen)"


@pytest.mark.parametrize("text", ["\u200b", "\u200f\u200e", " \u2060 \ufeff", "\x00", "\u202e\n\t"])
async def test_a_message_with_nothing_visible_gets_the_hint(engine, fake_generator, store, text):
    out = Outbox()
    msg = IncomingMessage(platform="fuzz", channel_key="fuzz:blank", author_id="u", text=text)
    assert (await engine.handle(msg, out)).kind is ReplyKind.NOTICE
    assert out.sent == [EMPTY_MESSAGE_HINT] and fake_generator.calls == []
    assert await store.count_turns("fuzz:blank") == 0
