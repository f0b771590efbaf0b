"""The `openai` backend against a real llama-cpp-python server (`python -m llama_cpp.server`) serving the tiny
test model, converted to an f32 GGUF by llama.cpp's own `convert_hf_to_gguf.py`.

What the fake server in test_openai.py cannot show: the `auto` prompt format meeting a real refusal (this
server declares `prompt: str | list[str]` and answers token ids with HTTP 500), greedy replies matching the
torch backend through llama.cpp's tokenizer and kernels, special-token text defused as the server's own
tokenizer reads it, and which sampling fields the server honours.

Opt-in: installing llama-cpp-python compiles llama.cpp (about 18 minutes on 2 cores), so `make test-llamacpp`
runs these in their own venv, `.venv-llamacpp`, where it also unpacks the converter from llama-cpp-python's
sdist (its vendored llama.cpp); elsewhere this module is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.config import parse_config
from bot.generation.backends import load_backend
from tests.bot.generation.backends.conftest import GREEDY, SKIP_WITHOUT_LLAMACPP, backend_config
from tests.bot.generation.backends.test_contract import CONVERSATIONS, LOOPING, SHORT_ANSWERS, SPECIAL

pytestmark = SKIP_WITHOUT_LLAMACPP

MODEL = "tiny"
CONVERTER_ENV = "DIALOBOT_GGUF_CONVERTER"
START_SECONDS = 120.0
REFUSED = "refused a token-id prompt"

# The converter names a BPE pre-tokenizer by hashing how it splits a test string, and knows only published
# tokenizers' hashes; the tiny model's byte-level BPE has its own merges, so its hash is new. Its
# pre-tokenizer is GPT-2's (ByteLevel with GPT-2's regex, checked in `gguf_model`), which this names.
CONVERT = """
import runpy, sys
from pathlib import Path

converter = sys.argv[1]
sys.path.insert(0, str(Path(converter).parent))
from conversion.base import TextModel

TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv = [converter, *sys.argv[2:]]
runpy.run_path(converter, run_name="__main__")
"""


def converter_path() -> Path:
    """`convert_hf_to_gguf.py`: `$DIALOBOT_GGUF_CONVERTER`, else where `make test-llamacpp` unpacks it."""
    return Path(os.environ.get(CONVERTER_ENV) or Path(sys.prefix) / "llama.cpp" / "convert_hf_to_gguf.py")


@pytest.fixture(scope="session")
def gguf_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as an f32 GGUF (f32 for parity with torch FP32: f16 weights round every product)."""
    converter = converter_path()
    if not converter.is_file():
        pytest.fail(
            f"{converter} not found: `make test-llamacpp` unpacks llama.cpp's convert_hf_to_gguf.py from the "
            f"llama-cpp-python sdist, or set {CONVERTER_ENV}"
        )
    tokenizer = json.loads((Path(tiny_model_dir) / "tokenizer.json").read_text())
    pre = tokenizer["pre_tokenizer"]
    assert (pre["type"], pre["use_regex"], pre["add_prefix_space"]) == ("ByteLevel", True, False)
    # Hub GPT-2 and DialoGPT configs carry `n_ctx`, which the converter reads; a fresh GPT2Config has only
    # `n_positions`. The weights are linked, not copied.
    source = tmp_path_factory.mktemp("hf-model")
    for path in Path(tiny_model_dir).iterdir():
        (source / path.name).symlink_to(path.resolve())
    (source / "config.json").unlink()
    config = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "n_ctx": config["n_positions"]}))
    out = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    args = [str(converter), str(source), "--outfile", str(out), "--outtype", "f32", "--model-name", MODEL]
    done = subprocess.run([sys.executable, "-c", CONVERT, *args], capture_output=True, text=True)
    assert done.returncode == 0 and out.is_file(), f"conversion failed:\n{done.stdout}\n{done.stderr}"
    return out


@dataclass
class LlamaServer:
    process: subprocess.Popen
    root: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.root}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def tokenize(self, text: str) -> list[int]:
        """The server's tokens for `text`, special-token text read as special tokens as in its completions."""
        return self.post("/extras/tokenize", {"input": text, "model": MODEL})["tokens"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(gguf_model, tmp_path_factory):
    """`python -m llama_cpp.server` on 127.0.0.1 serving the GGUF as `tiny`; up once `/v1/models` answers.

    One thread, the model's own 1024-token context, a fixed seed (its sampled replies are reproducible).
    """
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        *(sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_model), "--model_alias", MODEL),
        *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "1", "--seed", "0"),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = LlamaServer(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{server.base_url}/models", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server not up in {START_SECONDS:g}s:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Sent:
    prompt: list[int] | str
    status: int
    prompt_tokens: int | None  # the server's count (`usage.prompt_tokens`) when it answered


@pytest.fixture
def sent(monkeypatch) -> list[Sent]:
    """Every completion request the backend makes, with the status it got (retries inside count as one)."""
    import openai
    from openai.resources.completions import AsyncCompletions

    requests: list[Sent] = []
    real = AsyncCompletions.create

    async def create(self, **kwargs):
        try:
            completion = await real(self, **kwargs)
        except openai.APIStatusError as exc:
            requests.append(Sent(kwargs["prompt"], exc.status_code, None))
            raise
        usage = getattr(completion, "usage", None)
        requests.append(Sent(kwargs["prompt"], 200, usage.prompt_tokens if usage else None))
        return completion

    monkeypatch.setattr(AsyncCompletions, "create", create)
    return requests


@pytest.fixture
async def connect(llama_server, tiny_model_dir):
    """`connect(generation=None)`: the bot's `openai` backend for the server, with the default `[openai]`
    settings but the address and the model name, and the default generation settings unless given."""
    made = []

    def make(generation: dict | None = None):
        data = {
            "model": {"name": str(tiny_model_dir), "backend": "openai"},
            "openai": {"base_url": llama_server.base_url, "model": MODEL},
            **({"generation": generation} if generation is not None else {}),
        }
        generator = load_backend(parse_config(data))
        made.append(generator)
        return generator

    yield make
    for generator in made:
        await generator.close()


@pytest.fixture(scope="module")
def torch_replies(tiny_model_dir):
    """`torch_replies(turns_list, **generation)`: the torch backend's FP32 replies, greedy unless told."""
    made = []

    def replies(conversations, **generation):
        generator = load_backend(backend_config("torch", tiny_model_dir, "none", generation))
        made.append(generator)
        return [generator.generate_sync(turns) for turns in conversations]

    yield replies
    for generator in made:
        generator.executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def llama_cpp_greedy(hf_model, prompt: str, repeat_penalty: float, max_new_tokens: int) -> str:
    """Greedy decoding with llama.cpp's repeat penalty, in torch: a logit of a token already in the *reply*
    is divided by the penalty (multiplied, if negative). llama-cpp-python builds a fresh sampler per request
    and feeds it only sampled tokens, so unlike transformers' `repetition_penalty`, the prompt's tokens are
    not penalized (the window, 64 tokens, is longer than these replies)."""
    import torch

    model, tokenizer = hf_model
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([ids + reply])).logits[0, -1].clone()
            for token in set(reply):
                value = logits[token]
                logits[token] = value / repeat_penalty if value > 0 else value * repeat_penalty
            token = int(torch.argmax(logits))
            if token == tokenizer.eos_token_id:
                break
            reply.append(token)
    return tokenizer.decode(reply, skip_special_tokens=True).strip()


async def test_auto_falls_back_to_text_once_and_the_bot_chats(connect, sent, caplog):
    """Default settings: token ids first, a 500 from the server, text from then on, one warning."""
    caplog.set_level(logging.WARNING, logger="bot.generation.backends.openai")
    generator = connect()  # sampling, as a bot runs by default
    turns: list[str] = []
    for message in ["Hello", "How are you?", "What do you do for fun?", "Tell me more"]:
        reply = await generator.generate([*turns, message])
        assert isinstance(reply, str) and reply
        turns += [message, reply]
    warnings = [r.getMessage() for r in caplog.records if REFUSED in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"model server {generator.info.source} {REFUSED} (HTTP 500" in warnings[0]
    first, *rest = sent
    assert isinstance(first.prompt, list) and all(isinstance(i, int) for i in first.prompt)
    assert first.status == 500
    assert len(rest) == 4 and all(isinstance(s.prompt, str) and s.status == 200 for s in rest)
    assert generator.prompt_format == "text"


async def test_the_server_tokenizes_the_text_prompt_as_the_bot_does(connect, llama_server):
    """Why text prompts lose nothing here: llama.cpp's GPT-2 pre-tokenizer and BPE split the prompt's text
    into exactly the ids the bot built, EOS between turns included, and add no BOS."""
    generator = connect(GREEDY)
    for turns in CONVERSATIONS + SHORT_ANSWERS:
        assert llama_server.tokenize(generator.prompt(turns, as_text=True)) == generator.prompt(turns, False)


async def test_greedy_replies_match_the_torch_backend(connect, torch_replies):
    """Same model, same prompt ids, greedy: llama.cpp's f32 kernels pick the same tokens as torch FP32."""
    conversations = CONVERSATIONS + SHORT_ANSWERS
    expected = torch_replies(conversations)
    generator = connect(GREEDY)
    replies = [await generator.generate(turns) for turns in conversations]
    assert all(isinstance(r, str) for r in replies)
    assert replies == expected


async def test_model_info_probe_names_the_text_format(connect, llama_server):
    line = await connect().probe()
    assert line == f"model server {llama_server.base_url} is up and serves '{MODEL}' (prompts sent as text)"


async def test_special_token_text_cannot_forge_a_turn(connect, llama_server, sent):
    """The server reads `<|endoftext|>` in a text prompt as EOS; the defused text it is sent has one EOS
    after each real turn only, and the server counts exactly the tokens of that text."""
    generator = connect(GREEDY)
    await generator.generate(["Hello"])  # settles the format: text
    eos = llama_server.tokenize("<|endoftext|>")
    assert len(eos) == 1  # the special token, as a user's text would be read undefused
    for turns in SPECIAL:
        naive = llama_server.tokenize("<|endoftext|>".join(turns) + "<|endoftext|>")
        assert naive.count(eos[0]) > len(turns)  # what defusing prevents
        prompt = generator.prompt(turns)
        assert isinstance(prompt, str)
        tokens = llama_server.tokenize(prompt)
        assert tokens.count(eos[0]) == len(turns) and tokens[-1] == eos[0]
        reply = await generator.generate(turns)
        assert isinstance(reply, str)
        assert sent[-1].prompt == prompt and sent[-1].prompt_tokens == len(tokens)


async def test_repeat_penalty_is_honoured_and_repetition_penalty_ignored(connect, llama_server, hf_model):
    """The bot sends both names; llama-cpp-python reads `repeat_penalty` (its default: 1.1) and drops unknown
    fields, so the bot's setting is what applies, with llama.cpp's meaning (reply tokens only)."""
    import openai

    length = 24
    text_prompts = connect(GREEDY)
    await text_prompts.generate(["Hello"])  # settles the format: text
    prompts = [text_prompts.prompt(turns) for turns in LOOPING]
    expected = {p: [llama_cpp_greedy(hf_model, text, p, length) for text in prompts] for p in (1.0, 1.1, 1.5)}
    # Not vacuous: the server's default and a stronger penalty each change some reply of the tiny model.
    assert expected[1.0] != expected[1.1] and expected[1.0] != expected[1.5]
    for penalty in (1.0, 1.5):
        generator = connect({**GREEDY, "max_new_tokens": length, "repetition_penalty": penalty})
        assert [await generator.generate(turns) for turns in LOOPING] == expected[penalty]

    client = openai.AsyncOpenAI(base_url=llama_server.base_url, api_key="unused")

    async def complete(prompt: str, **extra) -> str:
        body = dict(model=MODEL, prompt=prompt, max_tokens=length, temperature=0.0, stop=["<|endoftext|>"])
        completion = await client.completions.create(**body, extra_body=extra)
        return completion.choices[0].text.strip()

    try:
        assert [await complete(p, repeat_penalty=1.0) for p in prompts] == expected[1.0]
        assert [await complete(p, repetition_penalty=1.0) for p in prompts] == expected[1.1]  # ignored
    finally:
        await client.close()


def test_the_gguf_is_the_tiny_model_in_f32(gguf_model):
    """The GGUF says what it is: GPT-2, f32, the tiny model's vocabulary, the GPT-2 pre-tokenizer."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_model)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2" and len(fields["tokenizer.ggml.tokens"]) == 512
    assert fields["gpt2.context_length"] == 1024
    assert {t.tensor_type.name for t in reader.tensors} == {"F32"}
