"""The ctranslate2 backend: one cached conversion per source model and quantization, sampling, the CLI.

The replies themselves (greedy, EOS, special-token text, batches) are checked against the torch backend in
test_contract.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import ctranslate2
import pytest

from bot.cli import main
from bot.config import parse_config
from bot.errors import ConfigError, ModelLoadError
from bot.generation.backends import ctranslate2 as ct2
from bot.generation.backends.ctranslate2 import load_ctranslate2
from bot.models.converted import build_once
from bot.models.quantize import ProjectionCounts

CONVERSATIONS = [["Hello"], ["Hello", "Hi", "How are you?"], ["What is your name?"]]


def ct2_config(model_dir, quantization: str = "int8", **generation):
    return parse_config(
        {
            "model": {
                "name": str(model_dir),
                "backend": "ctranslate2",
                "quantization": quantization,
                "threads": 1,
            },
            "generation": {"max_new_tokens": 8, **generation},
        }
    )


def load(config):
    generator = load_ctranslate2(config)
    asyncio.run(generator.close())  # the loaded model stays usable through generate_batch_sync
    return generator


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIALOBOT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ctranslate2"


@pytest.fixture
def conversions(monkeypatch):
    """Every conversion's (source, quantization), each still converted for real (slowly, to overlap)."""
    calls = []
    convert = ct2.convert_model

    def recording(local_dir, out, quantization):
        calls.append((local_dir, quantization))
        time.sleep(0.3)
        convert(local_dir, out, quantization)

    monkeypatch.setattr(ct2, "convert_model", recording)
    return calls


def test_first_use_converts_and_later_loads_reuse_the_cache(tiny_model_dir, cache, conversions, caplog):
    caplog.set_level("INFO", logger="bot.models.converted")  # which logs each conversion
    first = load(ct2_config(tiny_model_dir))
    second = load(ct2_config(tiny_model_dir))
    assert conversions == [(tiny_model_dir.resolve(), "int8")]
    assert sum("to CTranslate2 int8 (first use; cached in" in r.message for r in caplog.records) == 1
    (converted,) = [d for d in cache.iterdir() if d.is_dir()]  # no build directory left behind
    assert {"model.bin", "tokenizer.json", "dialobot.json"} <= {f.name for f in converted.iterdir()}
    for generator in (first, second):
        info = generator.info
        assert (info.backend, info.quantization, info.context) == ("ctranslate2", "int8", 1024)
        assert info.source == str(tiny_model_dir)
        assert info.projections == ProjectionCounts(int8=9, total=9)
    assert first.info.parameters == json.loads((converted / "dialobot.json").read_text())["parameters"] > 0


def test_fp32_is_its_own_conversion_with_no_int8_projections(tiny_model_dir, cache, conversions):
    info = load(ct2_config(tiny_model_dir, "none")).info
    assert info.quantization == "none"
    assert info.projections == ProjectionCounts(int8=0, total=9)
    load(ct2_config(tiny_model_dir, "int8"))
    assert [q for _, q in conversions] == ["none", "int8"]


def test_a_changed_source_model_is_converted_again(tiny_model_dir, tmp_path, cache, conversions):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    load(ct2_config(model_dir))
    load(ct2_config(model_dir))
    weights = model_dir / "model.safetensors"
    later = weights.stat().st_mtime + 60
    os.utime(weights, (later, later))  # as when the model is retrained and saved again
    load(ct2_config(model_dir, "none"))  # another quantization of the same model: kept beside it
    load(ct2_config(model_dir))
    assert len(conversions) == 3
    # The conversion of the old weights was removed (nothing loads it any more); the float32 one stays.
    kept = [
        json.loads((d / "dialobot.json").read_text()) for d in cache.iterdir() if not d.name.startswith(".")
    ]
    assert sorted(m["quantization"] for m in kept) == ["int8", "none"]


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    target = tmp_path / "entry"
    target.mkdir()
    (target / "model.bin").write_text("half a model")  # no marker: an interrupted or damaged entry

    def build(out):
        out.mkdir()
        (out / "dialobot.json").write_text("{}")

    assert build_once(target, build) == target
    assert sorted(p.name for p in target.iterdir()) == ["dialobot.json"]


def test_concurrent_first_uses_convert_once(tiny_model_dir, cache, conversions):
    start = threading.Barrier(2)
    infos = []

    def first_use():
        start.wait()
        infos.append(load(ct2_config(tiny_model_dir)).info)

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(infos) == 2 and infos[0] == infos[1]
    assert len(conversions) == 1


@pytest.mark.parametrize(
    "config_json", [None, "{}", '{"model_type": "gpt2"}', '{"model_type": "gpt2", "n_layer": "x"}']
)
def test_a_directory_that_holds_no_usable_model_is_one_line(tmp_path, cache, config_json):
    if config_json is not None:
        (tmp_path / "config.json").write_text(config_json)
    with pytest.raises(ModelLoadError) as error:
        load_ctranslate2(ct2_config(tmp_path))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message
    assert not cache.exists() or not [d for d in cache.iterdir() if d.is_dir()]


def test_a_model_neither_on_disk_nor_cached_offline_names_the_demo_model(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError) as error:
        load_ctranslate2(ct2_config("someone/not-a-cached-model"))
    message = str(error.value)
    assert "\n" not in message
    assert "someone/not-a-cached-model" in message and "--model demo" in message


def test_sampled_replies_are_text(tiny_model_dir, cache):
    ctranslate2.set_random_seed(0)
    for top_k in (50, 0):  # 0: no top-k limit, as in transformers
        generator = load(ct2_config(tiny_model_dir, do_sample=True, top_k=top_k, max_new_tokens=16))
        replies = generator.generate_batch_sync(CONVERSATIONS)
        assert all(isinstance(r, str) and r for r in replies), replies


def test_without_stopping_at_eos_every_reply_has_max_new_tokens(tiny_model_dir, cache):
    generator = load_ctranslate2(ct2_config(tiny_model_dir, do_sample=False), stop_at_eos=False)
    asyncio.run(generator.close())
    prompts = [generator.prompt_ids(turns) for turns in CONVERSATIONS]
    assert [len(ids) for ids in generator._generate_ids(prompts, lambda: False)] == [8, 8, 8]


@pytest.mark.process
def test_model_info_on_the_command_line(tiny_model_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DIALOBOT_CACHE_DIR": str(tmp_path)}
    env.pop("DIALOBOT_CONFIG", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "model-info",
            "--backend",
            "ctranslate2",
            "--model",
            str(tiny_model_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "backend:      ctranslate2" in result.stdout
    assert "projections:  9/9 INT8" in result.stdout


def test_piped_console_chat_answers(tiny_model_dir, tmp_path, cache, monkeypatch, capsys):
    config = tmp_path / "dialobot.toml"
    config.write_text("[model]\nthreads = 1\n\n[generation]\nmax_new_tokens = 16\n")
    monkeypatch.setenv("DIALOBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nHow are you?\n/status\n"))
    argv = ["chat", "--config", str(config), "--backend", "ctranslate2", "--model", str(tiny_model_dir)]
    assert main(argv) == 0
    replies = [line.removeprefix("Bot: ") for line in capsys.readouterr().out.splitlines()]
    assert len(replies) == 3
    assert all(reply.strip() for reply in replies[:2])
    assert "backend ctranslate2" in replies[2] and replies[2].endswith("turns stored in this conversation: 4")


def test_a_directory_pre_quantized_for_torch_names_the_torch_backend(tmp_path, cache):
    from bot.models.prequantized import MARKER

    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / MARKER).write_text("{}")
    with pytest.raises(ConfigError) as error:
        load_ctranslate2(ct2_config(tmp_path))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message and "--backend torch" in message
