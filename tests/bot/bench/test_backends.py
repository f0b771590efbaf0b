"""`python -m bot.bench.backends` on the tiny shape: each case in its own process, a table and JSON."""

import json

import pytest

from bot.bench.backends import main


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
    table = capsys.readouterr().out
    assert "torch:int8" in table and "1.00x" in table and "nosuch:int8" in table and "GB/s" in table
