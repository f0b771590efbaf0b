"""The behaviour every backend shares with the core: history in, reply out, EOS ends the reply, special-token
text stays text, batches of different lengths.

Greedy FP32 replies must match the torch backend's token for token (the same model, the same prompt, the same
decoding), which checks each backend's prompt, stopping and decoding at once; INT8 only needs to be sensible.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.config import parse_config
from bot.generation.backends import load_backend
from bot.generation.local import LocalGenerator
from bot.generation.scheduler import BatchingGenerator, build_generator
from tests.bot.generation.backends.conftest import backend_config
from tests.waiting import eventually

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
    yield generator, replies
    generator.executor.shutdown(wait=True)


async def test_history_in_reply_out_matches_the_torch_backend(make_generator, reference):
    generator = make_generator()
    _, expected = reference
    replies = [await generator.generate(turns) for turns in CONVERSATIONS]
    assert all(isinstance(r, str) and r for r in replies)
    assert replies == expected
    assert generator.info.backend == make_generator.backend


SHORT_ANSWERS = [["Good morning"], ["Hi"], ["What is AI?"], ["Good evening"], ["ok"], ["Thanks"], ["Yes"]]


async def test_the_reply_ends_at_the_models_eos(make_generator, tiny_model_dir):
    long = {"max_new_tokens": 24}
    torch_generator = load_backend(backend_config("torch", tiny_model_dir, generation=long))
    tokens = torch_generator._tokenizer.encode
    expected = {tuple(t): torch_generator.generate_sync(t) for t in SHORT_ANSWERS + CONVERSATIONS}
    await torch_generator.close()
    # The cases under test: replies the model ended with EOS before max_new_tokens.
    ended = {turns: reply for turns, reply in expected.items() if len(tokens(reply)) < 20}
    assert ended, "no reference reply ended at EOS"
    generator = make_generator(**long)
    for turns, want in ended.items():
        reply = await generator.generate(list(turns))
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
    served = build_generator(generator, parse_config({}))
    if generator.batches_itself:  # continuous batching (openvino): the scheduler would only delay requests
        assert served is generator
    else:
        assert isinstance(served, BatchingGenerator)


async def test_int8_gives_sensible_replies(make_generator):
    generator = make_generator("int8")
    replies = await asyncio.gather(*(generator.generate(turns) for turns in CONVERSATIONS))
    assert all(isinstance(r, str) and r.strip() for r in replies)
    info = generator.info
    if make_generator.backend == "openai":  # the server decides how it runs the model; nothing to count here
        assert (info.quantization, info.projections) == ("remote", None)
    else:
        assert info.quantization == "int8" and info.projections.int8 == info.projections.total > 0


def _repeated_trigrams(ids: list[int]) -> int:
    trigrams = list(zip(ids, ids[1:], ids[2:], strict=False))
    return len(trigrams) - len(set(trigrams))


LOOPING = [["What is your name?"], ["Hello"], ["hi"], ["Tell me about yourself"], ["what?"], ["yes"]]


async def test_repetition_settings_reach_the_runtime(make_generator, reference):
    """Plain greedy decoding of the tiny model loops; the configured penalties must stop that."""
    torch_generator, _ = reference
    tokens = torch_generator._tokenizer.encode
    plain = make_generator(max_new_tokens=24)
    looping = [t for t in LOOPING if _repeated_trigrams(tokens(await plain.generate(t))) > 0]
    assert looping, "the tiny model should repeat itself under plain greedy decoding"
    penalized = make_generator(max_new_tokens=24, repetition_penalty=1.3, no_repeat_ngram_size=3)
    replies = [await penalized.generate(turns) for turns in looping]
    assert all(replies)
    if make_generator.backend == "openai":
        # vLLM has no n-gram blocking; the penalty is passed on (test_openai.py checks the request body).
        assert replies != [await plain.generate(turns) for turns in looping]
    else:
        assert all(_repeated_trigrams(tokens(reply)) == 0 for reply in replies), [
            (r, tokens(r)) for r in replies
        ]


async def test_a_reply_nobody_waits_for_stops_at_the_next_token(make_generator):
    """A generation timeout or a shutdown cancels the wait; the model must not go on for minutes."""
    generator = make_generator(max_new_tokens=512)
    loop = asyncio.get_running_loop()
    if make_generator.backend == "openai":  # the request is simply dropped; the next one is served
        server, asked = make_generator.server, len(make_generator.server.completions)
        task = asyncio.create_task(generator.generate(["Hello"]))
        await eventually(lambda: len(server.completions) > asked, what="the request reached the server")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await generator.generate(["Hello"])
        return
    generator.ignore_eos()  # without cancellation, every reply would be 512 tokens long
    started, lengths = threading.Event(), []
    # Where each backend asks whether anyone still waits: per batch, or per request (continuous batching).
    hook = "_submit" if generator.batches_itself else "_generate_ids"
    real = getattr(generator, hook)

    def asked_through(abandoned):
        def asked():
            started.set()
            return abandoned()

        return asked

    def watched(prompts, abandoned):
        ids = real(prompts, asked_through(abandoned))
        lengths.extend(len(row) for row in ids)
        return ids

    def watched_request(prompt, abandoned):
        request = real(prompt, asked_through(abandoned))
        request.future.add_done_callback(lambda done: lengths.append(len(done.result())))
        return request

    setattr(generator, hook, watched_request if generator.batches_itself else watched)
    task = asyncio.create_task(generator.generate(["Hello"]))
    assert await loop.run_in_executor(None, started.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await loop.run_in_executor(generator.executor, lambda: None)  # the generation thread is free again
    assert lengths and lengths[0] < 512
    setattr(generator, hook, real)
    assert len(generator._tokenizer.encode(generator.generate_sync(["Hello"]))) > 450  # nothing else stops it
