"""Operator commands through the real `dialobot` entry point: `db upgrade|status`, `history export|reset`,
`healthcheck`, and the one-line refusal of a database whose schema does not match."""

from __future__ import annotations

import asyncio
import getpass
import json

import pytest

from storage import NewTurn, Role, open_store
from storage.history_store import connect
from storage.schema_version import expected_revision
from tests.bot.test_cli import dialobot
from tests.storage.first_release_schema import create_first_release_database


@pytest.fixture
def config_file(tmp_path):
    """A config whose history database is the test's SQLite file (the same one `db_url` names)."""
    path = tmp_path / "dialobot.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / "history.db"}"\n')
    return str(path)


async def _first_release_db(db_url) -> None:
    engine = await connect(db_url)
    await create_first_release_database(engine)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO messages (channel_key, role, author_id, text, created_at) "
            "VALUES ('console:local', 'user', 'me', 'from 0.1.0', '2026-01-01 00:00:00')"
        )
    await engine.dispose()


@pytest.mark.process
async def test_db_upgrade_adopts_a_first_release_database(db_url, config_file):
    await _first_release_db(db_url)
    status = await asyncio.to_thread(dialobot, "db", "status", "--config", config_file)
    assert status.returncode == 1
    assert "dialobot db upgrade" in status.stdout

    upgraded = await asyncio.to_thread(dialobot, "db", "upgrade", "--config", config_file)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (
        upgraded.stdout.strip() == f"upgraded the database schema from revision 0001 to {expected_revision()}"
    )
    again = await asyncio.to_thread(dialobot, "db", "upgrade", "--config", config_file)
    assert "nothing to do" in again.stdout

    store = await open_store(db_url)
    assert [t.text for t in await store.recent_turns("console:local", 5)] == ["from 0.1.0"]
    await store.close()


@pytest.mark.process
async def test_the_bot_refuses_an_old_schema_with_one_line_naming_the_command(
    db_url, config_file, tiny_model_dir
):
    await _first_release_db(db_url)
    result = await asyncio.to_thread(
        dialobot, "chat", "--config", config_file, "--model", str(tiny_model_dir), stdin="hello\n"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dialobot: ") and "`dialobot db upgrade`" in lines[0]


@pytest.mark.process
async def test_history_export_writes_json_lines_oldest_first(db_url, config_file):
    store = await open_store(db_url)
    await store.append_turns(
        "discord:1:2", [NewTurn(Role.USER, "u1", "héllo\nthere"), NewTurn(Role.BOT, "bot", "hi")]
    )
    await store.append_turns("discord:1:3", [NewTurn(Role.USER, "u2", "elsewhere")])
    await store.close()
    result = await asyncio.to_thread(
        dialobot, "history", "export", "--channel", "discord:1:2", "--config", config_file
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["channel"], r["role"], r["author_id"], r["text"]) for r in records] == [
        ("discord:1:2", "user", "u1", "héllo\nthere"),
        ("discord:1:2", "bot", "bot", "hi"),
    ]
    assert all(r["created_at"] for r in records)


@pytest.mark.process
async def test_history_reset_needs_yes_when_not_on_a_terminal(db_url, config_file):
    store = await open_store(db_url)
    await store.append_turns("slack:T:C", [NewTurn(Role.USER, "u", "keep me")])
    await store.close()
    refused = await asyncio.to_thread(
        dialobot, "history", "reset", "--channel", "slack:T:C", "--config", config_file
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "dialobot: history reset: not confirmed; nothing deleted (pass --yes to reset slack:T:C)"
    )
    done = await asyncio.to_thread(
        dialobot, "history", "reset", "--channel", "slack:T:C", "--yes", "--config", config_file
    )
    assert (done.returncode, done.stdout.strip()) == (0, "deleted 1 turns of slack:T:C")
    store = await open_store(db_url)
    assert await store.count_turns("slack:T:C") == 0
    await store.close()


@pytest.mark.process
def test_healthcheck_without_a_health_server_configured_says_so(config_file):
    result = dialobot("healthcheck", "--config", config_file)
    assert result.returncode == 2
    assert "health.enabled is false" in result.stderr


@pytest.mark.process
def test_healthcheck_with_nothing_listening_is_unhealthy(tmp_path):
    config = tmp_path / "h.toml"
    config.write_text("[health]\nenabled = true\nport = 1\n")
    result = dialobot("healthcheck", "--config", str(config))
    assert result.returncode == 1
    assert "no answer from http://127.0.0.1:1/healthz" in result.stdout


# ---- the operator's reset from the command line ----


async def test_an_operators_history_reset_is_audited_too(db_url, tmp_path):
    config_file = tmp_path / "dialobot.toml"
    config_file.write_text(f'[storage]\npath = "{tmp_path / "history.db"}"\n')
    store = await open_store(db_url)
    await store.append_turns("slack:T:C", [NewTurn(Role.USER, "u", "bye")])
    await store.close()
    args = ("history", "reset", "--channel", "slack:T:C", "--yes", "--config", str(config_file))
    assert (await asyncio.to_thread(dialobot, *args)).returncode == 0
    store = await open_store(db_url)
    [entry] = await store.audit_entries()
    await store.close()
    assert (entry.actor, entry.action, entry.target) == (f"cli:{getpass.getuser()}", "reset", "slack:T:C")
