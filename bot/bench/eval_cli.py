"""`dialobot eval`: the reply-quality report (`bot.bench.quality`) for one model, as a table and JSON."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from bot.config import Config
from bot.errors import DialobotError


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo', a local model directory, or a hub id")
    parser.add_argument(
        "--quantization",
        choices=["both", "none", "int8"],
        default="both",
        help="FP32 (none), INT8, or both side by side (default)",
    )
    parser.add_argument("--per-conversation", type=int, default=2, help="replies per held-out conversation")
    parser.add_argument("--conversations", type=int, help="only the first N held-out conversations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    parser.add_argument(
        "--no-bpb", action="store_true", help="skip bits per byte (a full pass over the text)"
    )
    parser.add_argument("--out", default="eval-results", help="directory for the JSON file")


def run_eval(args: argparse.Namespace, config: Config) -> Path:
    import torch

    from bot.bench.quality import evaluate, render

    if args.per_conversation < 1:
        raise DialobotError("--per-conversation: must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    quantizations = ("none", "int8") if args.quantization == "both" else (args.quantization,)
    report = evaluate(
        args.model,
        config.generation,
        quantizations=quantizations,
        per_conversation=args.per_conversation,
        seed=args.seed,
        threads=args.threads,
        conversation_limit=args.conversations,
        bits_per_byte=not args.no_bpb,
        max_turns=config.history.max_turns,
        progress=lambda message: print(f"... {message}", file=sys.stderr, flush=True),
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.model).strip("_") or "model"
    path = out_dir / f"eval-{safe}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(render(report))
    print(f"\nwrote {path}")
    return path
