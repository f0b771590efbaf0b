"""Shared fixtures: a real SQLite history store in a temporary directory, a fake generator, an engine."""

from __future__ import annotations

import logging
import os

import pytest

from bot.config import Config, parse_config
from bot.core.engine import ChatEngine
from bot.testing import ScriptedGenerator, empty_postgres, make_engine
from storage import SqlHistoryStore, open_store

FakeGenerator = ScriptedGenerator
"""The name the tests use for the harness's scripted generator."""


POSTGRES_URL_ENV = "DIALOBOT_TEST_POSTGRES_URL"
DB_BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    """Storage tests (tests/storage/) that use `db_url` run once per backend; others use SQLite only.

    A test marked `sqlite_only` checks something only SQLite has (WAL mode, the file on disk).
    """
    in_storage = metafunc.definition.path.parent.name == "storage"
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    if in_storage and "db_url" in metafunc.fixturenames and not sqlite_only:
        metafunc.parametrize("db_backend", DB_BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """Every test leaves the root logger as it found it. A test running the CLI (which sets up logging on
    the stream pytest captures for that test only) would otherwise leave a handler on a closed stream, and a
    later test's log line would end in "--- Logging error ---"."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _own_data_directory(tmp_path_factory, monkeypatch):
    """Every test keeps history in its own directory, never in the user's (`~/.local/share/dialobot`).

    Subprocesses inherit it too, so a `dialobot chat` started by a test never opens a database left there by
    an older dialobot.
    """
    monkeypatch.setenv("DIALOBOT_DATA_DIR", str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def db_backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
async def db_url(db_backend, tmp_path) -> str:
    """A database with nothing in it: a new SQLite file, or the PostgreSQL test database with a clean schema.

    PostgreSQL comes from $DIALOBOT_TEST_POSTGRES_URL (`.ci/postgres` starts one). Without it the PostgreSQL
    runs are skipped locally, and fail in CI (CI=true), so they can never pass by not running.
    """
    if db_backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        reason = f"{POSTGRES_URL_ENV} is not set (start a server with `sudo .ci/postgres`; see README)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL storage tests cannot run in CI: {reason}")
        pytest.skip(reason)
    await empty_postgres(url)
    return url


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
    return make_engine(store, fake_generator, config)


def _tiny_train():
    from bot.models.trainer import TrainConfig

    return TrainConfig(steps=300, batch_size=8, block_size=128, learning_rate=3e-3, seed=0, threads=1)


TINY_RECIPE_KWARGS = dict(
    vocab_size=512,
    tokenizer="bpe",
    n_layer=2,
    n_head=2,
    n_embd=64,
    n_positions=1024,
    conversation_limit=300,
    min_reply_words=1,
)
"""The demo recipe, tiny, with DialoGPT's kind of tokenizer (byte-level BPE) and every turn learned, as
DialoGPT learned them: it stands in for the hub models the backends convert and serve. The demo's own
word-level tokenizer and choice of turns are tested in test_demo.py."""


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A DialoGPT-architecture model trained in seconds on part of the demo's data: the demo recipe, tiny.

    Built once per machine into the cache (keyed by its recipe, like the demo), so later runs train nothing.
    """
    from bot.config import cache_dir
    from bot.models.demo import DemoRecipe, ensure_demo_model

    recipe = DemoRecipe(
        **TINY_RECIPE_KWARGS,
        train=_tiny_train(),
    )
    return ensure_demo_model(recipe, root=cache_dir() / "test-models", progress=False)


@pytest.fixture(scope="session")
def profanity_check():
    """The default safety classifier, the real one (loaded once: importing it takes seconds)."""
    from bot.safety.classifiers import ProfanityCheck

    return ProfanityCheck()
