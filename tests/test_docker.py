"""The container files, tested as far as a machine without a Docker engine can.

The command the image runs (ENTRYPOINT + CMD) and the command its HEALTHCHECK calls are run here for real,
against the image's own config file with only what a test must change (console instead of Discord, a free
port, a tiny model): `healthcheck` must fail while the bot starts and pass once it answers; `/metrics` must
count the messages. The rest checks the Dockerfile and the compose file agree with each other and the code.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from bot.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
IMAGE_CONFIG = "/etc/dialobot/config.toml"


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def instruction(name: str) -> list[str]:
    return [args for instr, args in dockerfile() if instr == name]


def exec_form(args: str) -> list[str]:
    return json.loads(args)


def test_the_image_runs_the_console_script_with_the_config_it_ships():
    [entrypoint], [cmd] = instruction("ENTRYPOINT"), instruction("CMD")
    argv = exec_form(entrypoint) + exec_form(cmd)
    assert argv == ["dialobot", "run", "--config", IMAGE_CONFIG]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["dialobot"] == "bot.cli:main"
    assert f"docker/config.toml {IMAGE_CONFIG}" in instruction("COPY")


def test_the_healthcheck_calls_dialobot_healthcheck_and_allows_for_a_slow_model_load():
    [healthcheck] = instruction("HEALTHCHECK")
    options, command = healthcheck.split(" CMD ", 1)
    assert exec_form(command) == ["dialobot", "healthcheck", "--config", IMAGE_CONFIG]
    start_period = re.search(r"--start-period=(\d+)m", options)
    assert start_period and int(start_period.group(1)) >= 5


def test_small_final_stage_non_root_with_data_and_cache_on_volumes():
    stages = instruction("FROM")
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    assert [args for instr, args in dockerfile() if instr == "ARG"] == ["PYTHON_IMAGE=python:3.11-slim"]
    assert instruction("COPY")[-2] == "--from=build /opt/dialobot /opt/dialobot"  # no compiler, no pip cache
    [user] = instruction("USER")
    assert user not in ("root", "0")
    assert exec_form(instruction("VOLUME")[0]) == ["/data", "/cache"]
    # torch from the CPU index, pinned like everywhere else in the project.
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in instruction("RUN")


def test_the_image_config_is_valid_and_serves_health_on_all_interfaces_inside():
    config = parse_config(tomllib.loads((ROOT / "docker" / "config.toml").read_text()), "docker/config.toml")
    assert (config.health.enabled, config.health.host) == (True, "0.0.0.0")
    assert config.storage.url_env == "DIALOBOT_DATABASE_URL"
    assert f"EXPOSE {config.health.port}" in [f"EXPOSE {a}" for a in instruction("EXPOSE")]
    env = " ".join(instruction("ENV"))
    assert "DIALOBOT_DATABASE_URL=sqlite+aiosqlite:////data/dialobot.db" in env


def test_compose_runs_the_bot_on_postgres_with_secrets_from_an_env_file():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    db, bot = compose["services"]["db"], compose["services"]["bot"]
    assert db["image"] == "postgres:16" and "healthcheck" in db
    assert bot["depends_on"]["db"]["condition"] == "service_healthy"
    assert bot["env_file"] == ".env"
    assert bot["environment"]["DIALOBOT_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "${POSTGRES_PASSWORD}" in bot["environment"]["DIALOBOT_DATABASE_URL"]  # never written in the file
    assert f"./docker/config.toml:{IMAGE_CONFIG}:ro" in bot["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in bot["ports"])
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.process
def test_entry_point_and_healthcheck_run_like_in_the_image(tmp_path, tiny_model_dir):
    """`dialobot run` with the image's config, the console standing in for Discord; HEALTHCHECK's command."""
    image_config = (ROOT / "docker" / "config.toml").read_text()
    port = free_port()
    config_text = image_config.replace(
        "[console]\n# No terminal in a container.\nenabled = false", "[console]\nenabled = true"
    )
    config_text = config_text.replace(
        "[discord]\n# The token comes from DISCORD_BOT_TOKEN (put it in .env).\nenabled = true",
        "[discord]\nenabled = false",
    )
    config_text = config_text.replace('host = "0.0.0.0"\nport = 9464', f'host = "127.0.0.1"\nport = {port}')
    assert config_text.count("enabled = true") == 2  # console and health: the replacements above all applied
    config = tmp_path / "config.toml"
    config.write_text(config_text)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "DIALOBOT_DATA_DIR": str(tmp_path / "data"),
        "DIALOBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'dialobot.db'}",
    }
    [cmd] = instruction("CMD")
    argv = [*exec_form(cmd), "--model", str(tiny_model_dir)]
    argv[argv.index(IMAGE_CONFIG)] = str(config)
    bot = subprocess.Popen(
        [sys.executable, "-m", "bot", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    [healthcheck] = instruction("HEALTHCHECK")
    check_argv = exec_form(healthcheck.split(" CMD ", 1)[1])[1:]
    check_argv[check_argv.index(IMAGE_CONFIG)] = str(config)

    def healthcheck_status() -> int:
        return subprocess.run(
            [sys.executable, "-m", "bot", *check_argv], capture_output=True, env=env
        ).returncode

    try:
        deadline = time.monotonic() + 120
        while healthcheck_status() != 0:
            assert bot.poll() is None, bot.stderr.read()
            assert time.monotonic() < deadline, "the bot never became healthy"
            time.sleep(0.5)
        bot.stdin.write("hello there\n")
        bot.stdin.flush()
        assert bot.stdout.readline().startswith("Bot: ")
        # The exchange is stored just after the reply is printed: poll until it shows (or time runs out).
        stored_by = time.monotonic() + 15
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                metrics = response.read().decode()
            if "dialobot_history_rows 2.0" in metrics or time.monotonic() > stored_by:
                break
            time.sleep(0.1)
        assert 'dialobot_messages_received_total{platform="console"} 1.0' in metrics
        assert "dialobot_history_rows 2.0" in metrics
        bot.stdin.close()  # the console ends, and with it the bot
        assert bot.wait(timeout=60) == 0
        assert (tmp_path / "data" / "dialobot.db").is_file()
        logs = [json.loads(line) for line in bot.stderr.read().splitlines() if line.startswith("{")]
        assert any(
            r["logger"] == "bot.core.engine" and "console:local" in r["message"] for r in logs
        )  # JSON, INFO
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()


@pytest.mark.parametrize("path", ["Dockerfile", "docker-compose.yml", ".dockerignore", "docker/config.toml"])
def test_container_files_carry_no_secret(path):
    text = (ROOT / path).read_text()
    assert not re.search(r"(?i)(token|password|secret)\s*[:=]\s*[\"']?[A-Za-z0-9_\-]{8,}", text), path
