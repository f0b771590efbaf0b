"""The console adapter, in process and as `dialobot chat` driven through a pipe."""

import io
import os
import select
import signal
import subprocess
import sys

import pytest

from adapters import console
from bot.config import parse_config
from bot.testing import ScriptedGenerator as FakeGenerator
from bot.testing import make_engine


async def test_console_answers_each_line_and_stops_at_end_of_input(store):
    config = parse_config({"console": {"name": "pipe"}})
    engine = make_engine(store, FakeGenerator(), config)
    stdout = io.StringIO()
    await console.serve(engine, config, stdin=io.StringIO("hello\n\n  \nhow are you\n"), stdout=stdout)
    assert stdout.getvalue().splitlines() == [
        "Bot: echo: hello (1 turns seen)",
        "Bot: echo: how are you (3 turns seen)",
    ]
    assert await store.count_turns("console:pipe") == 4


async def test_quit_stops_reading_and_commands_work(store):
    config = parse_config({})
    engine = make_engine(store, FakeGenerator(), config)
    stdout = io.StringIO()
    script = "hi\n/status\n/reset\n/status\n/quit\nnever read\n"
    await console.serve(engine, config, stdin=io.StringIO(script), stdout=stdout)
    lines = stdout.getvalue().splitlines()
    assert lines[0] == "Bot: echo: hi (1 turns seen)"
    assert lines[1].endswith("turns stored in this conversation: 2")
    assert lines[2].startswith("Bot: History cleared (2 turns deleted)")
    assert lines[3].endswith("turns stored in this conversation: 0")
    assert len(lines) == 4


def run_chat(model_dir, data_dir, lines, *extra):
    env = {**os.environ, "DIALOBOT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    env.pop("DIALOBOT_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "bot", "chat", "--model", str(model_dir), *extra],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def bot_lines(result):
    return [line.removeprefix("Bot: ") for line in result.stdout.splitlines() if line.startswith("Bot: ")]


@pytest.mark.process
def test_piped_chat_with_a_real_model_keeps_history_across_restarts(tiny_model_dir, tmp_path):
    first = run_chat(tiny_model_dir, tmp_path, ["Hello", "How are you?", "/status"])
    assert first.returncode == 0, first.stderr
    replies = bot_lines(first)
    assert len(replies) == 3
    assert all(reply.strip() for reply in replies[:2])
    assert replies[2].endswith("turns stored in this conversation: 4")
    assert "9/9 projections INT8" in replies[2]
    assert replies[2].startswith(f"Model: {tiny_model_dir.name} · ")  # the model's name, not its path
    assert str(tiny_model_dir.parent) not in replies[2]

    second = run_chat(tiny_model_dir, tmp_path, ["/status", "/reset", "/status"])
    assert second.returncode == 0, second.stderr
    status_before, reset, status_after = bot_lines(second)
    assert status_before.endswith("turns stored in this conversation: 4")
    assert reset.startswith("History cleared (4 turns deleted)")
    assert status_after.endswith("turns stored in this conversation: 0")


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a full demo build, then whole runs, on a possibly busy CI machine
def test_a_long_piped_conversation_never_errors(tiny_model_dir, tmp_path):
    lines = [f"message {i}: tell me something about topic {i % 17} <|endoftext|>" for i in range(300)]
    result = run_chat(tiny_model_dir, tmp_path, lines, "--quantization", "int8")
    assert result.returncode == 0, result.stderr
    replies = bot_lines(result)
    assert len(replies) == 300
    assert all(reply.strip() for reply in replies)


@pytest.mark.process
def test_sigterm_stops_a_waiting_chat_cleanly(tiny_model_dir, tmp_path):
    env = {**os.environ, "DIALOBOT_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("DIALOBOT_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "chat", "--model", str(tiny_model_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.stdin.write("/status\n")
    proc.stdin.flush()
    readable, _, _ = select.select([proc.stdout], [], [], 300)
    assert readable, "the chat never answered"
    assert proc.stdout.readline().startswith("Bot: Model:")  # loaded and serving, now waiting for input
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in proc.stderr.read()
