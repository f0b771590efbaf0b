"""`python -m bot.bench.backends`: the same model and workload on each backend, side by side.

Each case (`backend:quantization`, e.g. `ipex:int8`) runs in a fresh process, so its start-up time and peak
memory are its own and one runtime's global state (IPEX patches torch on import) cannot touch another's. A
case reports load time, time per reply one at a time, and the wall time of one batch of `--batch` replies,
with the bot's default sampling settings and a fixed reply length (EOS ignored), like `dialobot bench`.

IPEX runs only on torch 2.8, so the comparison that includes it is run from the IPEX environment
(`make ipex`: `.venv-ipex/bin/python -m bot.bench.backends`); every case there shares that stack.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CASES = "torch:none,torch:int8,ipex:none,ipex:int8,ctranslate2:int8"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot.bench.backends", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"backend:quantization list ({DEFAULT_CASES})")
    parser.add_argument("--shape", default="medium", help="random-weight DialoGPT shape (default: medium)")
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="replies timed one at a time")
    parser.add_argument("--batch", type=int, default=8, help="replies in the timed batch")
    parser.add_argument("--rounds", type=int, default=2, help="timed batches (the median is kept)")
    parser.add_argument("--threads", type=int, default=0, help="generation threads (0: one per core)")
    parser.add_argument("--out", default="bench-results/backends.json")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in the child process
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser


def _model_dir(shape: str) -> Path:
    from bot.bench.models import SHAPES, build_random_model
    from bot.config import cache_dir

    work = cache_dir() / "bench" / f"backends-{shape}"
    if not (work / "config.json").is_file():
        build_random_model(SHAPES[shape], work)
    return work


def _run_case(args: argparse.Namespace) -> dict:
    """One case, in this process: load, warm up, time single replies and a batch."""
    import numpy as np

    from bot.bench.measure import summarize
    from bot.bench.models import SHAPES, random_words
    from bot.config import parse_config
    from bot.generation.backends import load_backend

    backend, quantization = args.case.split(":")
    config = parse_config(
        {
            "model": {
                "name": args.model_dir,
                "backend": backend,
                "quantization": quantization,
                "threads": args.threads,
            },
            "generation": {"max_new_tokens": args.new_tokens},
        }
    )
    started = time.perf_counter()
    generator = load_backend(config)
    load_s = time.perf_counter() - started
    generator.ignore_eos()
    vocab = SHAPES[args.shape].vocab_size
    conversations = [[random_words(args.prompt_tokens - 1, vocab, seed=i)] for i in range(16)]
    for turns in conversations[:2]:  # warm-up: thread pools, allocator, IPEX's first-call work
        generator.generate_sync(turns)
    times = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        generator.generate_sync(conversations[i % len(conversations)])
        times.append(time.perf_counter() - t0)
    walls = []
    for r in range(args.rounds):
        batch = [conversations[(r * args.batch + i) % len(conversations)] for i in range(args.batch)]
        t0 = time.perf_counter()
        generator.generate_batch_sync(batch)
        walls.append(time.perf_counter() - t0)
    info = generator.info
    return {
        "case": args.case,
        "load_s": load_s,
        "single": summarize(times),
        "batch_wall_s": float(np.median(walls)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "projections": None
        if info.projections is None
        else f"{info.projections.int8}/{info.projections.total}",
    }


def _stack() -> dict:
    import torch
    import transformers

    stack = {"python": platform.python_version(), "torch": torch.__version__}
    stack["transformers"] = transformers.__version__
    for name, module in (("ipex", "intel_extension_for_pytorch"), ("ctranslate2", "ctranslate2")):
        try:
            stack[name] = __import__(module).__version__
        except Exception:
            stack[name] = None
    return stack


def _render(results: dict) -> str:
    rows = results["cases"]
    base = next((r for r in rows if r.get("case") == "torch:none" and "error" not in r), None)
    lines = [
        f"{results['shape']} shape, {results['prompt_tokens']}-token prompts, "
        f"{results['new_tokens']} new tokens, batch of {results['batch']}; {results['stack']}",
        f"{'case':<18} {'load s':>7} {'reply s':>8} {'vs FP32':>8} {'batch s':>8} {'per reply':>9}"
        f" {'peak MB':>8} {'INT8 proj':>9}",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<18} failed: {r['error']}")
            continue
        single = r["single"]["median_s"]
        speedup = f"{base['single']['median_s'] / single:.2f}x" if base else "-"
        lines.append(
            f"{r['case']:<18} {r['load_s']:>7.2f} {single:>8.3f} {speedup:>8} {r['batch_wall_s']:>8.2f}"
            f" {r['batch_wall_s'] / results['batch']:>9.3f} {r['peak_rss_mb']:>8.0f}"
            f" {r['projections'] or '-':>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.case:  # the child: one case, JSON on stdout
        print(json.dumps(_run_case(args)))
        return 0
    model_dir = str(_model_dir(args.shape))
    results = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "stack": _stack(),
        "shape": args.shape,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "batch": args.batch,
        "cases": [],
    }
    passed = list(argv if argv is not None else sys.argv[1:])
    for case in args.cases.split(","):
        print(f"measuring {case} ...", file=sys.stderr, flush=True)
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "bot.bench.backends",
                *passed,
                "--case",
                case,
                "--model-dir",
                str(model_dir),
            ],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            reason = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
            results["cases"].append({"case": case, "error": reason})
        else:
            results["cases"].append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(_render(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
