"""`python -m bot.bench.backends` on the tiny shape: each case in its own process, a table and JSON."""

import json

from bot.bench.backends import main


def test_measures_each_case_in_its_own_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIALOBOT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "backends.json"
    argv = ["--shape", "tiny", "--prompt-tokens", "12", "--new-tokens", "6", "--repeats", "2"]
    argv += ["--batch", "3", "--rounds", "1", "--threads", "1", "--out", str(out)]
    argv += ["--cases", "torch:none,torch:int8,nosuch:int8"]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    ok, bad = results["cases"][:2], results["cases"][2]
    assert [c["case"] for c in ok] == ["torch:none", "torch:int8"]
    assert [c["projections"] for c in ok] == ["0/9", "9/9"]
    for case in ok:
        assert case["single"]["runs"] == 2 and case["single"]["median_s"] > 0
        assert case["batch_wall_s"] > 0 and case["load_s"] > 0 and case["peak_rss_mb"] > 0
    assert "nosuch" in bad["error"]  # a failed case is reported, not fatal to the others
    table = capsys.readouterr().out
    assert "torch:int8" in table and "1.00x" in table and "nosuch:int8" in table
