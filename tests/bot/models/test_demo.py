"""The offline demo model: corpus split, a seeded repeatable build, and (slow) the real model chatting."""

import os
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from bot.models.corpus import load_chatterbot_english, split_dialogs
from bot.models.demo import DEMO_RECIPE, DemoRecipe, ensure_demo_model
from bot.models.trainer import TrainConfig
from tests.conftest import TINY_RECIPE_KWARGS


def test_heldout_slice_is_disjoint_stable_and_about_a_tenth():
    dialogs = load_chatterbot_english()
    train, heldout = split_dialogs(dialogs, "train"), split_dialogs(dialogs, "heldout")
    assert len(train) + len(heldout) == len(dialogs) > 500
    assert 0.05 < len(heldout) / len(dialogs) < 0.15
    assert not {tuple(d) for d in train} & {tuple(d) for d in heldout}
    assert split_dialogs(load_chatterbot_english(), "heldout") == heldout


def test_the_recipe_names_the_cache_directory():
    assert DemoRecipe().digest() == DEMO_RECIPE.digest()
    assert DemoRecipe(n_layer=2).digest() != DEMO_RECIPE.digest()


def test_builds_are_seeded_and_repeatable(tmp_path):
    recipe = DemoRecipe(**{**TINY_RECIPE_KWARGS, "dialog_limit": 120}, train=TrainConfig(epochs=2, threads=1))
    first = ensure_demo_model(recipe, root=tmp_path / "a", progress=False)
    second = ensure_demo_model(recipe, root=tmp_path / "b", progress=False)
    assert first.name == second.name == f"demo-{recipe.digest()}"
    a = AutoModelForCausalLM.from_pretrained(first).state_dict()
    b = AutoModelForCausalLM.from_pretrained(second).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    # A second call finds the cached build and does not train again.
    mtime = (first / "model.safetensors").stat().st_mtime
    assert ensure_demo_model(recipe, root=tmp_path / "a", progress=False) == first
    assert (first / "model.safetensors").stat().st_mtime == mtime


@pytest.mark.slow
def test_the_demo_model_builds_and_chats_in_english(tmp_path):
    """The real demo recipe, built from scratch in an empty cache, answering piped lines."""
    env = {**os.environ, "DIALOBOT_CACHE_DIR": str(tmp_path / "cache"), "DIALOBOT_DATA_DIR": str(tmp_path)}
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("DIALOBOT_CONFIG", None)
    lines = ["Hello", "How are you?", "What is your name?", "Do you like music?", "Tell me a joke", "Goodbye"]
    greedy = tmp_path / "greedy.toml"  # deterministic replies, so the English check cannot flake
    greedy.write_text("[generation]\ndo_sample = false\n")

    def chat(*extra):
        result = subprocess.run(
            [sys.executable, "-m", "bot", "chat", "--model", "demo", *extra],
            input="".join(f"{line}\n" for line in lines),
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return [line.removeprefix("Bot: ") for line in result.stdout.splitlines() if line.startswith("Bot: ")]

    replies = chat("--config", str(greedy))  # the first call builds the model
    assert len(replies) == len(lines)
    corpus_words = {
        w.lower() for d in load_chatterbot_english() for t in d for w in re.findall(r"[A-Za-z']+", t)
    }
    words = [re.findall(r"[A-Za-z']+", reply) for reply in replies]
    assert all(words), f"a reply without words: {replies}"
    known = sum(w.lower() in corpus_words for ws in words for w in ws)
    assert known / sum(map(len, words)) >= 0.8, f"not the corpus's English: {replies}"
    sampled = chat()  # the shipped sampling settings
    assert len(sampled) == len(lines) and all(reply.strip() for reply in sampled)

    info = subprocess.run(
        [sys.executable, "-m", "bot", "model-info", "--model", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert info.returncode == 0, info.stderr
    assert "projections:  17/17 INT8" in info.stdout
