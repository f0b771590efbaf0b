"""`dialobot bench`: one command that measures what matters for serving on a CPU, and writes it down.

In one run, on a DialoGPT-shaped model with random weights (`--shape`) and then on a real model (`--model`,
the offline demo model by default): time per reply FP32 vs INT8, replies per second with 1-16 channels at once
with batching on and off, event-loop lag, peak memory and start-up time of FP32 / load-and-quantize /
pre-quantized loading, and the same workload on CTranslate2 when it is installed. `--quality` instead compares
FP32 and INT8 perplexity on held-out conversations; `--backends` compares the backends against the memory
bandwidth floor and the speed targets (`bot.bench.backends`). Results: a table on stdout, JSON and a PNG in
`--out`.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from bot.bench.backends import DEFAULT_CASES as DEFAULT_BACKEND_CASES
from bot.errors import DialobotError

logger = logging.getLogger(__name__)

DEFAULT_LEVELS = "1,2,4,8,16"


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("channel counts must be 1 or more")
    return levels


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench` subcommand's flags (kept here so the CLI module stays small)."""
    parser.add_argument(
        "--shape",
        choices=["small", "medium", "large", "tiny"],
        default="medium",
        help="DialoGPT shape of the random-weight model (default: medium)",
    )
    parser.add_argument(
        "--model",
        default="demo",
        help="real model measured after the random one, and by --quality (default: demo)",
    )
    parser.add_argument("--skip-model", action="store_true", help="measure only the random-weight model")
    parser.add_argument(
        "--quality",
        action="store_true",
        help="only compare FP32 and INT8 perplexity and next-token agreement on --model",
    )
    parser.add_argument(
        "--backends",
        nargs="?",
        const=DEFAULT_BACKEND_CASES,
        metavar="CASES",
        help="instead, compare backends on --shape, each in its own process, against the memory-bandwidth "
        "floor and the speed targets (default cases: torch FP32 and INT8, CTranslate2, OpenVINO)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="replies timed per model, one at a time")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per concurrency level")
    parser.add_argument(
        "--concurrency",
        type=_levels,
        default=_levels(DEFAULT_LEVELS),
        help=f"channel counts to send at once (default: {DEFAULT_LEVELS})",
    )
    parser.add_argument("--probe-runs", type=int, default=2, help="fresh processes per loading case")
    parser.add_argument("--prompt-tokens", type=int, default=100, help="prompt length for the random model")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per reply")
    parser.add_argument("--max-batch-size", type=int, help="default: batching.max_batch_size from the config")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repetitions: --repeats 2 --rounds 1 --probe-runs 1, channels 1,2,4,8",
    )
    parser.add_argument("--no-ct2", action="store_true", help="skip CTranslate2 even when it is installed")
    parser.add_argument("--out", default="bench-results", help="directory for the JSON and PNG files")
    parser.add_argument("--work-dir", help="where benchmark models are built (default: the cache directory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        if match := re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE):
            cpu = match.group(1).strip()
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_before": list(os.getloadavg()),
    }


def _probe(model_dir: Path, quantization: str, runs: int, threads: int) -> dict:
    """Median load time and peak RSS of loading `model_dir` in `runs` fresh processes."""
    import numpy as np

    results = []
    for _ in range(runs):
        command = [
            sys.executable,
            "-m",
            "bot.bench.probe",
            "--model",
            str(model_dir),
            "--quantization",
            quantization,
            "--threads",
            str(threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DialobotError(
                f"bench: loading {model_dir} ({quantization}) in a child process failed: {tail}"
            )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = {key: float(np.median([r[key] for r in results])) for key in results[0]}
    summary["runs"] = runs
    return summary


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, file=sys.stderr, disable=not enabled, unit="step", dynamic_ncols=True)

    def step(self, description: str) -> None:
        self._bar.set_description(description)

    def done(self) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _speed_part(models, conversations, settings, batching, args, progress: _Progress) -> dict:
    """Single-reply times and the concurrency sweep for one model (FP32 and INT8 in this process)."""
    import asyncio

    from bot.bench.measure import (
        Ct2Reference,
        batched_factory,
        prompt_tokens,
        run_concurrency,
        serial_factory,
        time_single,
    )
    from bot.config import ModelConfig
    from bot.generation.backends.torch import TorchGenerator
    from bot.models.loader import load_model

    part: dict = {"single": {}, "concurrency": {}}
    progress.step("FP32: time per reply")
    fp32 = load_model(ModelConfig(name=str(models.fp32), quantization="none", threads=args.threads))
    part["single"]["fp32"] = time_single(
        TorchGenerator(fp32, settings, stop_at_eos=False),
        conversations,
        args.repeats,
        settings.max_new_tokens,
    )
    del fp32
    gc.collect()
    progress.done()

    progress.step("INT8: time per reply")
    int8 = load_model(ModelConfig(name=str(models.int8), quantization="int8", threads=args.threads))
    plain = TorchGenerator(int8, settings, stop_at_eos=False)
    part["single"]["int8"] = time_single(plain, conversations, args.repeats, settings.max_new_tokens)
    progress.done()

    progress.step("INT8: channels at once, batching on")
    part["concurrency"]["batched"] = asyncio.run(
        run_concurrency(
            batched_factory(int8, settings, batching), conversations, args.concurrency, args.rounds
        )
    )
    progress.done()
    progress.step("INT8: channels at once, batching off")
    part["concurrency"]["serial"] = asyncio.run(
        run_concurrency(serial_factory(int8, settings), conversations, args.concurrency, args.rounds)
    )
    progress.done()

    if models.ct2 is not None:
        progress.step("CTranslate2 int8: the same workload")
        import torch

        reference = Ct2Reference.load(models.ct2, settings, threads=torch.get_num_threads())
        prompts = prompt_tokens(plain, int8.tokenizer, conversations)
        part["single"]["ct2_int8"] = reference.time_single(prompts, args.repeats)
        part["concurrency"]["ct2_int8"] = reference.time_batches(prompts, args.concurrency, args.rounds)
        del reference
        progress.done()
    part["prompt_tokens"] = round(sum(len(plain.prompt_ids(c)) for c in conversations) / len(conversations))
    return part


def _run_quality(args, out_dir: Path) -> dict:
    from bot.bench.quality import compare, heldout_sequences
    from bot.bench.report import check_targets
    from bot.config import ModelConfig
    from bot.models.loader import load_model

    fp32 = load_model(ModelConfig(name=args.model, quantization="none", threads=args.threads))
    int8 = load_model(ModelConfig(name=args.model, quantization="int8", threads=args.threads))
    sequences = heldout_sequences(fp32.tokenizer, fp32.info.context)
    results = {
        "model": args.model,
        "machine": _machine(),
        "quality": compare(fp32.model, int8.model, sequences),
    }
    results["targets"] = check_targets(results)
    return results


def run_bench(args: argparse.Namespace) -> None:
    """Run the benchmark the flags describe; print the table, write JSON (and the PNG)."""
    import torch

    from bot.bench.models import SHAPES, prepare, random_words
    from bot.bench.report import check_targets, plot, render, write_json
    from bot.config import cache_dir, load_config
    from bot.models.loader import resolve_source

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.rounds, args.probe_runs = 2, 1, 1
        args.concurrency = [c for c in args.concurrency if c <= 8] or args.concurrency
    for flag in ("repeats", "rounds", "probe_runs", "prompt_tokens", "new_tokens"):
        if getattr(args, flag) < 1:
            raise DialobotError(f"--{flag.replace('_', '-')}: must be at least 1")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe_model = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.model).strip("_") or "model"

    if args.backends:
        from bot.bench import backends

        argv = ["--cases", args.backends, "--shape", args.shape, "--repeats", str(args.repeats)]
        argv += ["--rounds", str(args.rounds), "--threads", str(args.threads)]
        argv += ["--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens)]
        argv += [
            "--batch",
            str(args.max_batch_size or 8),
            "--out",
            str(out_dir / f"backends-{args.shape}.json"),
        ]
        backends.main(argv)
        return

    if args.quality:
        results = _run_quality(args, out_dir)
        write_json(results, out_dir / f"quality-{safe_model}.json")
        print(render(results))
        print(f"\nwrote {out_dir / f'quality-{safe_model}.json'}")
        return

    config = load_config(args.config)
    settings = config.generation.model_copy(update={"max_new_tokens": args.new_tokens})
    batching = config.batching.model_copy(
        update={"enabled": True, "max_batch_size": args.max_batch_size or config.batching.max_batch_size}
    )
    work_root = Path(args.work_dir) if args.work_dir else cache_dir() / "bench"
    with_ct2 = not args.no_ct2
    parts_per_model = 4 + int(with_ct2)
    total = 2 + parts_per_model + (0 if args.skip_model else 1 + parts_per_model)
    progress = _Progress(total, enabled=not args.no_progress)
    results: dict = {"model": f"random DialoGPT-{args.shape} shape", "machine": _machine()}
    results["workload"] = {
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "max_batch_size": batching.max_batch_size,
        "window_ms": batching.window_ms,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "sampling": {k: v for k, v in settings.model_dump().items() if k != "fallback_reply"},
    }
    try:
        progress.step(f"building the random {args.shape} model (FP32, INT8, CTranslate2)")
        models = prepare(args.shape, work_root / args.shape, with_ct2)
        with_ct2 = models.ct2 is not None
        results["workload"]["ct2"] = with_ct2
        progress.done()

        progress.step("loading in fresh processes: memory and start-up")
        results["memory"] = {
            "fp32": _probe(models.fp32, "none", args.probe_runs, args.threads),
            "int8_quantize_at_load": _probe(models.fp32, "int8", args.probe_runs, args.threads),
            "int8_prequantized": _probe(models.int8, "int8", args.probe_runs, args.threads),
        }
        progress.done()

        vocab = SHAPES[args.shape].vocab_size
        conversations = [[random_words(args.prompt_tokens - 1, vocab, seed=i)] for i in range(32)]
        part = _speed_part(models, conversations, settings, batching, args, progress)
        results["single"], results["concurrency"] = part["single"], part["concurrency"]
        gc.collect()

        if not args.skip_model:
            progress.step(f"preparing {args.model}")
            source = resolve_source(args.model)
            model_models = prepare(source, work_root / f"model-{safe_model}", with_ct2)
            progress.done()
            conversations = _real_conversations()
            model_part = _speed_part(model_models, conversations, settings, batching, args, progress)
            results["model_part"] = {"model": args.model, **model_part}
    finally:
        progress.close()
    results["machine"]["loadavg_after"] = list(os.getloadavg())
    results["targets"] = check_targets(results)
    json_path = out_dir / f"bench-{args.shape}.json"
    png_path = out_dir / f"bench-{args.shape}.png"
    write_json(results, json_path)
    plot(results, png_path)
    print(render(results))
    print(f"\nwrote {json_path} and {png_path}")


def _real_conversations() -> list[list[str]]:
    """Held-out conversations (never trained on), as a bot would see them: all turns, the last to answer."""
    from bot.models.corpus import load_chitchat, split_conversations

    heldout = [c.turns for c in split_conversations(load_chitchat(), "heldout") if len(c.turns) >= 3]
    return [list(turns[: min(len(turns) - 1, 10)]) for turns in heldout[:32]]
