"""A test harness shipped with the bot: a scripted generator, an in-memory outbox, an engine wired like the
real one. The test suite, the load test and anyone adding a platform use the same pieces, as errbot's
`TestBackend` lets a plugin's test be one line:

    engine = make_engine(store, ScriptedGenerator(), config)
    out = Outbox()
    await engine.handle(IncomingMessage(platform="console", channel_key="console:t", author_id="me",
                                        text="hello"), out)
    assert out.sent == ["echo: hello (1 turns seen)"]
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence

from bot.config import Config
from bot.core.engine import ChatEngine
from bot.core.generator import ModelInfo, ProjectionCounts
from bot.core.safety import ReplyFilter
from bot.generation.prompt import prompt_turns
from storage.types import HistoryStore

ECHO_TEMPLATE = "echo: {last} ({count} turns seen)"


class ScriptedGenerator:
    """Stands in for the model: answers queued `replies` first, else an echo of the last turn.

    It records every prompt it got (`calls`), can wait `delay` seconds like a slow model, and can fail like
    one (`fail_with`). The echo (`template`, with `{last}` and `{count}`) shows which turns the prompt held.
    """

    def __init__(
        self, delay: float = 0.0, template: str = ECHO_TEMPLATE, name: str = "fake", jitter: float = 0.0
    ) -> None:
        self.info = ModelInfo(
            name=name,
            source=name,
            quantization="int8",
            backend=name,
            parameters=0,
            context=1024,
            projections=ProjectionCounts(int8=4, total=4),
        )
        self.delay = delay
        self.jitter = jitter
        """Each reply waits `delay` plus up to `jitter` more seconds, at random."""
        self.template = template
        self.calls: list[list[str]] = []
        self.replies: list[str] = []
        """Replies to give instead of the echo, first in first out."""
        self.fail_with: Exception | None = None

    async def generate(self, turns: Sequence[str]) -> str:
        self.calls.append(list(turns))
        if self.delay or self.jitter:
            await asyncio.sleep(self.delay + random.uniform(0, self.jitter))
        if self.fail_with is not None:
            raise self.fail_with
        if self.replies:
            return self.replies.pop(0)
        return self.template.format(last=turns[-1], count=len(turns))

    async def close(self) -> None:
        pass


def scripted_backend() -> ScriptedGenerator:
    """`model.backend = "scripted"`: the echo in place of a model, for running the real bot in tests and the
    crash test. Each reply takes `$DIALOBOT_SCRIPTED_DELAY_SECONDS` (default 0) plus up to as much again."""
    delay = float(os.environ.get("DIALOBOT_SCRIPTED_DELAY_SECONDS") or 0)
    return ScriptedGenerator(delay=delay, jitter=delay, name="scripted")


class Outbox:
    """A fake adapter's `send`: records what the engine would have sent; `fail = True` refuses sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail = False

    async def __call__(self, text: str) -> None:
        if self.fail:
            raise ConnectionError("platform refused the message")
        self.sent.append(text)


def make_engine(
    store: HistoryStore,
    generator: ScriptedGenerator | object,
    config: Config,
    reply_filter: ReplyFilter | None = None,
) -> ChatEngine:
    """An engine wired as `dialobot run` wires it (DialoGPT's turn rule), around the given parts; a safety
    filter only when one is given (`bot.safety.build_filter(config.safety)` builds the configured one)."""
    return ChatEngine(  # type: ignore[arg-type]
        store, generator, config, turn_rule=prompt_turns, reply_filter=reply_filter
    )


async def empty_postgres(url: str) -> None:
    """Drop everything in the PostgreSQL database at `url` (its `public` schema): the tests and the crash
    test start each run on an empty database. Destructive: only for a database made for testing."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()
