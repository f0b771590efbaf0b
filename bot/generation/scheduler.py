"""Cross-channel batching: replies for different channels that are asked for close together share one batch.

On a CPU, one reply at a time leaves most of the machine idle: each decoding step reads every weight of the
model to produce a single token. A batch of eight rows reads the weights once for eight tokens, so one batched
call answers eight channels in a little over twice the time of one reply (see docs/benchmarks.md).

`BatchingGenerator` sits behind the same `Generator` protocol as a `LocalGenerator`, so the engine does not
know it exists: the engine already serializes each channel (so order within a channel holds) and lets
different channels call `generate` concurrently; those concurrent calls are what this module groups.

Scheduling: the first request to arrive while the model is idle waits at most `window_ms` for others to join;
requests that arrive while a batch is generating go into the next batch, which starts as soon as the current
one ends (they have already waited longer than the window). So a request never waits behind more than the
batch in flight, as long as no more than `max_batch_size` are waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.config import BatchingConfig, Config
from bot.core.metrics import BATCH_SIZE, QUEUE_DEPTH
from bot.generation.local import Generator, LocalGenerator

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    turns: list[str]
    future: asyncio.Future[str]
    arrived: float


@dataclass(slots=True)
class BatchStats:
    """What the scheduler has done so far (for `status`, metrics and tests)."""

    batches: int = 0
    replies: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    """How many batches of each size were generated."""


class BatchingGenerator:
    """Collects concurrent `generate` calls into padded batches run on the model's generation thread."""

    def __init__(self, inner: LocalGenerator, settings: BatchingConfig) -> None:
        self.info = inner.info
        self._inner = inner
        self._max_batch = settings.max_batch_size
        self._window = settings.window_ms / 1000
        self._pending: list[_Request] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._in_flight: list[_Request] = []
        self.stats = BatchStats()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the batch being generated)."""
        return len(self._pending)

    async def generate(self, turns: Sequence[str]) -> str:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="batching-generator")
        request = _Request(list(turns), loop.create_future(), loop.time())
        self._pending.append(request)
        QUEUE_DEPTH.set(len(self._pending))
        self._wakeup.set()
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._drop_cancelled()
            if not self._pending:
                self._wakeup.clear()
                continue
            deadline = self._pending[0].arrived + self._window
            while len(self._pending) < self._max_batch and (remaining := deadline - loop.time()) > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            self._drop_cancelled()
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            QUEUE_DEPTH.set(len(self._pending))
            if not self._pending:
                self._wakeup.clear()
            if batch:
                await self._generate(batch)

    def _drop_cancelled(self) -> None:
        self._pending = [r for r in self._pending if not r.future.done()]

    async def _generate(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        self._record(len(batch))
        self._in_flight = batch
        try:
            replies = await loop.run_in_executor(
                self._inner.executor,
                self._inner.generate_batch_sync,
                [r.turns for r in batch],
                # Every caller gave up (timeouts, shutdown): stop decoding and free the thread.
                lambda: all(r.future.done() for r in batch),
            )
        except Exception as exc:
            logger.warning("a batch of %d failed: %s", len(batch), exc)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        finally:
            self._in_flight = []
        for request, reply in zip(batch, replies, strict=True):
            if not request.future.done():  # the caller may have given up (timeout, shutdown)
                request.future.set_result(reply)

    def _record(self, size: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.replies += size
        stats.largest_batch = max(stats.largest_batch, size)
        stats.sizes[size] = stats.sizes.get(size, 0) + 1
        BATCH_SIZE.observe(size)
        logger.debug("generating a batch of %d (%d waiting)", size, len(self._pending))

    async def close(self) -> None:
        waiting = [*self._in_flight, *self._pending]
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for request in waiting:
            if not request.future.done():
                request.future.cancel()
        self._pending.clear()
        await self._inner.close()


def build_generator(inner: Generator, config: Config) -> Generator:
    """The generator the bot serves with: an in-process backend batched across channels (unless
    `batching.enabled` is false); a backend that batches on its own (a remote server, OpenVINO's continuous
    batching) as it is."""
    if (
        not isinstance(inner, LocalGenerator)
        or inner.batches_itself
        or not config.batching.enabled
        or config.batching.max_batch_size == 1
    ):
        return inner
    return BatchingGenerator(inner, config.batching)
