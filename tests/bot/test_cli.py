"""The command line: one-line errors with exit status 2, and `model-info`."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.process


def dialobot(*args, env_extra=None, stdin=""):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    env.pop("DIALOBOT_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_bad_config_is_one_line_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[generation]\ntop_p = 7\n")
    result = dialobot("chat", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dialobot: {config}: generation.top_p: Input should be less than or equal to 1 (got 7)"
    ]


def test_a_model_that_cannot_be_downloaded_is_one_line_naming_the_demo_model(tmp_path):
    result = dialobot("chat", "--model", "someone/not-a-cached-model", env_extra={"HF_HOME": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "someone/not-a-cached-model" in lines[0] and "--model demo" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_directory_without_a_model_is_one_line(tmp_path):
    result = dialobot("model-info", "--model", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"dialobot: model.name: {tmp_path} is a path but holds no model (config.json missing)"
    )


def test_model_info_reports_every_projection_int8(tiny_model_dir):
    result = dialobot("model-info", "--model", str(tiny_model_dir))
    assert result.returncode == 0, result.stderr
    assert "projections:  9/9 INT8" in result.stdout
    assert "context:      1024 tokens" in result.stdout
    fp32 = dialobot("model-info", "--model", str(tiny_model_dir), "--quantization", "none")
    assert "projections:  0/9 INT8" in fp32.stdout


def test_run_with_every_adapter_disabled_says_so(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[console]\nenabled = false\n")
    result = dialobot("run", "--config", str(config), "--model", "demo")
    assert result.returncode == 2
    assert "no adapter is enabled" in result.stderr
