"""`dialobot bench` end to end on a tiny model, and the pieces whose mistakes would mislead: targets, lag.

Speed itself is never asserted here: figures come from the benchmark run, recorded in docs/benchmarks.md.
"""

import asyncio
import json
import time

import pytest

from bot.bench.measure import LoopLag
from bot.bench.models import SHAPES, random_words, word_tokenizer
from bot.bench.report import check_targets
from bot.cli import main


def test_random_words_are_exactly_that_many_tokens():
    tokenizer = word_tokenizer(SHAPES["tiny"].vocab_size)
    text = random_words(37, SHAPES["tiny"].vocab_size, seed=3)
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == 37
    assert tokenizer.eos_token_id not in ids
    assert random_words(37, 512, seed=3) == text != random_words(37, 512, seed=4)


async def test_loop_lag_sees_a_blocked_loop():
    lag = LoopLag()
    lag.start()
    await asyncio.sleep(0.05)
    time.sleep(0.12)  # noqa: ASYNC251  (on purpose: what generating on the event loop would do)
    await asyncio.sleep(0.03)
    stats = await lag.stop()
    assert stats["lag_max_ms"] >= 100


def test_targets_are_ratios_of_the_right_figures():
    results = {
        "single": {"fp32": {"median_s": 4.0}, "int8": {"median_s": 1.0}, "ct2_int8": {"median_s": 0.8}},
        "concurrency": {
            "batched": [{"channels": 8, "replies_per_s": 2.0, "lag_p99_ms": 5.0}],
            "serial": [{"channels": 8, "replies_per_s": 0.5, "lag_p99_ms": 30.0}],
            "ct2_int8": [{"channels": 8, "replies_per_s": 2.5}],
        },
    }
    checked = {t["target"]: t for t in check_targets(results)}
    assert checked["INT8 speed-up per reply over FP32"]["value"] == pytest.approx(4.0)
    assert checked["INT8 speed-up per reply over FP32"]["met"]
    assert checked["8 channels: replies/s batched over serial INT8"]["value"] == pytest.approx(4.0)
    lag = checked["event-loop lag p99 while generating (ms)"]
    assert lag["value"] == 30.0 and not lag["met"]
    assert not checked["single reply: CTranslate2 int8 time / ours"]["met"]
    assert checked["8 channels: our replies/s / CTranslate2's batch of 8"]["value"] == pytest.approx(0.8)
    assert not any("memory" in name or "perplexity" in name for name in checked)  # not measured: not reported


@pytest.mark.process
def test_bench_runs_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "bench",
        "--shape",
        "tiny",
        "--model",
        str(tiny_model_dir),
        "--repeats",
        "1",
        "--rounds",
        "1",
        "--concurrency",
        "1,2",
        "--new-tokens",
        "3",
        "--prompt-tokens",
        "12",
        "--probe-runs",
        "1",
        "--no-progress",
        "--out",
        str(out),
        "--work-dir",
        str(tmp_path / "work"),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "bench-tiny.json").read_text())
    assert (out / "bench-tiny.png").read_bytes().startswith(b"\x89PNG")
    assert set(results["single"]) >= {"fp32", "int8"}
    for mode in ("batched", "serial"):
        assert [row["channels"] for row in results["concurrency"][mode]] == [1, 2]
        assert all(row["replies_per_s"] > 0 for row in results["concurrency"][mode])
    memory = results["memory"]
    assert memory["int8_prequantized"]["projections_int8"] == memory["int8_prequantized"]["projections_total"]
    assert memory["fp32"]["projections_int8"] == 0
    assert results["model_part"]["model"] == str(tiny_model_dir)
    assert "Time per reply" in printed and "Targets" in printed


def test_quality_compares_fp32_and_int8_on_held_out_text(tiny_model_dir, tmp_path, capsys):
    assert main(["bench", "--quality", "--model", str(tiny_model_dir), "--out", str(tmp_path)]) == 0
    name = next(tmp_path.glob("quality-*.json"))
    quality = json.loads(name.read_text())["quality"]
    assert quality["positions"] > 1000
    assert 1 < quality["perplexity_fp32"] < 512  # better than chance on a 512-token vocabulary
    assert 0.5 < quality["same_next_token"] <= 1
    assert "perplexity FP32" in capsys.readouterr().out


def test_bad_bench_flags_are_one_line(capsys):
    assert main(["bench", "--repeats", "0"]) == 2
    assert capsys.readouterr().err.strip() == "dialobot: --repeats: must be at least 1"
