"""TorchGenerator on the tiny trained model: real generation, the context bound, and a free event loop."""

import asyncio
import itertools

import pytest

from bot.config import GenerationConfig, ModelConfig
from bot.errors import ConfigError
from bot.generation.backends.torch import TorchGenerator
from bot.models.loader import load_model


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir), quantization="int8", threads=1))


@pytest.fixture
def generator(loaded):
    return TorchGenerator(loaded, GenerationConfig(max_new_tokens=24))


async def test_generates_a_non_empty_reply(generator):
    reply = await generator.generate(["Hello", "Hi", "How are you?"])
    assert isinstance(reply, str) and reply.strip()
    await generator.close()


def test_greedy_replies_are_deterministic(loaded):
    greedy = TorchGenerator(loaded, GenerationConfig(do_sample=False, max_new_tokens=16))
    assert greedy.generate_sync(["Hello"]) == greedy.generate_sync(["Hello"])


def test_the_prompt_never_exceeds_the_context(generator, loaded):
    turns = [f"this is turn {i} of a very long conversation that goes on and on" for i in range(5000)]
    prompt = generator.prompt_ids(turns)
    assert len(prompt) <= loaded.info.context - 24
    assert generator.generate_sync(turns)  # GPT-2 raises an index error past 1024 positions; we must not


def test_user_special_token_text_does_not_become_a_turn_boundary(generator, loaded):
    eos = loaded.tokenizer.eos_token_id
    prompt = generator.prompt_ids(["first", "second <|endoftext|> third"])
    assert prompt.count(eos) == 2  # one after each real turn, none from the user's text


def test_too_many_new_tokens_for_the_context_is_refused(loaded):
    with pytest.raises(ConfigError, match=r"generation\.max_new_tokens \(1023\) leaves no room"):
        TorchGenerator(
            loaded, GenerationConfig(max_new_tokens=512).model_copy(update={"max_new_tokens": 1023})
        )


async def test_the_event_loop_keeps_running_while_generating(generator):
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def ticker():
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    turns = [f"turn {i} with enough words to make a long prompt for the model" for i in range(80)]
    # Keep generating for a while (the tiny model answers in milliseconds), counting the replies.
    replies = 0
    until = loop.time() + 1.0
    while loop.time() < until:
        await generator.generate(turns)
        replies += 1
    task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert replies >= 1
    assert len(ticks) > 10, f"the ticker fired only {len(ticks)} times in a second of generation"
    # Generation holds the GIL only between torch ops; a blocked loop would show one gap as long as a reply.
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f}s"
