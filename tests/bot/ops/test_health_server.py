"""/healthz and /metrics, end to end: the real aiohttp server while a console session talks to the engine.

The console reads from a real pipe, as it would from a terminal; the test asks the server over HTTP with
aiohttp's client and parses /metrics with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters import console
from bot.config import parse_config
from bot.core.message import IncomingMessage
from bot.errors import DialobotError
from bot.ops.admin_cli import healthcheck
from bot.ops.health_server import start_operations
from bot.ops.readiness import readiness
from bot.testing import Outbox, make_engine
from tests.waiting import eventually


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample in a Prometheus exposition, 0 if it is absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.fixture
def health_config():
    return parse_config({"health": {"enabled": True, "port": free_port()}, "history": {"max_turns": 10}})


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http, config, path) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{config.health.port}{path}") as response:
        return response.status, await response.text()


async def test_healthz_and_metrics_follow_a_console_session(health_config, store, fake_generator, http):
    operations = await start_operations(health_config, ["console"])
    try:
        status, body = await get(http, health_config, "/healthz")
        assert status == 503
        assert "model: loading" in body and "console: starting" in body

        operations.model_loaded()
        operations.attach_store(store)
        status, body = await get(http, health_config, "/healthz")
        assert (status, body.strip()) == (503, "not ready: console: starting")
        _, before = await get(http, health_config, "/metrics")

        read_fd, write_fd = os.pipe()
        stdin, typed, shown = os.fdopen(read_fd), os.fdopen(write_fd, "w"), io.StringIO()
        engine = make_engine(store, fake_generator, health_config)
        session = asyncio.create_task(console.serve(engine, health_config, stdin=stdin, stdout=shown))
        await eventually(lambda: not readiness.problems())
        assert await get(http, health_config, "/healthz") == (200, "ok\n")

        typed.write("hello\nhow are you?\n/status\n")
        typed.flush()
        await eventually(lambda: shown.getvalue().count("Bot: ") == 3)
        status, after = await get(http, health_config, "/metrics")
        assert status == 200

        def moved(name, **labels):
            return sample(after, name, **labels) - sample(before, name, **labels)

        assert moved("dialobot_messages_received_total", platform="console") == 3
        assert moved("dialobot_replies_sent_total", platform="console", kind="chat") == 2
        assert moved("dialobot_replies_sent_total", platform="console", kind="command") == 1
        assert moved("dialobot_generation_seconds_count") == 2
        assert sample(after, "dialobot_history_rows") == 4  # two exchanges, stored after delivery
        assert sample(after, "dialobot_generations_pending") == 0

        typed.close()  # end of input: the console is gone, so the bot is no longer healthy
        await asyncio.wait_for(session, timeout=5)
        status, body = await get(http, health_config, "/healthz")
        assert (status, body.strip()) == (503, "not ready: console: input ended")
    finally:
        await operations.close()


async def test_errors_are_counted_by_kind(health_config, store, fake_generator, http, monkeypatch):
    operations = await start_operations(health_config, [])
    try:
        _, before = await get(http, health_config, "/metrics")
        engine = make_engine(store, fake_generator, health_config)
        msg = IncomingMessage(platform="console", channel_key="console:t", author_id="u", text="hi")
        fake_generator.fail_with = RuntimeError("model fell over")
        await engine.handle(msg, Outbox())
        fake_generator.fail_with = None
        refusing = Outbox()
        refusing.fail = True
        await engine.handle(msg, refusing)

        async def database_down(*_args):
            raise ConnectionError("database went away")

        monkeypatch.setattr(store, "recent_turns", database_down)
        await engine.handle(msg, Outbox())
        _, after = await get(http, health_config, "/metrics")
    finally:
        await operations.close()
    assert (
        sample(after, "dialobot_errors_total", kind="storage")
        - sample(before, "dialobot_errors_total", kind="storage")
        == 1
    )
    assert (
        sample(after, "dialobot_errors_total", kind="generation")
        - sample(before, "dialobot_errors_total", kind="generation")
        == 1
    )
    assert (
        sample(after, "dialobot_errors_total", kind="send")
        - sample(before, "dialobot_errors_total", kind="send")
        == 1
    )


async def test_the_healthcheck_command_follows_healthz(health_config, store, capsys):
    assert await asyncio.to_thread(healthcheck, health_config) == 1  # nothing listening yet
    assert "no answer from" in capsys.readouterr().out
    operations = await start_operations(health_config, [])
    try:
        assert await asyncio.to_thread(healthcheck, health_config) == 1
        out = capsys.readouterr().out
        assert "model: loading" in out and "storage: starting" in out
        operations.model_loaded()
        operations.attach_store(store)  # the database opened
        assert await asyncio.to_thread(healthcheck, health_config) == 0
        assert capsys.readouterr().out.strip() == "ok"
    finally:
        await operations.close()


async def test_off_by_default_and_on_localhost_when_enabled():
    config = parse_config({})
    assert config.health.enabled is False
    assert config.health.host == "127.0.0.1"
    operations = await start_operations(config, ["console"])
    assert operations.port is None  # nothing listens
    await operations.close()


async def test_a_port_in_use_is_a_one_line_error_naming_the_key(health_config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", health_config.health.port))
        taken.listen()
        with pytest.raises(DialobotError, match=r"^health\.port: cannot listen on 127\.0\.0\.1:\d+"):
            await start_operations(health_config, [])
