"""The `openai` backend against a fake OpenAI-compatible server that generates with the tiny model and fails
on demand: retries, timeouts, garbage, a server that goes down, the API key, the text prompt format, and the
whole bot (engine, SQLite history, console CLI) carrying on through all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading

import pytest

from bot.cli import main
from bot.config import parse_config
from bot.core.engine import MODEL_SERVER_DOWN
from bot.core.message import IncomingMessage, ReplyKind
from bot.errors import GenerationUnavailable
from bot.generation.backends import load_backend
from bot.generation.backends.openai import OpenAIGenerator, defuse_special_tokens
from bot.testing import Outbox, make_engine
from tests.bot.generation.backends.conftest import GREEDY
from tests.bot.generation.backends.fake_openai import FakeOpenAIServer

KEY_ENV = "DIALOBOT_TEST_OPENAI_KEY"
SECRET = "sk-test-0123456789-secret"
FAST = {"timeout_seconds": 0.5, "max_retries": 1}  # a tiny reply takes ~30 ms here


@pytest.fixture
async def server(tiny_model_dir):
    server = FakeOpenAIServer(tiny_model_dir)
    await server.start()
    yield server
    await server.close()


def config_for(server, model_dir, generation=None, **openai):
    return parse_config(
        {
            "model": {"name": str(model_dir), "backend": "openai"},
            "generation": generation or dict(GREEDY),
            "history": {"max_turns": 20},
            "openai": {"base_url": server.base_url, "model": "tiny", **FAST, **openai},
        }
    )


@pytest.fixture
async def connect(server, tiny_model_dir):
    """`connect(**openai_keys)`: an `OpenAIGenerator` talking to `server`, closed after the test."""
    made = []

    def make(generation=None, **openai) -> OpenAIGenerator:
        generator = load_backend(config_for(server, tiny_model_dir, generation, **openai))
        made.append(generator)
        return generator

    yield make
    for generator in made:
        await generator.close()


async def test_info_describes_the_remote_model(connect, server):
    info = connect().info
    assert (info.backend, info.name, info.source) == ("openai", "tiny", server.base_url)
    assert (info.quantization, info.parameters, info.projections) == ("remote", None, None)
    assert info.context == 1024  # the tiny model's n_positions
    assert connect(context=256).info.context == 256


async def test_the_request_carries_the_dialogpt_prompt_and_the_eos_stop(connect, server):
    assert await connect(generation={**GREEDY, "repetition_penalty": 1.1}).generate(
        ["Hello", "Hi", "How are you?"]
    )
    body = server.completions[-1].body
    eos_id = server.tokenizer.eos_token_id
    assert body["model"] == "tiny" and body["max_tokens"] == 12 and body["temperature"] == 0
    assert body["stop"] == ["<|endoftext|>"] and body["skip_special_tokens"] is True
    assert body["repetition_penalty"] == body["repeat_penalty"] == 1.1 and "top_k" not in body
    assert body["prompt"][-1] == eos_id and body["prompt"].count(eos_id) == 3

    sampled = connect(generation={"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 40})
    assert isinstance(await sampled.generate(["Hello"]), str)
    body = server.completions[-1].body
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.9, 40)


@pytest.mark.parametrize("fault", [500, 429, "timeout"])
async def test_one_failure_is_retried_and_the_reply_arrives(connect, server, fault):
    generator = connect()
    expected = await generator.generate(["Hello"])
    server.fail_next(fault)
    assert await generator.generate(["Hello"]) == expected
    assert [r.fault for r in server.completions[1:]] == [fault, None]


@pytest.mark.parametrize(
    ("fault", "attempts", "says"),
    [
        (500, 2, "answered HTTP 500 (2 attempts): internal server error"),
        (429, 2, "answered HTTP 429 (2 attempts): rate limited"),
        ("timeout", 2, "timed out (no answer within 0.5s, 2 attempts)"),
        ("garbage", 1, "sent a malformed reply (not JSON)"),
        ("wrong-shape", 1, "sent a malformed reply (no choices)"),
        ("wrong-type", 1, "sent a malformed reply (choices[0].text is int, not a string)"),
    ],
)
async def test_a_server_that_keeps_failing_gives_one_clear_line(connect, server, fault, attempts, says):
    generator = connect(prompt_format="tokens")
    server.fail_next(*[fault] * attempts)
    with pytest.raises(GenerationUnavailable) as raised:
        await generator.generate(["Hello"])
    assert str(raised.value) == f"model server {server.base_url} {says}"
    assert len(server.completions) == attempts
    assert await generator.generate(["Hello"])  # and the next message is answered


async def test_a_server_that_is_down_is_named_and_then_back(connect, server):
    generator = connect()
    await server.stop()
    with pytest.raises(GenerationUnavailable, match=rf"^model server {server.base_url} is unreachable \("):
        await generator.generate(["Hello"])
    assert "is unreachable" in await generator.probe()
    await server.start()
    assert await generator.generate(["Hello"])
    assert await generator.probe() == (
        f"model server {server.base_url} is up and serves 'tiny' (prompts sent as token ids)"
    )


async def test_credentials_in_the_base_url_stay_out_of_info_and_errors(connect, server):
    with_password = server.base_url.replace("http://", "http://bot:hunter2@")
    generator = connect(base_url=with_password)
    assert generator.info.source == server.base_url
    await server.stop()
    with pytest.raises(GenerationUnavailable) as caught:
        await generator.generate(["Hello"])
    assert "hunter2" not in str(caught.value) and server.base_url in str(caught.value)
    assert "hunter2" not in await generator.probe()


async def test_a_reply_that_runs_past_the_stop_is_cut_at_the_eos_text(connect, server):
    generator = connect()
    expected = await generator.generate(["Hello"])
    server.fail_next("ignore-stop")
    assert await generator.generate(["Hello"]) == expected


async def test_an_unknown_model_names_the_key_to_check(connect, server):
    generator = connect(model="not-served")
    with pytest.raises(GenerationUnavailable, match=r"\(HTTP 404\); check openai.model$"):
        await generator.generate(["Hello"])
    assert "does not serve 'not-served' (it serves tiny)" in await generator.probe()


async def test_the_api_key_is_sent_as_bearer_and_never_logged(connect, server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    server.api_key = SECRET
    monkeypatch.setenv(KEY_ENV, SECRET)
    generator = connect(api_key_env=KEY_ENV)
    assert await generator.generate(["Hello"])
    assert server.completions[-1].authorization == f"Bearer {SECRET}"
    errors = []
    server.fail_next(500, 500)
    with pytest.raises(GenerationUnavailable) as raised:
        await generator.generate(["Hello"])
    errors.append(str(raised.value))
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-9876")
    wrong = connect(api_key_env=KEY_ENV)
    with pytest.raises(GenerationUnavailable) as raised:
        await wrong.generate(["Hello"])
    errors.append(str(raised.value))
    assert errors[1].endswith("refused the API key (HTTP 401); check openai.api_key_env")
    assert "openai backend: " in caplog.text  # the failures were logged, once each, without tracebacks
    assert "Traceback" not in caplog.text
    for text in [caplog.text, *errors]:
        assert SECRET not in text and "sk-wrong-key-9876" not in text


def test_special_token_text_is_defused_with_a_zero_width_joiner():
    assert defuse_special_tokens("say <|endoftext|> now", ["<|endoftext|>"]) == "say <\u200d|endoftext|> now"
    assert defuse_special_tokens("plain", ["<|endoftext|>"]) == "plain"


async def test_the_text_prompt_format_keeps_special_token_text_as_text(connect, server):
    generator = connect(prompt_format="text")
    tokens = connect()
    eos_id = server.tokenizer.eos_token_id
    for turns in (
        ["first", "say <|endoftext|> to me"],
        ["<|endoftext|>"],
        ["a <|endoftext|><|endoftext|> b"],
    ):
        assert isinstance(await generator.generate(turns), str)
        received = server.completions[-1]
        assert isinstance(received.body["prompt"], str)
        assert received.prompt_ids.count(eos_id) == len(turns)
    # Without special-token text, the server tokenizes the text back to exactly the ids: the same reply.
    turns = ["Hello", "Hi", "How are you?"]
    assert await generator.generate(turns) == await tokens.generate(turns)
    assert server.completions[-2].prompt_ids == server.completions[-1].body["prompt"]


@pytest.fixture
async def text_only_server(tiny_model_dir):
    server = FakeOpenAIServer(tiny_model_dir, text_prompts_only=True)
    await server.start()
    yield server
    await server.close()


async def test_auto_sends_token_ids_to_a_server_that_takes_them(connect, server):
    generator = connect()
    assert generator.prompt_format == "auto"
    assert await generator.probe() == (
        f"model server {server.base_url} is up and serves 'tiny' (prompts sent as token ids)"
    )
    await generator.generate(["Hello"])
    assert all(isinstance(r.body["prompt"], list) for r in server.completions)
    assert generator.prompt_format == "tokens"


async def test_auto_falls_back_to_text_once_for_a_server_that_refuses_token_ids(
    text_only_server, tiny_model_dir, caplog
):
    """llama-cpp-python's server answers token ids with HTTP 500: the first message is still answered, the
    log says why once (with the server's own message), and every later prompt is text."""
    server = text_only_server
    generator = load_backend(config_for(server, tiny_model_dir))
    try:
        caplog.set_level(logging.WARNING, logger="bot.generation.backends.openai")
        assert await generator.generate(["Hello"])
        assert await generator.generate(["Hello", "Hi", "How are you?"])
        prompts = [r.body["prompt"] for r in server.completions]
        assert isinstance(prompts[0], list) and all(isinstance(p, str) for p in prompts[1:])
        assert len(prompts) == 3  # one refusal, no retries of it
        [warning] = [r.getMessage() for r in caplog.records]
        assert "refused a token-id prompt (HTTP 500: 'int' object has no attribute 'encode')" in warning
        assert generator.prompt_format == "text"
        assert (await generator.probe()).endswith("(prompts sent as text)")
    finally:
        await generator.close()


async def test_a_text_prompt_cut_inside_a_character_stays_within_the_budget(connect, server):
    """A turn too long for the context is cut at a token boundary, which can fall inside a character; the
    text sent must tokenize back within the budget and carry no U+FFFD."""
    generator = connect(prompt_format="text", context=64)
    budget = 64 - GREEDY["max_new_tokens"]
    for last in ("é" * 300, "日本語のテキスト" * 40, "ok 👍🏽 " * 60):
        assert isinstance(await generator.generate(["Hello", last]), str)
        received = server.completions[-1]
        assert "\ufffd" not in received.body["prompt"]
        assert len(received.prompt_ids) <= budget


def msg(text):
    return IncomingMessage(platform="test", channel_key="console:remote", author_id="u1", text=text)


async def test_the_bot_survives_a_failing_server_and_keeps_every_turn(connect, server, store):
    generator = connect()
    engine = make_engine(store, generator, config_for(server, "unused"))
    out = Outbox()
    assert (await engine.handle(msg("Hello"), out)).kind is ReplyKind.CHAT

    async def unanswered(text: str) -> None:
        reply = await engine.handle(msg(text), out)
        assert (reply.kind, reply.text, reply.delivered) == (ReplyKind.NOTICE, MODEL_SERVER_DOWN, True)

    await server.stop()
    await unanswered("Are you there?")
    await server.start()
    server.fail_next("garbage")
    await unanswered("Hello?")
    server.fail_next("timeout", "timeout")
    await unanswered("Anyone?")
    server.fail_next(500, 500)
    await unanswered("Still nothing?")
    reply = await engine.handle(msg("Back now?"), out)
    assert reply.kind is ReplyKind.CHAT and reply.text and reply.text != MODEL_SERVER_DOWN

    history = [t.text for t in await store.recent_turns("console:remote", 20)]
    lost = ["Are you there?", "Hello?", "Anyone?", "Still nothing?"]
    assert history[2:] == [*lost, "Back now?", reply.text]
    prompt = server.tokenizer.decode(server.completions[-1].body["prompt"])
    assert all(text in prompt for text in ["Hello", *lost, "Back now?"])


@contextlib.contextmanager
def server_in_a_thread(model_dir):
    """The fake on its own event loop, for code that runs `asyncio.run` itself (the CLI)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="fake-openai-loop")
    thread.start()
    server = FakeOpenAIServer(model_dir)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_console_chat_and_model_info_through_the_cli(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIALOBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DIALOBOT_CONFIG", raising=False)
    with server_in_a_thread(tiny_model_dir) as server:
        config = tmp_path / "openai.toml"
        config.write_text(f'[openai]\nbase_url = "{server.base_url}"\nmodel = "tiny"\n')
        flags = ["--backend", "openai", "--model", str(tiny_model_dir), "--config", str(config)]

        monkeypatch.setattr("sys.stdin", io.StringIO("Hello\nHow are you?\n/status\n"))
        assert main(["chat", *flags]) == 0
        replies = [line[5:] for line in capsys.readouterr().out.splitlines() if line.startswith("Bot: ")]
        assert len(replies) == 3 and all(r.strip() and r != MODEL_SERVER_DOWN for r in replies[:2])
        assert replies[2].endswith("turns stored in this conversation: 4")
        assert len(server.completions) >= 2

        assert main(["model-info", *flags]) == 0
        out = capsys.readouterr().out
        assert "backend:      openai" in out and f"source:       {server.base_url}" in out
        assert "quantization: remote" in out and "parameters" not in out
        up = f"model server {server.base_url} is up and serves 'tiny' (prompts sent as token ids)"
        assert f"server:       {up}" in out
    # The server is gone: model-info still prints, with one line saying the server does not answer.
    assert main(["model-info", *flags]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("server:")]
    assert server.base_url in line and "is up" not in line
