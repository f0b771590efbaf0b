"""Pre-quantized model directories: `dialobot quantize` output round-trips, and loads with no FP32 weights."""

import json
import subprocess
import sys

import pytest

from bot.cli import main
from bot.config import GenerationConfig, ModelConfig
from bot.errors import ConfigError, ModelLoadError
from bot.generation.backends.torch import TorchGenerator
from bot.models.loader import load_model
from bot.models.prequantized import MARKER, is_prequantized, save_prequantized

GREEDY = GenerationConfig(do_sample=False, max_new_tokens=16)
PROMPTS = [["Hello"], ["What is your favorite food?"], ["Hi", "Hello there", "Do you like music?"]]


@pytest.fixture(scope="module")
def quantized_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prequantized") / "tiny-int8"
    assert main(["quantize", "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    return out


def test_a_prequantized_directory_gives_the_same_greedy_replies(tiny_model_dir, quantized_dir):
    assert is_prequantized(quantized_dir) and not is_prequantized(tiny_model_dir)
    fresh = load_model(ModelConfig(name=str(tiny_model_dir), quantization="int8", threads=1))
    saved = load_model(ModelConfig(name=str(quantized_dir), quantization="int8", threads=1))
    assert saved.info.projections == fresh.info.projections
    assert saved.info.projections.int8 == saved.info.projections.total > 0
    assert saved.info.parameters == fresh.info.parameters
    expected = [TorchGenerator(fresh, GREEDY).generate_sync(p) for p in PROMPTS]
    assert [TorchGenerator(saved, GREEDY).generate_sync(p) for p in PROMPTS] == expected


def test_loading_never_builds_fp32_projections(quantized_dir, monkeypatch):
    """The skeleton lives on the meta device; quantizing again (or any FP32 Linear) would be a bug."""
    import bot.models.loader

    def refuse(model):
        raise AssertionError("a pre-quantized model must not be quantized again")

    monkeypatch.setattr(bot.models.loader, "quantize_int8", refuse)
    loaded = load_model(ModelConfig(name=str(quantized_dir), quantization="int8", threads=1))
    assert all(not p.is_meta for p in loaded.model.parameters())


def test_asking_for_fp32_from_an_int8_directory_names_the_key(quantized_dir):
    with pytest.raises(ConfigError, match=r"model\.quantization: none, but .* pre-quantized INT8"):
        load_model(ModelConfig(name=str(quantized_dir), quantization="none"))


def test_an_unknown_format_is_refused(quantized_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(quantized_dir, copy)
    (copy / MARKER).write_text(json.dumps({"format": 99, "quantization": "int8"}))
    with pytest.raises(ModelLoadError, match="format"):
        load_model(ModelConfig(name=str(copy)))


def test_quantize_will_not_overwrite(tiny_model_dir, quantized_dir, capsys):
    assert main(["quantize", "--model", str(tiny_model_dir), "--out", str(quantized_dir)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1


def test_save_refuses_a_file(tiny_model_dir, tmp_path):
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), quantization="int8", threads=1))
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ModelLoadError, match="--out"):
        save_prequantized(loaded.model, loaded.tokenizer, 0, target)


@pytest.mark.process
def test_chat_from_the_prequantized_directory(quantized_dir, tmp_path):
    env = {"DIALOBOT_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "chat", "--backend", "torch", "--model", str(quantized_dir)],
        input="Hello\n/status\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "INT8" in result.stdout
