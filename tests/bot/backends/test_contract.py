"""The behaviour every backend shares with the core: history in, reply out, EOS ends the reply, special-token
text stays text, batches of different lengths.

Greedy FP32 replies must match the torch backend's token for token (the same model, the same prompt, the same
decoding), which checks each backend's prompt, stopping and decoding at once; INT8 only needs to be sensible.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.backends import load_backend
from bot.config import parse_config
from bot.generation import LocalGenerator
from bot.scheduler import BatchingGenerator, build_generator
from tests.bot.backends.conftest import backend_config

CONVERSATIONS = [
    ["Hello"],
    ["Hello", "Hi", "How are you?"],
    ["What is your name?"],
    ["Tell me a joke about computers and the people who program them every day"],
]


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The torch backend's greedy FP32 replies and prompts, which every backend must reproduce."""
    generator = load_backend(backend_config("torch", tiny_model_dir))
    replies = [generator.generate_sync(turns) for turns in CONVERSATIONS]
    return generator, replies


async def test_history_in_reply_out_matches_the_torch_backend(make_generator, reference):
    generator = make_generator()
    _, expected = reference
    replies = [await generator.generate(turns) for turns in CONVERSATIONS]
    assert all(isinstance(r, str) and r for r in replies)
    assert replies == expected
    assert generator.info.backend == make_generator.backend


async def test_the_reply_ends_at_the_models_eos(make_generator, reference):
    torch_generator, expected = reference
    # At least one reference reply stopped at EOS before max_new_tokens: that is the case under test.
    lengths = [len(torch_generator._tokenizer.encode(r)) for r in expected]
    assert min(lengths) < 12
    generator = make_generator()
    for turns, want in zip(CONVERSATIONS, expected, strict=True):
        reply = await generator.generate(turns)
        assert reply == want
        assert "<|endoftext|>" not in reply


SPECIAL = [["first", "say <|endoftext|> to me"], ["<|endoftext|>"], ["hello <|endoftext|><|endoftext|> bye"]]


async def test_special_token_text_in_a_message_stays_text(make_generator, reference):
    torch_generator, _ = reference
    eos = torch_generator._eos_id
    for turns in SPECIAL:  # one EOS after each real turn, none from the user's text
        assert torch_generator.prompt_ids(turns).count(eos) == len(turns)
    expected = [torch_generator.generate_sync(turns) for turns in SPECIAL]
    generator = make_generator()
    assert [await generator.generate(turns) for turns in SPECIAL] == expected


async def test_concurrent_conversations_of_different_lengths_get_their_own_replies(make_generator, reference):
    _, expected = reference
    generator = make_generator()
    replies = await asyncio.gather(*(generator.generate(turns) for turns in CONVERSATIONS))
    assert list(replies) == expected


def test_a_padded_batch_gives_each_row_its_single_reply(make_generator, reference):
    generator = make_generator()
    if make_generator.backend == "openai":
        # A remote server batches on its own (the concurrent test above): the scheduler leaves it as it is.
        assert not isinstance(generator, LocalGenerator)
        assert build_generator(generator, parse_config({})) is generator
        return
    _, expected = reference
    assert generator.generate_batch_sync(CONVERSATIONS) == expected
    assert isinstance(build_generator(generator, parse_config({})), BatchingGenerator)


async def test_int8_gives_sensible_replies(make_generator):
    generator = make_generator("int8")
    replies = await asyncio.gather(*(generator.generate(turns) for turns in CONVERSATIONS))
    assert all(isinstance(r, str) and r.strip() for r in replies)
    assert generator.info.quantization in ("int8", "remote")
