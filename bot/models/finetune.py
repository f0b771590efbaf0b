"""`dialobot train`: fine-tune a GPT-2-family model on your own conversations, into a new model directory.

Input: files that `dialobot history export` wrote (JSON lines), or files in chitchat-dataset's JSON format.
The base model is the demo model, a local directory or a hub DialoGPT (where it can be downloaded). The result
is an ordinary model directory: `--model DIR`, `dialobot quantize`, INT8 and the CTranslate2 backend take it.

About 10% of the conversations (at least one) are held out to measure the model before and after. A
checkpoint is written after every pass over the data, so Ctrl-C keeps the last finished one. What people wrote
ends up in the weights: `forget me` deletes stored history, not what a trained model learned from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bot.errors import DialobotError
from bot.models.corpus import (
    BOT_ROLE,
    Conversation,
    load_chitchat,
    load_history_export,
    split_at_least_one,
)

logger = logging.getLogger(__name__)
META_FILE = "dialobot-train.json"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="history export files (JSON lines) or chitchat-format JSON")
    parser.add_argument("--out", required=True, help="directory to write the fine-tuned model to")
    parser.add_argument(
        "--model", default="demo", help="model to start from: 'demo', a local directory, or a hub id"
    )
    parser.add_argument(
        "--format", choices=["auto", "history", "chitchat"], default="auto", help="input format"
    )
    parser.add_argument("--epochs", type=float, default=3.0, help="passes over the data (default: 3)")
    parser.add_argument("--max-minutes", type=float, help="stop training after this long, keeping the result")
    parser.add_argument("--learning-rate", type=float, help="default: 1e-3 below 50M parameters, else 5e-5")
    parser.add_argument("--batch-size", type=int, default=4, help="rows of --block-size tokens per step")
    parser.add_argument("--block-size", type=int, default=256, help="tokens per row (at most the context)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    parser.add_argument("--force", action="store_true", help="replace --out if it already holds files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_conversations(paths: list[str], fmt: str = "auto") -> list[Conversation]:
    """The conversations in `paths`, each file read in `fmt` (auto: a JSON object is chitchat format)."""
    conversations: list[Conversation] = []
    for path in paths:
        kind = fmt
        if kind == "auto":
            try:
                head = Path(path).read_text(encoding="utf-8").lstrip()[:1]
            except OSError as exc:
                raise DialobotError(f"{path}: {exc.strerror or exc}") from None
            # An export line is an object too, but one per line; a chitchat file is one object spanning lines.
            kind = "chitchat" if head == "{" and _is_single_json(path) else "history"
        conversations += load_chitchat(path) if kind == "chitchat" else load_history_export([path])
    return conversations


def _is_single_json(path: str) -> bool:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError:
        return False
    return isinstance(data, dict) and "channel" not in data


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise DialobotError(f"--out {out} already exists; pass --force to replace it")


def _save(model, tokenizer, out: Path, meta: dict) -> None:
    """Write a complete model directory to `out`, replacing what is there only once it is whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from bot.models.loader import _load_pretrained, quiet_transformers, require_eos, resolve_source
    from bot.models.prequantized import is_prequantized
    from bot.models.trainer import TrainConfig, heldout_score, train_causal_lm

    quiet_transformers()
    out = Path(args.out).expanduser()
    _prepare_out(out, args.force)
    if args.epochs <= 0:
        raise DialobotError("--epochs: must be more than 0")
    conversations = read_conversations(args.data, args.format)
    if not conversations:
        raise DialobotError("no conversation with at least two turns in the input")
    authors = {a for c in conversations for a in c.authors if a != BOT_ROLE}
    turns = sum(len(c.turns) for c in conversations)
    print(
        f"{len(conversations)} conversations, {turns} turns, by {len(authors)} authors "
        f"(the model will remember what they wrote; `forget me` cannot remove it from the weights)"
    )
    train, heldout = split_at_least_one(conversations)
    if not heldout:
        print("only one conversation: the held-out loss is measured on the training text itself")
        heldout = train
    source = resolve_source(args.model)
    if is_prequantized(source):
        raise DialobotError(
            f"--model {args.model}: a pre-quantized INT8 model cannot be trained; use its FP32 one"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer, model = _load_pretrained(source)
    require_eos(tokenizer, args.model)
    model.eval()
    context = int(getattr(model.config, "n_positions", 0) or model.config.max_position_embeddings)
    parameters = sum(p.numel() for p in model.parameters())
    rate = args.learning_rate or (1e-3 if parameters < 50_000_000 else 5e-5)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        block_size=min(args.block_size, context),
        learning_rate=rate,
        warmup_fraction=0.1,
        weight_decay=0.0,
        seed=args.seed,
    )
    before = heldout_score(model, tokenizer, heldout, context)
    meta: dict = {
        "base_model": args.model,
        "base_source": source,
        "data": [str(p) for p in args.data],
        "conversations": len(conversations),
        "train_conversations": len(train),
        "heldout_conversations": len(heldout),
        "authors": len(authors),
        "train": {k: getattr(config, k) for k in config.__slots__},
        "heldout_loss_before": before.loss,
    }
    print(f"training {len(train)} conversations, holding out {len(heldout)}; held-out loss {before.loss:.3f}")
    saved = {"epoch": 0}

    def checkpoint(epoch, result) -> None:
        _save(model, tokenizer, out, {**meta, "epochs_done": epoch, "steps": result.steps, "finished": False})
        saved["epoch"] = epoch

    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else None
    try:
        result = train_causal_lm(
            model,
            tokenizer,
            train,
            config,
            progress=not args.no_progress and sys.stderr.isatty(),
            deadline=deadline,
            on_epoch_end=checkpoint,
        )
    except KeyboardInterrupt:
        if saved["epoch"]:
            print(f"\nstopped; {out} holds the checkpoint after epoch {saved['epoch']}")
        else:
            print("\nstopped before the first epoch finished; nothing written")
        return 130
    model.eval()
    after = heldout_score(model, tokenizer, heldout, context)
    meta.update(
        heldout_loss_after=after.loss,
        steps=result.steps,
        epochs_done=round(result.epochs, 3),
        stopped=result.stopped or None,
        train_seconds=round(result.seconds, 1),
        finished=True,
    )
    _save(model, tokenizer, out, meta)
    if result.stopped == "time":
        print(f"stopped at --max-minutes after {result.epochs:.2f} epochs")
    print(
        f"held-out loss: {before.loss:.3f} before, {after.loss:.3f} after "
        f"({after.bits_per_byte:.3f} bits per byte); {result.steps} steps in {result.seconds:.0f}s"
    )
    print(f"saved to {out}; chat with it: dialobot chat --model {out}")
    return 0
