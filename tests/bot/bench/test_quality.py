"""The reply-quality report: each metric on replies whose answer is known, and `dialobot eval` end to end."""

import json
import math

import pytest

from bot.bench.quality import (
    ReplyContext,
    TrainingText,
    check_targets,
    reply_contexts,
    reply_metrics,
    words,
)
from bot.cli import main
from bot.models.corpus import Conversation

TRAINING = TrainingText(
    lines=frozenset({"i am fine", "yeah"}),
    vocabulary=frozenset({"i", "am", "fine", "yeah", "good", "thanks", "you", "how", "are", "what", "about"}),
)


def ctx(*history, reference="i am fine thanks"):
    return ReplyContext(tuple(history), reference)


def test_replies_equal_to_the_references_score_full_bleu():
    contexts = [
        ctx("hi", reference="i am good thanks how are you"),
        ctx("yo", reference="what about you then"),
    ]
    metrics = reply_metrics([c.reference for c in contexts], contexts, TRAINING)
    assert math.isclose(metrics["bleu2"], 1.0) and math.isclose(metrics["bleu4"], 1.0)
    assert metrics["nist2"] > 0 and metrics["nist4"] >= metrics["nist2"]


def test_shares_count_copies_unknown_words_repeats_and_fallbacks():
    contexts = [
        ctx("how are you"),
        ctx("how are you", "i am fine", "so?"),  # the replying side said "i am fine" before
        ctx("yo", "good", "hm"),
        ctx("what"),
    ]
    replies = ["I am  fine", "i am fine", "good thanks zxqv", "Hmm, no idea."]
    metrics = reply_metrics(replies, contexts, TRAINING, fallback_reply="Hmm, no idea.", first_try_empty=1)
    assert metrics["verbatim_copy"] == 0.5  # case and spacing do not hide a copy
    assert metrics["repeat_previous"] == 0.5  # of the two contexts with a previous turn, one is repeated
    assert metrics["real_words"] == 0.5  # "zxqv", and the fallback's "hmm", "no", "idea" are unknown
    assert metrics["empty"] == 0.25 and metrics["fallback"] == 0.25
    assert metrics["avg_words"] == (3 + 3 + 3 + 3) / 4


def test_distinct_and_entropy_count_ngrams_over_all_replies():
    contexts = [ctx("a"), ctx("b")]
    metrics = reply_metrics(["yeah yeah yeah", "yeah good"], contexts, TRAINING)
    assert metrics["dist1"] == 2 / 5
    assert metrics["dist2"] == 2 / 3  # (yeah yeah) twice, (yeah good) once
    assert metrics["entropy4"] == 0.0  # no reply has 4 words
    four = reply_metrics(["a b c d e", "a b c d"], contexts, TRAINING)
    # 4-grams: (a b c d) twice, (b c d e) once
    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert math.isclose(four["entropy4"], expected)


def test_targets_are_checked_both_ways():
    good = {"real_words": 0.97, "empty": 0.0, "verbatim_copy": 0.05, "dist2": 0.4, "repeat_previous": 0.0}
    assert all(check_targets(good).values())
    bad = {**good, "dist2": 0.1, "empty": 0.01}
    assert check_targets(bad) == {**check_targets(good), "dist2": False, "empty": False}


def test_contexts_are_seeded_and_keep_at_most_max_turns():
    conversations = [
        Conversation(f"k{i}", tuple(f"turn {j}" for j in range(30)), ("a", "b") * 15) for i in range(3)
    ]
    first = reply_contexts(conversations, per_conversation=2, seed=1, max_turns=4)
    assert first == reply_contexts(conversations, per_conversation=2, seed=1, max_turns=4)
    assert len(first) == 6
    for context in first:
        assert 1 <= len(context.history) <= 4
        last = int(context.history[-1].split()[1])
        assert context.reference == f"turn {last + 1}"
    assert words("Don't stop, it's 5 o'clock!") == ["don't", "stop", "it's", "5", "o'clock"]


def test_eval_writes_json_and_a_table_for_fp32_and_int8(tiny_model_dir, tmp_path, capsys):
    argv = ["eval", "--model", str(tiny_model_dir), "--conversations", "6", "--per-conversation", "2"]
    assert main([*argv, "--out", str(tmp_path), "--threads", "1"]) == 0
    report = json.loads(next(tmp_path.glob("eval-*.json")).read_text())
    assert report["data"]["contexts"] == 12
    assert set(report["runs"]) == {"fp32", "int8"}
    for run in report["runs"].values():
        metrics = run["metrics"]
        for key in ("bleu2", "bleu4", "nist2", "nist4", "entropy4", "dist1", "dist2", "bits_per_byte"):
            assert key in metrics
        assert 0 <= metrics["real_words"] <= 1 and 0 < metrics["bits_per_byte"] < 8
        assert len(run["examples"]) == 8
    assert report["human"]["real_words"] > 0.9
    table = capsys.readouterr().out
    assert "BLEU-2" in table and "FP32" in table and "INT8" in table and "people" in table


@pytest.mark.parametrize("flag", ["--per-conversation"])
def test_eval_rejects_a_bad_count(tmp_path, capsys, flag):
    assert main(["eval", "--model", str(tmp_path), flag, "0", "--out", str(tmp_path)]) == 2
    assert "must be at least 1" in capsys.readouterr().err
