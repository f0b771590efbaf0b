"""Secrets never reach the logs: the adapters start and answer at DEBUG level with tokens in the environment,
against the fake Discord and Slack servers, and the log output (through dialobot's own handler, as the CLI
sets it up, in both formats) never contains a token. The same run checks that both adapters report ready."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from adapters import discord as discord_adapter
from adapters import slack as slack_adapter
from bot.bench.fake_discord import FakeDiscord, point_discord_py_at
from bot.bench.fake_slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack, event_callback, mention
from bot.config import parse_config
from bot.ops.logs import REDACTED, SecretRedactor, secret_values, setup_logging
from bot.ops.readiness import readiness
from bot.testing import make_engine
from tests.waiting import eventually

DISCORD_TOKEN = "fake-discord-token-0123456789"
DB_PASSWORD = "s3cret-db-passw0rd"


@pytest.fixture
def secrets_env(monkeypatch):
    monkeypatch.setenv("DISCORD_BOT_TOKEN", DISCORD_TOKEN)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("DIALOBOT_DATABASE_URL", f"postgresql+asyncpg://bot:{DB_PASSWORD}@db/dialobot")


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_adapters_start_and_answer_at_debug_without_logging_a_secret(
    log_format, secrets_env, store, fake_generator, monkeypatch, capsys
):
    fake_discord = FakeDiscord(token=DISCORD_TOKEN)
    await fake_discord.start()
    point_discord_py_at(fake_discord, monkeypatch)
    fake_slack = FakeSlack()
    await fake_slack.start()
    config = parse_config(
        {
            "discord": {"enabled": True},
            "slack": {"enabled": True, "api_url": fake_slack.api_url},
            "storage": {"url_env": "DIALOBOT_DATABASE_URL"},
            "logging": {"format": log_format},
        }
    )
    setup_logging("DEBUG", config)
    readiness.expect(["discord", "slack"])
    engine = make_engine(store, fake_generator, config)
    tasks = [
        asyncio.create_task(discord_adapter.serve(engine, config)),
        asyncio.create_task(slack_adapter.serve(engine, config)),
    ]
    try:
        # Both adapters report ready once connected to their fake platform.
        await eventually(lambda: readiness.problems() == [], what="both adapters ready")
        await fake_slack.send_event(event_callback(mention("hello"), "Ev1"))
        await fake_slack.wait_for("call:chat.postMessage")
        # A careless log line anywhere in the process is caught too, arguments and tracebacks included.
        logging.getLogger("anywhere").debug("connecting with %s", config.storage.resolve_url())
        try:
            raise RuntimeError(f"refused token {BOT_TOKEN}")
        except RuntimeError:
            logging.getLogger("anywhere").exception("oops")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fake_slack.close()
        await fake_discord.close()

    logged = capsys.readouterr().err
    assert "Slack Socket Mode connected" in logged and "connected to Discord" in logged  # DEBUG run happened
    assert logged.count(REDACTED) >= 2
    for secret in (DISCORD_TOKEN, BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, DB_PASSWORD):
        assert secret not in logged, f"{secret} was logged"
    if log_format == "json":
        records = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
        assert records and {"time", "level", "logger", "message"} <= records[0].keys()
        assert any(
            r["logger"] == "anywhere" and r["message"] == "connecting with ***"  # the whole URL is a secret
            for r in records
        )


def test_secret_values_come_from_the_env_keys_of_every_section(secrets_env):
    config = parse_config({"storage": {"url_env": "DIALOBOT_DATABASE_URL"}})
    values = secret_values(config)
    assert {DISCORD_TOKEN, BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, DB_PASSWORD} <= set(values)


def test_redactor_rewrites_message_and_arguments():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s and %d", ("abcd1234", 5), None)
    SecretRedactor(["abcd1234"]).filter(record)
    assert record.getMessage() == "token=*** and 5"


def test_a_database_url_without_a_password_stays_readable_in_logs(monkeypatch):
    monkeypatch.setenv("DIALOBOT_DATABASE_URL", "sqlite+aiosqlite:////data/dialobot.db")
    config = parse_config({"storage": {"url_env": "DIALOBOT_DATABASE_URL"}})
    assert not any("dialobot.db" in value for value in secret_values(config))


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_library_logs_are_printed_once_in_our_format_with_secrets_blotted_out(log_format, secrets_env, capfd):
    """huggingface_hub (the hub's retries) and transformers print through handlers of their own on import;
    their records must come out once, through dialobot's handler: formatted, and redacted."""
    import huggingface_hub  # noqa: F401  # both install their own handlers on import
    import transformers  # noqa: F401

    from bot.models.loader import quiet_transformers

    setup_logging("WARNING", parse_config({"logging": {"format": log_format}}))
    quiet_transformers()  # as every model load does
    logging.getLogger("huggingface_hub.utils._http").warning("retrying GET with token %s", DISCORD_TOKEN)
    logging.getLogger("transformers.modeling_utils").error("could not load with token %s", BOT_TOKEN)
    logging.getLogger("transformers.modeling_utils").warning("below transformers' level: not printed")
    printed = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(printed) == 2, printed
    assert not any(DISCORD_TOKEN in line or BOT_TOKEN in line for line in printed)
    if log_format == "json":
        records = [json.loads(line) for line in printed]
        assert [(r["logger"], r["message"]) for r in records] == [
            ("huggingface_hub.utils._http", "retrying GET with token ***"),
            ("transformers.modeling_utils", "could not load with token ***"),
        ]
    else:
        assert "WARNING huggingface_hub.utils._http: retrying GET with token ***" in printed[0]
        assert "ERROR transformers.modeling_utils: could not load with token ***" in printed[1]
