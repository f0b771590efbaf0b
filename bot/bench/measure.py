"""The benchmark's measurements: time per reply, replies per second under concurrency, event-loop lag.

Every figure is measured through the same code the bot serves with (`TorchGenerator`, `BatchingGenerator`),
with the bot's default sampling settings and a fixed reply length (EOS is ignored, so every reply has exactly
the requested number of new tokens and runs compare like with like). CTranslate2, when installed, runs the
same prompts with the same sampling settings as the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.config import BatchingConfig, GenerationConfig
from bot.core.generator import Generator
from bot.generation.backends.torch import TorchGenerator
from bot.generation.scheduler import BatchingGenerator

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.010
WARMUP_REPLIES = 2  # the first replies in a process are slower (thread pools, allocator): not measured


def summarize(seconds: Sequence[float]) -> dict:
    """Median, p95, min and max of a list of durations, in seconds."""
    values = np.asarray(seconds, dtype=float)
    return {
        "median_s": float(np.median(values)),
        "p95_s": float(np.percentile(values, 95)),
        "min_s": float(values.min()),
        "max_s": float(values.max()),
        "runs": len(values),
    }


def time_single(
    generator: TorchGenerator, conversations: Sequence[list[str]], repeats: int, new_tokens: int
) -> dict:
    """Time per reply, one reply at a time (after warm-up replies), and tokens per second."""
    for turns in conversations[:WARMUP_REPLIES]:
        generator.generate_sync(turns)
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        generator.generate_sync(conversations[i % len(conversations)])
        times.append(time.perf_counter() - started)
    stats = summarize(times)
    stats["tokens_per_s"] = new_tokens / stats["median_s"]
    return stats


class LoopLag:
    """Measures how late a 10 ms ticker fires on the running event loop (what a blocked loop would show)."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._task: asyncio.Task | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + TICK_SECONDS
            await asyncio.sleep(TICK_SECONDS)
            self.lateness.append(max(0.0, loop.time() - due))

    def start(self) -> None:
        self.lateness = []
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> dict:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        values = np.asarray(self.lateness or [0.0]) * 1000
        return {
            "lag_p99_ms": float(np.percentile(values, 99)),
            "lag_max_ms": float(values.max()),
            "ticks": len(self.lateness),
        }


async def _concurrent_round(
    generator: Generator, conversations: Sequence[list[str]]
) -> tuple[float, list[float]]:
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(turns: list[str]) -> float:
        await generator.generate(turns)
        return loop.time() - started

    latencies = await asyncio.gather(*(one(t) for t in conversations))
    return loop.time() - started, list(latencies)


async def run_concurrency(
    make_generator: Callable[[], Generator],
    conversations: Sequence[list[str]],
    levels: Sequence[int],
    rounds: int,
) -> list[dict]:
    """For each level N, N channels send a message at once; replies per second, latency and loop lag."""
    generator = make_generator()
    results = []
    try:
        await asyncio.gather(*(generator.generate(t) for t in conversations[:WARMUP_REPLIES]))
        for level in levels:
            lag = LoopLag()
            lag.start()
            walls, latencies = [], []
            for r in range(rounds):
                batch = [conversations[(r * level + i) % len(conversations)] for i in range(level)]
                wall, lat = await _concurrent_round(generator, batch)
                walls.append(wall)
                latencies.extend(lat)
            lag_stats = await lag.stop()
            wall = float(np.median(walls))
            results.append(
                {
                    "channels": level,
                    "wall_s": wall,
                    "replies_per_s": level / wall,
                    "latency_median_s": float(np.median(latencies)),
                    "latency_p95_s": float(np.percentile(latencies, 95)),
                    **lag_stats,
                }
            )
    finally:
        await generator.close()
    return results


def batched_factory(loaded, settings: GenerationConfig, batching: BatchingConfig) -> Callable[[], Generator]:
    return lambda: BatchingGenerator(TorchGenerator(loaded, settings, stop_at_eos=False), batching)


def serial_factory(loaded, settings: GenerationConfig) -> Callable[[], Generator]:
    return lambda: TorchGenerator(loaded, settings, stop_at_eos=False)


@dataclass(slots=True)
class Ct2Reference:
    """The same prompts and sampling settings on a CTranslate2 int8 conversion of the same model."""

    generator: object
    settings: GenerationConfig

    @classmethod
    def load(cls, path, settings: GenerationConfig, threads: int) -> Ct2Reference:
        import ctranslate2

        generator = ctranslate2.Generator(str(path), device="cpu", compute_type="int8", intra_threads=threads)
        return cls(generator, settings)

    def generate(self, prompts: Sequence[list[str]]) -> None:
        s = self.settings
        self.generator.generate_batch(
            [list(p) for p in prompts],
            max_length=s.max_new_tokens,
            min_length=s.max_new_tokens,
            sampling_topk=s.top_k if s.do_sample else 1,
            sampling_topp=s.top_p,
            sampling_temperature=s.temperature,
            repetition_penalty=s.repetition_penalty,
            no_repeat_ngram_size=s.no_repeat_ngram_size,
            include_prompt_in_result=False,
        )

    def time_single(self, prompts: Sequence[list[str]], repeats: int) -> dict:
        for prompt in prompts[:WARMUP_REPLIES]:
            self.generate([prompt])
        times = []
        for i in range(repeats):
            started = time.perf_counter()
            self.generate([prompts[i % len(prompts)]])
            times.append(time.perf_counter() - started)
        stats = summarize(times)
        stats["tokens_per_s"] = self.settings.max_new_tokens / stats["median_s"]
        return stats

    def time_batches(self, prompts: Sequence[list[str]], levels: Sequence[int], rounds: int) -> list[dict]:
        results = []
        for level in levels:
            walls = []
            for r in range(rounds):
                started = time.perf_counter()
                self.generate([prompts[(r * level + i) % len(prompts)] for i in range(level)])
                walls.append(time.perf_counter() - started)
            wall = float(np.median(walls))
            results.append({"channels": level, "wall_s": wall, "replies_per_s": level / wall})
        return results


def prompt_tokens(
    generator: TorchGenerator, tokenizer, conversations: Sequence[list[str]]
) -> list[list[str]]:
    """The exact prompts `generator` would feed its model, as token strings (what CTranslate2 takes)."""
    return [tokenizer.convert_ids_to_tokens(generator.prompt_ids(turns)) for turns in conversations]
