"""The offline demo model: corpus split, a seeded repeatable build, and (slow) the real model chatting."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from bot.bench.quality import words
from bot.models.corpus import Conversation, load_chitchat, split_conversations
from bot.models.demo import (
    DEMO_RECIPE,
    DemoRecipe,
    choose_learned_turns,
    ensure_demo_model,
    train_tokenizer,
)
from bot.models.trainer import TrainConfig, encode_conversations
from tests.conftest import TINY_RECIPE_KWARGS


def test_the_recipe_names_the_cache_directory():
    assert DemoRecipe().digest() == DEMO_RECIPE.digest()
    assert DemoRecipe(n_layer=2).digest() != DEMO_RECIPE.digest()


def test_builds_are_seeded_and_repeatable(tmp_path):
    train = TrainConfig(steps=20, batch_size=4, block_size=64, threads=1)
    kwargs = {**TINY_RECIPE_KWARGS, "conversation_limit": 40, "tokenizer": DEMO_RECIPE.tokenizer}
    recipe = DemoRecipe(**kwargs, train=train)
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


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory):
    """An empty cache (the first command builds the real demo model into it) and no config file."""
    tmp_path = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "DIALOBOT_CACHE_DIR": str(tmp_path / "cache"), "DIALOBOT_DATA_DIR": str(tmp_path)}
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("DIALOBOT_CONFIG", None)
    return env


def test_the_word_tokenizer_keeps_whole_words_and_never_teaches_unknown_ones():
    turns = ["hello there", "how are you?", "hello, how are you?", "I am fine", "I am fine, you?", "I'm ok"]
    tokenizer = train_tokenizer(turns * 3, vocab_size=64, kind="word")
    assert tokenizer.convert_ids_to_tokens(tokenizer("hello, how are you?")["input_ids"]) == [
        "hello",
        ",",
        "Ġhow",
        "Ġare",
        "Ġyou",
        "?",
    ]
    assert tokenizer.decode(tokenizer("I am fine, you?")["input_ids"]) == "I am fine, you?"
    assert tokenizer.convert_ids_to_tokens(tokenizer("I'm fine")["input_ids"]) == ["I'm", "Ġfine"]
    unknown = tokenizer("I am zorbly")["input_ids"]
    assert unknown[-1] == tokenizer.unk_token_id != tokenizer.eos_token_id
    turns = ("hello there", "I am zorbly", "how are you?", "hello there how are you?")
    conversation = Conversation("c", turns, ("a", "b", "a", "b"))
    (marked,) = choose_learned_turns([conversation], tokenizer, max_words=4)
    assert marked.learn == (True, False, True, False)  # in context, but never a reply to learn
    ((ids, learn),) = encode_conversations(tokenizer, [marked])
    assert tokenizer.unk_token_id in ids and not any(
        flag for token, flag in zip(ids, learn, strict=True) if token == tokenizer.unk_token_id
    )
    # Learning turns with an unknown word too: every token of them but `<unk>` itself.
    (every,) = choose_learned_turns([conversation], tokenizer, max_words=4, unknown_words=True)
    assert every.learn == (True, True, True, False)
    ((ids, learn),) = encode_conversations(tokenizer, [every])
    learned = [token for token, flag in zip(ids, learn, strict=True) if flag]
    assert tokenizer.convert_tokens_to_ids("Ġam") in learned and tokenizer.unk_token_id not in learned


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a full demo build, then whole runs, on a possibly busy CI machine
def test_the_demo_model_builds_and_chats_in_english(tmp_path, demo_env):
    """The real demo recipe, built from scratch in an empty cache, answering piped lines."""
    env = demo_env
    lines = [
        "Hello",
        "How are you?",
        "What do you do?",
        "Do you like music?",
        "Any plans for the weekend?",
        "Bye",
    ]
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
    training = split_conversations(load_chitchat(), "train")
    corpus_words = {w for c in training for t in c.turns for w in words(t)}
    reply_words = [words(reply) for reply in replies]
    assert all(reply_words), f"a reply without words: {replies}"
    known = sum(w in corpus_words for ws in reply_words for w in ws)
    assert known / sum(map(len, reply_words)) >= 0.95, f"not the training text's English: {replies}"
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


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a full demo build, then whole runs, on a possibly busy CI machine
def test_the_demo_model_meets_its_quality_targets(tmp_path, demo_env):
    """`dialobot eval` on the whole held-out set: the targets of docs/benchmarks.md, INT8 as served."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "eval",
            "--model",
            "demo",
            "--quantization",
            "int8",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=demo_env,
        timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "eval-demo.json").read_text())
    run = report["runs"]["int8"]
    assert report["data"]["contexts"] > 350
    assert all(run["targets"].values()), (run["targets"], run["metrics"])
