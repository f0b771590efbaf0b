"""`python -m bot.bench.backends` on the tiny shape: each case in its own process, a table and JSON."""

import json
import os
import subprocess
import sys

import pytest

from bot.bench.backends import check_targets, main


@pytest.mark.slow
def test_measures_each_case_in_its_own_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIALOBOT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "backends.json"
    argv = ["--shape", "tiny", "--prompt-tokens", "12", "--new-tokens", "6", "--repeats", "2"]
    argv += ["--batch", "3", "--rounds", "1", "--threads", "1", "--out", str(out)]
    argv += ["--cases", "torch:none,torch:int8,openvino:int8,nosuch:int8"]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    ok, bad = results["cases"][:3], results["cases"][3]
    assert [c["case"] for c in ok] == ["torch:none", "torch:int8", "openvino:int8"]
    assert [c["projections"] for c in ok] == ["0/9", "9/9", "9/9"]
    for case in ok:
        assert case["single"]["runs"] == 2 and case["single"]["median_s"] > 0
        assert case["batch_wall_s"] > 0 and case["load_s"] > 0 and case["peak_rss_mb"] > 0
        assert 0 < case["prefill_s"] < case["single"]["median_s"] and case["decode_ms_per_token"] > 0
        assert case["late"]["solo_s"] > 0 and case["late"]["mid_batch_s"] > 0
    assert "nosuch" in bad["error"]  # a failed case is reported, not fatal to the others
    floor = results["floor"]
    assert floor["bandwidth_gbs"] > 0 and floor["int8_ms"] > 0
    assert floor["fp32_ms"] == pytest.approx(4 * floor["int8_ms"])
    assert floor["weight_matrix_params"] == 12 * 2 * 64**2 + 512 * 64  # the tiny shape's matrices
    assert results["targets"]["default"] == "ctranslate2:int8"
    table = capsys.readouterr().out
    assert "torch:int8" in table and "1.00x" in table and "nosuch:int8" in table and "GB/s" in table


@pytest.mark.slow
def test_dialobot_bench_backends_runs_the_comparison_with_its_targets(tmp_path, monkeypatch):
    monkeypatch.setenv("DIALOBOT_CACHE_DIR", str(tmp_path / "cache"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = ["bench", "--backends", "torch:none,ctranslate2:int8", "--shape", "tiny", "--repeats", "2"]
    argv += ["--rounds", "1", "--max-batch-size", "3", "--threads", "1", "--new-tokens", "6"]
    argv += ["--prompt-tokens", "12", "--out", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-m", "bot", *argv], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "backends-tiny.json").read_text())
    assert [c["case"] for c in results["cases"]] == ["torch:none", "ctranslate2:int8"]
    assert results["batch"] == 3 and results["new_tokens"] == 6
    checks = results["targets"]["checks"]
    assert set(checks) >= {"per reply vs torch FP32", "decode vs bandwidth floor", "late message vs solo"}
    assert "targets for the default backend (ctranslate2:int8)" in done.stdout


def _case(name, reply_s, batch_s, decode_ms, late, peak_mb):
    return {
        "case": name,
        "single": {"median_s": reply_s},
        "batch_wall_s": batch_s,
        "decode_ms_per_token": decode_ms,
        "late": {"ratio": late},
        "peak_rss_mb": peak_mb,
    }


def test_targets_are_checked_for_the_default_backend_against_the_others():
    results = {
        "batch": 8,
        "floor": {"int8_ms": 20.0},
        "cases": [
            _case("torch:none", 4.0, 12.0, 100.0, 1.0, 2000),
            _case("ctranslate2:int8", 1.0, 3.0, 25.0, 2.5, 700),
            _case("openvino:int8", 0.9, 2.0, 27.0, 1.2, 1000),
            {"case": "torch:int8", "error": "failed"},
        ],
    }
    ct2 = check_targets(results, "ctranslate2:int8")
    assert ct2["per reply vs torch FP32"] == {"value": 4.0, "target": ">= 4x", "met": True}
    assert ct2["decode vs bandwidth floor"]["value"] == 1.25 and ct2["decode vs bandwidth floor"]["met"]
    assert ct2["8 channels at once vs serial"]["value"] == pytest.approx(8 / 3, abs=1e-3)
    assert not ct2["8 channels at once vs serial"]["met"] and not ct2["late message vs solo"]["met"]
    assert "per reply vs CTranslate2" not in ct2  # no comparison with itself

    ov = check_targets(results, "openvino:int8")
    assert ov["per reply vs torch FP32"] == {"value": 4.444, "target": ">= 4x", "met": True}
    assert ov["per reply vs CTranslate2"]["met"] and ov["batch vs CTranslate2"]["met"]
    assert not ov["peak memory vs CTranslate2"]["met"] and ov["late message vs solo"]["met"]
    assert check_targets(results, "torch:int8") == {}  # a failed default case: nothing to check
