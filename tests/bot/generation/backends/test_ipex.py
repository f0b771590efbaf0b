"""The ipex backend's own promises: every projection INT8, a one-line error where IPEX is not installed.

The shared behaviour (replies match the torch backend) is in test_contract.py. IPEX needs its own pinned
stack, so these run under `make test-ipex` and are skipped elsewhere with that reason.
"""

from __future__ import annotations

import pytest

from bot.cli import main
from bot.errors import BackendUnavailable, ConfigError
from bot.generation.backends import load_backend, require
from tests.bot.generation.backends.conftest import SKIP_WITHOUT_IPEX, backend_config, ipex_installed


@SKIP_WITHOUT_IPEX
def test_ipex_int8_quantizes_every_projection(tiny_model_dir):
    generator = load_backend(backend_config("ipex", tiny_model_dir, "int8"))
    info = generator.info
    assert info.backend == "ipex" and info.quantization == "int8"
    assert info.projections.int8 == info.projections.total == 9  # 4 per block x 2 blocks + lm_head
    assert generator.generate_sync(["Hello", "Hi", "How are you?"])


@SKIP_WITHOUT_IPEX
def test_ipex_fp32_keeps_every_projection_fp32(tiny_model_dir):
    info = load_backend(backend_config("ipex", tiny_model_dir, "none")).info
    assert info.backend == "ipex" and info.projections.int8 == 0 and info.projections.total == 9


@SKIP_WITHOUT_IPEX
def test_a_prequantized_model_is_refused(tiny_model_dir, tmp_path):
    from bot.models.loader import load_model
    from bot.models.prequantized import save_prequantized

    torch_int8 = load_model(backend_config("torch", tiny_model_dir, "int8").model)
    path = save_prequantized(
        torch_int8.model, torch_int8.tokenizer, torch_int8.info.parameters, tmp_path / "q"
    )
    with pytest.raises(ConfigError, match=r"model\.backend: ipex quantizes FP32 models"):
        load_backend(backend_config("ipex", path, "int8"))


@pytest.mark.skipif(ipex_installed(), reason="checks the error shown where IPEX is NOT installed")
def test_selecting_ipex_without_it_is_one_line_naming_the_extra(tiny_model_dir):
    with pytest.raises(BackendUnavailable) as caught:
        load_backend(backend_config("ipex", tiny_model_dir))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("model.backend: ipex is not installed")
    assert "pip install -e '.[ipex]'" in message and "make ipex" in message
    with pytest.raises(BackendUnavailable):
        require("ipex")


@pytest.mark.skipif(ipex_installed(), reason="checks the error shown where IPEX is NOT installed")
def test_the_cli_reports_a_missing_backend_in_one_line(tiny_model_dir, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DIALOBOT_DATA_DIR", str(tmp_path))
    assert main(["model-info", "--backend", "ipex", "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dialobot: model.backend: ipex is not installed") and err.count("\n") == 1
