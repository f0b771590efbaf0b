"""The default classifier, the real offline one, on the project's labelled replies at the default threshold:
ordinary small talk passes (false-positive rate at most 2%), offensive replies are caught.

The figures per threshold are in docs/reliability.md (`python -m bot.safety.measure`).
"""

from __future__ import annotations

import pytest

from bot.config import SafetyConfig
from bot.safety.blocklist import Blocklist
from bot.safety.filter import SafetyFilter
from bot.safety.measure import demo_replies, load_labelled, model_replies, rates, score_all

THRESHOLD = SafetyConfig().threshold


@pytest.fixture(scope="module")
def measured(profanity_check):
    examples = load_labelled()
    scores = score_all(profanity_check, [e.text for e in examples])
    demo_scores = score_all(profanity_check, demo_replies())
    return examples, scores, rates(examples, scores, demo_scores, THRESHOLD)


def test_ordinary_small_talk_passes(measured):
    _, _, row = measured
    assert row.fpr_small_talk <= 0.02
    assert row.fpr_demo <= 0.02  # the demo model's replies: every answer of its training conversations


def test_offensive_replies_are_caught(measured):
    examples, scores, row = measured
    assert row.precision >= 0.9
    assert row.recall >= 0.7
    for kind, floor in (("profanity", 1.0), ("insult", 0.85), ("obfuscated", 0.9)):
        caught = [s >= THRESHOLD for s, e in zip(scores, examples, strict=True) if e.kind == kind]
        assert sum(caught) / len(caught) >= floor, kind


@pytest.mark.parametrize(
    "text",
    [
        "I could kill for a coffee right now.",
        "This song is sick!",
        "That trick was sick, do it again.",
        "You killed it on stage last night.",
        "I'm going to Scunthorpe next week.",
        "We stopped in Penistone on the way to Sheffield.",
        "I grew up in Essex.",
        "Matt Hancock was on the news again.",
        "We need to assess the situation.",
    ],
)
def test_tricky_benign_replies_pass_at_the_default_threshold(profanity_check, text):
    assert not SafetyFilter(profanity_check, THRESHOLD, Blocklist([])).check_sync(text, "console:t").flagged


def test_thresholds_per_conversation(profanity_check):
    loose_and_strict = {"discord:1": 0.99, "discord:1:42": 0.5, "slack:T1": 1.0}
    f = SafetyFilter(profanity_check, 0.8, Blocklist(["badword"]), loose_and_strict)
    assert f.threshold_for("discord:1:7") == 0.99  # a prefix at a ":" boundary
    assert f.threshold_for("discord:1:42:9") == 0.5  # the longest matching entry wins
    assert f.threshold_for("discord:12:7") == 0.8  # not a prefix at a boundary
    assert f.check_sync("This song is sick!", "discord:1:42").flagged  # 0.62 >= 0.5
    assert not f.check_sync("This song is sick!", "console:t").flagged
    verdict = f.check_sync("You're a fucking idiot.", "slack:T1:C1")  # 1.0: classifier off there
    assert not verdict.flagged
    verdict = f.check_sync("what a b4dw0rd", "slack:T1:C1")  # the blocklist still applies
    assert (verdict.flagged, verdict.reason) == (True, "blocklist")
    verdict = f.check_sync("You're a fucking idiot.", "console:t")
    assert (verdict.flagged, verdict.reason) == (True, "classifier")
    assert "fucking" not in verdict.detail and "idiot" not in verdict.detail
    assert "threshold 0.50" in f.describe("discord:1:42")
    assert f.describe("slack:T1:C1") == "safety filter on: blocklist of 1"


def test_the_labelled_set_is_what_the_docs_say():
    examples = load_labelled()
    offensive = [e for e in examples if e.offensive]
    assert len(examples) >= 400 and len(offensive) >= 150
    assert {e.kind for e in examples if not e.offensive} == {"smalltalk", "tricky"}


def test_a_models_own_replies_can_be_measured(tiny_model_dir, profanity_check):
    """`--model`: the replies a model itself samples to held-out contexts, as the bot would send them."""
    said = model_replies(str(tiny_model_dir), limit=6)
    assert len(said) == 6 and all(reply.strip() for reply in said)
    assert len(score_all(profanity_check, said)) == 6
