"""Shared fixtures: a real SQLite history store in a temporary directory, a fake generator, an engine."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bot.config import Config, parse_config
from bot.engine import ChatEngine
from bot.model_loader import ModelInfo
from bot.quantize import ProjectionCounts
from storage import SqlHistoryStore, open_store


class FakeGenerator:
    """Answers `echo: <last turn> (<n> turns seen)` after an optional delay; records every prompt it got."""

    def __init__(self, delay: float = 0.0) -> None:
        self.info = ModelInfo(
            name="fake",
            source="fake",
            quantization="int8",
            backend="fake",
            parameters=0,
            context=1024,
            projections=ProjectionCounts(int8=4, total=4),
        )
        self.delay = delay
        self.calls: list[list[str]] = []
        self.replies: list[str] = []  # queued replies to give instead of the echo, first in first out
        self.fail_with: Exception | None = None

    async def generate(self, turns: Sequence[str]) -> str:
        self.calls.append(list(turns))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        if self.replies:
            return self.replies.pop(0)
        return f"echo: {turns[-1]} ({len(turns)} turns seen)"

    async def close(self) -> None:
        pass


class Outbox:
    """A fake adapter's send: records what the engine would have sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail = False

    async def __call__(self, text: str) -> None:
        if self.fail:
            raise ConnectionError("platform refused the message")
        self.sent.append(text)


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"


@pytest.fixture
async def store(db_url) -> SqlHistoryStore:
    store = await open_store(db_url)
    yield store
    await store.close()


@pytest.fixture
def fake_generator() -> FakeGenerator:
    return FakeGenerator()


@pytest.fixture
def config() -> Config:
    return parse_config({"history": {"max_turns": 10}})


@pytest.fixture
def engine(store, fake_generator, config) -> ChatEngine:
    return ChatEngine(store, fake_generator, config)


TINY_RECIPE_KWARGS = dict(vocab_size=512, n_layer=2, n_head=2, n_embd=64, n_positions=1024, context_turns=0, dialog_limit=400)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A DialoGPT-architecture model trained in seconds on part of the corpus: the demo recipe, tiny."""
    from bot.demo_model import DemoRecipe, ensure_demo_model
    from bot.trainer import TrainConfig

    recipe = DemoRecipe(
        **TINY_RECIPE_KWARGS,
        train=TrainConfig(epochs=6, batch_size=16, learning_rate=3e-3, seed=0, threads=1),
    )
    return ensure_demo_model(recipe, root=tmp_path_factory.mktemp("models"), progress=False)
