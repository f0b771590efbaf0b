"""Batched generation and the batching scheduler, on the tiny trained model: correctness, not speed."""

import asyncio
import threading

import pytest

from bot.config import BatchingConfig, GenerationConfig, ModelConfig, parse_config
from bot.core.metrics import REGISTRY
from bot.generation.backends.torch import TorchGenerator
from bot.generation.scheduler import BatchingGenerator, build_generator
from bot.models.loader import load_model
from tests.waiting import eventually


def batch_size_count() -> float:
    return REGISTRY.get_sample_value("dialobot_batch_size_count") or 0.0


GREEDY = GenerationConfig(do_sample=False, max_new_tokens=12)
# Prompts of very different lengths, so the batch needs a lot of left padding.
CONVERSATIONS = [
    ["Hello"],
    ["What is your favorite food?"],
    ["Hi", "Hello there, how are you today?", "I am fine. Do you like music?"],
    ["Tell me a joke"],
    ["Are you a robot?", "I am a bot.", "What is the weather like?", "It is sunny.", "Good."],
]


@pytest.fixture(scope="module")
def int8(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir), quantization="int8", threads=1))


@pytest.fixture(scope="module")
def fp32(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir), quantization="none", threads=1))


def test_batched_greedy_output_equals_one_at_a_time(fp32):
    generator = TorchGenerator(fp32, GREEDY)
    alone = [generator.generate_sync(turns) for turns in CONVERSATIONS]
    assert all(alone), alone
    assert len(set(alone)) > 1  # the prompts really differ, so a mixed-up row would show
    assert generator.generate_batch_sync(CONVERSATIONS) == alone


def test_int8_rows_in_a_batch_stay_within_a_quantization_step_of_alone(int8):
    """INT8 activations are quantized with one scale per call, so a row's numbers may move by about one step
    with its neighbours (greedy replies then differ only at near-ties). The exact no-leak check is the FP32
    one above; this bounds the INT8 drift."""
    import torch

    generator = TorchGenerator(int8, GREEDY)
    prompts = [generator.prompt_ids(turns) for turns in CONVERSATIONS]
    width = max(len(p) for p in prompts)
    eos = int8.tokenizer.eos_token_id
    ids = torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        batched = int8.model(ids, attention_mask=mask).logits[:, -1]
        for row, prompt in enumerate(prompts):
            alone = int8.model(torch.tensor([prompt])).logits[0, -1]
            bound = 0.15 * float(alone.max() - alone.min())
            assert float((batched[row] - alone).abs().max()) < bound, f"row {row} leaked"


def test_a_row_does_not_depend_on_its_neighbours(fp32):
    """Padding and neighbours must not leak into a row: the same prompt gives the same logits in any batch."""
    generator = TorchGenerator(fp32, GREEDY)
    short = ["Hi"]
    long = ["a long message " * 20, "and its answer is long as well " * 5, "Hi"]
    alone = generator.generate_batch_sync([short])[0]
    for batch in ([short, long], [long, short], [long, long, short, long]):
        replies = generator.generate_batch_sync(batch)
        assert replies[batch.index(short)] == alone
        assert [r for t, r in zip(batch, replies, strict=True) if t is long] == [
            replies[batch.index(long)]
        ] * (batch.count(long))


async def test_concurrent_requests_share_a_batch_and_get_their_own_replies(fp32):
    generator = BatchingGenerator(
        TorchGenerator(fp32, GREEDY), BatchingConfig(max_batch_size=8, window_ms=200)
    )
    expected = [TorchGenerator(fp32, GREEDY).generate_sync(t) for t in CONVERSATIONS]
    before = batch_size_count()
    try:
        replies = await asyncio.gather(*(generator.generate(t) for t in CONVERSATIONS))
    finally:
        await generator.close()
    assert replies == expected
    assert generator.stats.batches == 1 and generator.stats.largest_batch == len(CONVERSATIONS)
    assert batch_size_count() == before + 1  # observed for /metrics too


async def test_batches_are_capped_and_a_request_arriving_during_a_batch_is_served(fp32):
    generator = BatchingGenerator(
        TorchGenerator(fp32, GREEDY), BatchingConfig(max_batch_size=2, window_ms=50)
    )
    try:
        first = asyncio.gather(*(generator.generate(t) for t in CONVERSATIONS[:3]))
        await eventually(lambda: generator.stats.batches, what="the first batch is generating")
        late = await generator.generate(CONVERSATIONS[3])
        replies = await first
    finally:
        await generator.close()
    assert late and all(replies)
    assert generator.stats.largest_batch == 2
    assert generator.stats.replies == 4
    assert generator.queue_depth == 0


async def test_a_cancelled_request_does_not_break_the_others(fp32):
    generator = BatchingGenerator(
        TorchGenerator(fp32, GREEDY), BatchingConfig(max_batch_size=8, window_ms=100)
    )
    try:
        doomed = asyncio.create_task(generator.generate(["Hello"]))
        kept = asyncio.create_task(generator.generate(["Tell me a joke"]))
        # Both requests reached the scheduler: waiting for the batch window, or already in the batch.
        await eventually(lambda: generator.queue_depth == 2 or generator.stats.batches, what="both queued")
        doomed.cancel()
        assert await kept
    finally:
        await generator.close()
    assert generator.stats.replies == 1


async def test_a_failing_batch_fails_its_requests_and_the_scheduler_goes_on(fp32):
    inner = TorchGenerator(fp32, GREEDY)
    generator = BatchingGenerator(inner, BatchingConfig(max_batch_size=4, window_ms=10))
    real = inner.generate_batch_sync
    inner.generate_batch_sync = lambda *_args: (_ for _ in ()).throw(RuntimeError("out of memory"))
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            await generator.generate(["Hello"])
        inner.generate_batch_sync = real
        assert await generator.generate(["Hello"])
    finally:
        await generator.close()


async def test_close_releases_waiting_callers(fp32):
    generator = BatchingGenerator(
        TorchGenerator(fp32, GREEDY), BatchingConfig(max_batch_size=8, window_ms=1000)
    )
    waiting = asyncio.create_task(generator.generate(["Hello"]))
    await eventually(lambda: generator.queue_depth == 1 or generator.stats.batches, what="request queued")
    await generator.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 1)


def test_the_config_chooses_the_generator(fp32):
    inner = TorchGenerator(fp32, GenerationConfig())
    batched = build_generator(inner, parse_config({}))
    assert isinstance(batched, BatchingGenerator) and batched.info is inner.info
    assert build_generator(inner, parse_config({"batching": {"enabled": False}})) is inner


async def test_a_batch_stops_early_only_when_every_caller_gave_up(fp32):
    inner = TorchGenerator(fp32, GenerationConfig(do_sample=False, max_new_tokens=512))
    inner.ignore_eos()
    lengths: list[list[int]] = []
    started = threading.Event()
    real = inner._generate_ids

    def watched(prompts, abandoned):
        def asked():
            started.set()
            return abandoned()

        ids = real(prompts, asked)
        lengths.append([len(row) for row in ids])
        return ids

    async def batch_of_two_started():
        started.clear()
        tasks = [asyncio.create_task(generator.generate([text])) for text in ("Hello", "Tell me a joke")]
        assert await loop.run_in_executor(None, started.wait, 30)
        return tasks

    loop = asyncio.get_running_loop()
    inner._generate_ids = watched
    generator = BatchingGenerator(inner, BatchingConfig(max_batch_size=2, window_ms=1000))
    try:
        # One of two callers gives up: the other still wants its reply, so the batch runs to the end.
        doomed, kept = await batch_of_two_started()
        doomed.cancel()
        assert await kept
        assert lengths[-1] == [512, 512]
        # Both give up: decoding stops, and the generation thread is free for the next batch.
        tasks = await batch_of_two_started()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.run_in_executor(inner.executor, lambda: None)
        assert len(lengths) == 2 and max(lengths[-1]) < 512
    finally:
        await generator.close()
