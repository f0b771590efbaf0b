"""Load and isolation: 50 channels x 20 messages at once through the engine on a real database.

Every message must be answered exactly once, in order within its channel, with exactly the expected history
rows, no "database is locked", and no channel's text in another channel's prompt. The same `run_load` is what
`python -m bot.bench.loadtest` runs; docs/reliability.md has its figures.
"""

import pytest

from bot.bench.loadtest import EchoGenerator, load_config, run_load
from bot.config import override, parse_config
from bot.generation.backends import load_backend
from bot.generation.scheduler import build_generator
from tests.conftest import DB_BACKENDS


@pytest.mark.parametrize("db_backend", DB_BACKENDS, indirect=True)
async def test_50_channels_x_20_messages_at_once_lose_nothing(db_url):
    config = load_config(50, 20)
    report = await run_load(db_url, EchoGenerator(delay=0.002), config, channels=50, per_channel=20)
    assert (report.sent, report.answered, report.refused_busy) == (1000, 1000, 0)
    assert report.ok, report


async def test_with_the_default_bounds_a_flood_gets_busy_replies_and_still_loses_nothing(db_url):
    # 20 messages at once in one channel exceed the default per-channel bound (16).
    defaults = parse_config({})
    report = await run_load(db_url, EchoGenerator(delay=0.01), defaults, channels=10, per_channel=20)
    assert report.sent == 200
    # Each message is written to the inbox before admission, and those writes take turns: a few replies can
    # finish (freeing their place) before the last messages are admitted, so at least 160 are answered.
    assert report.answered + report.refused_busy == 200
    assert report.answered >= 160 and report.refused_busy > 0
    assert report.ok, report


async def test_a_real_model_under_load_keeps_every_channel_apart(db_url, tiny_model_dir):
    """The tiny DialoGPT-architecture model (the demo recipe, small) behind the generator the bot serves
    with (batching across channels, as configured by default)."""
    config = load_config(50, 4, generation={"max_new_tokens": 8, "timeout_seconds": 0})
    settings = override(config, "model", name=str(tiny_model_dir), quantization="int8")
    generator = build_generator(load_backend(settings), settings)
    try:
        report = await run_load(db_url, generator, config, channels=50, per_channel=4)
    finally:
        await generator.close()
    assert (report.sent, report.answered) == (200, 200)
    assert report.ok, report


async def test_the_isolation_check_catches_a_leak(db_url):
    """The harness itself: a generator that mixes channels is reported, so a clean report means something."""

    class Leaky(EchoGenerator):
        last = ""

        async def generate(self, turns):
            answer, Leaky.last = f"echo: {turns[-1]} {Leaky.last}", turns[-1]
            return answer

    report = await run_load(db_url, Leaky(), load_config(5, 3), channels=5, per_channel=3)
    assert report.leaked_prompts > 0 and not report.ok
