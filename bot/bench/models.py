"""Models for the benchmark: DialoGPT-shaped GPT-2s with random weights, saved FP32, INT8 and for CTranslate2.

Speed does not depend on the weights' values, only on the shapes: a random DialoGPT-medium does the same
arithmetic as the real one, and it can be built offline in seconds. Its tokenizer is a plain word-level
vocabulary of the same size (`t0 ... t50255` and `<|endoftext|>`), so a prompt of N words is exactly N tokens.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from bot.errors import DialobotError

logger = logging.getLogger(__name__)

EOS = "<|endoftext|>"
VOCAB_SIZE = 50257  # DialoGPT's (GPT-2's) vocabulary


@dataclass(frozen=True, slots=True)
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = VOCAB_SIZE
    n_positions: int = 1024


SHAPES = {
    "small": Shape(n_layer=12, n_embd=768, n_head=12),  # DialoGPT-small, 117M parameters
    "medium": Shape(n_layer=24, n_embd=1024, n_head=16),  # DialoGPT-medium, 345M
    "large": Shape(n_layer=36, n_embd=1280, n_head=20),  # DialoGPT-large, 762M
    "tiny": Shape(n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=256),  # for the smoke test
}


@dataclass(frozen=True, slots=True)
class BenchModels:
    """The directories the benchmark loads: the same model in FP32, pre-quantized INT8, and CTranslate2."""

    fp32: Path
    int8: Path
    ct2: Path | None


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer with `vocab_size` entries; the last one is EOS."""
    vocab = {f"t{i}": i for i in range(vocab_size - 1)}
    vocab[EOS] = vocab_size - 1
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def random_words(n: int, vocab_size: int, seed: int) -> str:
    """`n` random words of the word tokenizer (never EOS): a prompt of exactly `n` tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size - 1, (n,), generator=generator).tolist()
    return " ".join(f"t{i}" for i in ids)


def build_random_model(shape: Shape, out_dir: Path, seed: int = 0) -> Path:
    """Save a seeded random GPT-2 of `shape` with its word tokenizer to `out_dir` (FP32, safetensors)."""
    torch.manual_seed(seed)
    eos = shape.vocab_size - 1
    config = GPT2Config(**asdict(shape), bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out_dir)
    word_tokenizer(shape.vocab_size).save_pretrained(out_dir)
    return out_dir


def convert_ct2(fp32_dir: Path, out_dir: Path) -> Path | None:
    """A CTranslate2 int8 conversion of `fp32_dir`, or None when ctranslate2 is not installed."""
    try:
        from bot.generation.backends.ctranslate2 import (
            convert_model,  # the ctranslate2 backend's own conversion
        )
    except ImportError:
        return None
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    convert_model(fp32_dir, tmp, "int8")
    os.replace(tmp, out_dir)
    return out_dir


def prepare(source: str, work_dir: Path, with_ct2: bool) -> BenchModels:
    """Build (or reuse) the benchmark's model directories under `work_dir`.

    `source` is a shape name (a random model is built) or a model name the bot can load (`demo`, a directory).
    Everything is seeded, so a directory left by an earlier run holds the same model and is reused.
    """
    from bot.config import ModelConfig
    from bot.models.loader import load_model, resolve_source
    from bot.models.prequantized import is_prequantized, save_prequantized

    work_dir.mkdir(parents=True, exist_ok=True)
    if source in SHAPES:
        fp32 = work_dir / "fp32"
        stamp = fp32 / "bench-shape.json"
        wanted = json.dumps(asdict(SHAPES[source]), sort_keys=True)
        if not stamp.is_file() or stamp.read_text() != wanted:
            for stale in (fp32, work_dir / "int8", work_dir / "ct2-int8"):
                shutil.rmtree(stale, ignore_errors=True)
            build_random_model(SHAPES[source], fp32)
            stamp.write_text(wanted)
    else:
        fp32 = Path(resolve_source(source))
        if is_prequantized(fp32):
            raise DialobotError(f"--model: {source} is pre-quantized; the benchmark needs the FP32 model")
    int8 = work_dir / "int8"
    if not is_prequantized(int8):
        shutil.rmtree(int8, ignore_errors=True)
        loaded = load_model(ModelConfig(name=str(fp32), quantization="int8"))
        save_prequantized(loaded.model, loaded.tokenizer, loaded.info.parameters, int8)
    ct2 = None
    if with_ct2:
        ct2 = work_dir / "ct2-int8"
        if not (ct2 / "model.bin").is_file():
            ct2 = convert_ct2(fp32, ct2)
    return BenchModels(fp32=fp32, int8=int8, ct2=ct2)
