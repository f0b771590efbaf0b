"""The offline demo model: a small DialoGPT-architecture model trained here on chitchat-dataset.

Model weights cannot always be downloaded, and a newcomer must still be able to chat. The demo model is a
GPT-2 (the DialoGPT architecture, a shorter context) with a whole-word tokenizer, both trained from
scratch on the training part of chitchat-dataset's conversations between people (`bot.models.corpus`). It
is built on first use into the cache directory, seeded so every build is the same, and loaded afterwards like
any local model directory.

The tokenizer is word-level: every token is a whole word (with its leading space) of the training text, so
every word the model writes is one people wrote. A subword vocabulary lets a model this small invent words
("tripuss", "palofic") in about half its sampled replies. Rare words, outside the vocabulary, are read as
`<unk>`, which is never a learned target: the model does not learn to write it.

The recipe was chosen by measurement (docs/benchmarks.md, "The demo model"). A fixed step count rather than a
time limit keeps every build the same on any machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, PreTrainedTokenizerFast

from bot.config import cache_dir
from bot.models.corpus import Conversation, load_chitchat, split_conversations, training_turns
from bot.models.trainer import TrainConfig, train_causal_lm

logger = logging.getLogger(__name__)

EOS = "<|endoftext|>"
UNK = "<unk>"
RECIPE_VERSION = 4
"""4: replies of 3+ words, turns with unknown words learned too, 1200 steps; 3: word-level vocabulary;
2: chitchat-dataset, packed rows, a fixed step count; 1: chatterbot-corpus."""


@dataclass(frozen=True, slots=True)
class DemoRecipe:
    """Everything that decides the built model; its hash names the cache directory."""

    vocab_size: int = 8192
    tokenizer: str = "word"
    """`word`: whole words (see the module docstring); `bpe`: GPT-2's byte-level BPE."""
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 256
    """The context (DialoGPT itself has 1024): prompts are cut to fit it, so every position is trained."""
    dropout: float = 0.0
    """No dropout: training sees most text once, so there is nothing to overfit."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=1200, batch_size=4, block_size=256, learning_rate=3e-3, warmup_fraction=0.05
        )
    )
    max_reply_words: int | None = 20
    """Learn only turns of at most this many words as replies (longer ones stay as context): a model this
    small writes a short reply well and loses the thread of a long one."""
    min_reply_words: int = 3
    """Learn only turns of at least this many words as replies: one- and two-word turns ("Yeah.", "lol")
    are most of what a small model would otherwise repeat word for word from its training text."""
    learn_unknown_word_turns: bool = True
    """Learn turns holding a word outside the vocabulary too, every token but `<unk>` itself (the trainer
    never learns that one): more text learned per step, at the cost of replies that skip a word."""
    conversation_limit: int | None = None
    """Train on only the first N training conversations (the tests' tiny model uses this for speed)."""

    def digest(self) -> str:
        payload = json.dumps({"v": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


DEMO_RECIPE = DemoRecipe()


WORD_PATTERN = r" ?\p{L}+(?:['’]\p{L}+)*| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
"""GPT-2's split into words, except that a contraction stays one word (`don't`, `I'm`): split in two, a
model can join the halves wrongly (`what't`, `you'm`)."""


def train_tokenizer(texts: Iterable[str], vocab_size: int, kind: str = "bpe") -> PreTrainedTokenizerFast:
    """A tokenizer trained on `texts` (turns), byte-level with the space kept with the word after it, as
    GPT-2's: `bpe`, GPT-2's byte-level BPE with EOS as its one special token; `word`, the `vocab_size` most
    frequent words (`WORD_PATTERN`), with EOS and `<unk>` for any other word."""
    if kind == "bpe":
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False
        )
        return GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    if kind != "word":
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    words = Tokenizer(models.WordLevel(unk_token=UNK))
    words.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    words.decoder = decoders.ByteLevel()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, UNK], show_progress=False
    )
    words.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=words, bos_token=EOS, eos_token=EOS, unk_token=UNK)


def choose_learned_turns(
    conversations: list[Conversation],
    tokenizer: PreTrainedTokenizerFast,
    max_words: int | None = None,
    unknown_words: bool = False,
    min_words: int = 1,
) -> list[Conversation]:
    """Turns with a word outside the vocabulary (`<unk>`; unless `unknown_words`), shorter than `min_words`
    or longer than `max_words`, stay as context but are not learned as replies."""
    unk = tokenizer.unk_token_id
    if unk == tokenizer.eos_token_id or unknown_words:
        unk = None  # a BPE vocabulary has no unknown words; or they are learned (the trainer skips `<unk>`)
    longest = math.inf if max_words is None else max_words
    out = []
    for conversation in conversations:
        encoded = tokenizer(list(conversation.turns))["input_ids"]
        learn = conversation.learn or (True,) * len(conversation.turns)
        flags = tuple(
            flag and unk not in ids and min_words <= len(turn.split()) <= longest
            for flag, ids, turn in zip(learn, encoded, conversation.turns, strict=True)
        )
        out.append(replace(conversation, learn=flags))
    return out


def new_model(recipe: DemoRecipe, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """The recipe's GPT-2, randomly initialised (seeded by the recipe)."""
    torch.manual_seed(recipe.train.seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        resid_pdrop=recipe.dropout,
        embd_pdrop=recipe.dropout,
        attn_pdrop=recipe.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config)


def build_demo_model(out_dir: Path, recipe: DemoRecipe = DEMO_RECIPE, progress: bool = True) -> Path:
    """Train the demo tokenizer and model and save them to `out_dir` (which must not exist yet)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" is noise in a build with its own bar
    started = time.perf_counter()
    load_before = os.getloadavg()
    conversations = split_conversations(load_chitchat(), "train")
    if recipe.conversation_limit is not None:
        conversations = conversations[: recipe.conversation_limit]
    tokenizer = train_tokenizer(training_turns(conversations), recipe.vocab_size, recipe.tokenizer)
    conversations = choose_learned_turns(
        conversations,
        tokenizer,
        recipe.max_reply_words,
        recipe.learn_unknown_word_turns,
        recipe.min_reply_words,
    )
    model = new_model(recipe, tokenizer)
    result = train_causal_lm(model, tokenizer, conversations, recipe.train, progress=progress)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    meta = {
        "recipe": asdict(recipe),
        "recipe_digest": recipe.digest(),
        "train_conversations": len(conversations),
        "steps": result.steps,
        "tokens": result.tokens,
        "epochs": round(result.epochs, 3),
        "final_loss": round(result.recent_loss, 4),
        "train_seconds": round(result.seconds, 1),
        "build_seconds": round(time.perf_counter() - started, 1),
        "threads": recipe.train.threads or torch.get_num_threads(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    (out_dir / "dialobot-demo.json").write_text(json.dumps(meta, indent=2))
    logger.info("built the demo model in %.0fs, final loss %.3f", meta["build_seconds"], meta["final_loss"])
    return out_dir


def ensure_demo_model(
    recipe: DemoRecipe = DEMO_RECIPE, root: Path | None = None, progress: bool = True
) -> Path:
    """The demo model's directory, built first if it is not in the cache yet.

    Builds go to a temporary directory renamed into place, under a file lock, so two processes starting at
    once build it once and nobody ever loads a half-written model.
    """
    root = root or cache_dir() / "models"
    target = root / f"demo-{recipe.digest()}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".demo-{recipe.digest()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():
            return target
        for stale in root.glob(".demo-build-*"):  # left by a build that was interrupted
            shutil.rmtree(stale, ignore_errors=True)
        if progress:
            print(f"Building the demo model in {target} (first use only, a few minutes)...", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=root))
        try:
            build_demo_model(tmp / "model", recipe, progress=progress)
            os.replace(tmp / "model", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
