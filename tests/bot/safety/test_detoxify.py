"""The optional Detoxify classifier through Detoxify's own loading code, offline: a checkpoint in Detoxify's
format (a tiny BERT with random weights, made here) and a local config directory, as an admin without hub
access would point `safety.detoxify_checkpoint` and `safety.detoxify_config_dir` at. Its scores mean
nothing; what is checked is the path from the config to a score per reply, and the one-line errors."""

from __future__ import annotations

import json

import pytest

from bot.config import parse_config
from bot.errors import ConfigError

pytest.importorskip("detoxify")

LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("detoxify")
    config_dir = root / "config"
    config_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "you", "idiot"]
    (config_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (config_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
    )
    config.save_pretrained(config_dir)
    torch.manual_seed(0)
    arch = {
        "model_type": str(config_dir),
        "model_name": "BertForSequenceClassification",
        "tokenizer_name": "BertTokenizer",
        "num_classes": len(LABELS),
    }
    checkpoint = root / "tiny.ckpt"
    torch.save(
        {
            "config": {"arch": {"args": arch}, "dataset": {"args": {"classes": LABELS}}},
            "state_dict": BertForSequenceClassification(config).state_dict(),
        },
        checkpoint,
    )
    return checkpoint, config_dir


def test_a_local_checkpoint_loads_and_scores_replies(tiny_checkpoint):
    from bot.safety import build_filter

    checkpoint, config_dir = tiny_checkpoint
    settings = parse_config(
        {
            "safety": {
                "classifier": "detoxify",
                "detoxify_checkpoint": str(checkpoint),
                "detoxify_config_dir": str(config_dir),
            }
        }
    ).safety
    reply_filter = build_filter(settings)
    classifier = reply_filter.classifier
    assert classifier.labels == (
        "toxicity",
        "severe_toxicity",
        "obscene",
        "threat",
        "insult",
        "identity_attack",
    )
    one = classifier.scores(["hello you"])
    two = classifier.scores(["hello you", "you idiot"])
    assert len(one) == 1 and len(two) == 2
    assert all(0.0 <= s <= 1.0 for s in one + two)
    assert "detoxify, threshold 0.80" in reply_filter.describe("console:t")


def test_a_missing_checkpoint_is_one_line_naming_the_key(tmp_path):
    from bot.safety.classifiers import DetoxifyClassifier

    with pytest.raises(ConfigError) as raised:
        DetoxifyClassifier("original", str(tmp_path / "missing.ckpt"), "")
    message = str(raised.value)
    assert "\n" not in message
    assert "safety.detoxify_checkpoint" in message and "missing.ckpt" in message
