"""`python -m bot.bench.backends`: the same model and workload on each backend, side by side.

Each case (`backend:quantization`, e.g. `ipex:int8`) runs in a fresh process, so its start-up time and peak
memory are its own and one runtime's global state (IPEX patches torch on import) cannot touch another's. A
case reports load time, time per reply one at a time, and the wall time of one batch of `--batch` replies,
with the bot's default sampling settings and a fixed reply length (EOS ignored), like `dialobot bench`.

Against the limit: one decoding step reads every weight matrix once, so it cannot be faster than their bytes
divided by the machine's memory read bandwidth (measured here, all cores reading one large buffer). A case
reports its prompt (prefill) time apart from its decode time per token (a one-token reply is the prompt's
time; the rest of a full reply, per token, is decoding), beside that floor for INT8 and FP32 weights.

Late messages: `--batch` replies are sent at once as they would be served (the bot's scheduler or the
runtime's continuous batching), and one more message arrives when about half of that batch's time has
passed; its time to reply is reported against the same message sent alone.

IPEX runs only on torch 2.8, so the comparison that includes it is run from the IPEX environment
(`make ipex`: `.venv-ipex/bin/python -m bot.bench.backends`); every case there shares that stack.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CASES = "torch:none,torch:int8,ctranslate2:int8,openvino:int8"


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
    full = generator._settings
    vocab = SHAPES[args.shape].vocab_size
    conversations = [[random_words(args.prompt_tokens - 1, vocab, seed=i)] for i in range(16)]
    for turns in conversations[:2]:  # warm-up: thread pools, allocator, IPEX's first-call work
        generator.generate_sync(turns)
    times = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        generator.generate_sync(conversations[i % len(conversations)])
        times.append(time.perf_counter() - t0)
    # The prompt alone: a one-token reply (the prompt's forward pass gives its token).
    generator._settings = full.model_copy(update={"max_new_tokens": 1})
    prefills = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        generator.generate_sync(conversations[i % len(conversations)])
        prefills.append(time.perf_counter() - t0)
    generator._settings = full
    walls = []
    for r in range(args.rounds):
        batch = [conversations[(r * args.batch + i) % len(conversations)] for i in range(args.batch)]
        t0 = time.perf_counter()
        generator.generate_batch_sync(batch)
        walls.append(time.perf_counter() - t0)
    reply_s, prefill_s = float(np.median(times)), float(np.median(prefills))
    late = asyncio.run(_late_arrival(generator, config, conversations, args.batch, float(np.median(walls))))
    info = generator.info
    return {
        "case": args.case,
        "load_s": load_s,
        "single": summarize(times),
        "prefill_s": prefill_s,
        "decode_ms_per_token": 1000 * (reply_s - prefill_s) / max(1, args.new_tokens - 1),
        "batch_wall_s": float(np.median(walls)),
        "late": late,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "projections": None
        if info.projections is None
        else f"{info.projections.int8}/{info.projections.total}",
    }


async def _late_arrival(generator, config, conversations, batch: int, batch_s: float) -> dict:
    """Time to reply for a message arriving when about half a batch's time has passed, and alone."""
    from bot.generation.scheduler import build_generator

    served = build_generator(generator, config)
    message = conversations[-1]
    started = time.perf_counter()
    await served.generate(message)
    solo_s = time.perf_counter() - started
    running = [asyncio.create_task(served.generate(conversations[i])) for i in range(batch)]
    await asyncio.sleep(batch_s / 2)
    started = time.perf_counter()
    await served.generate(message)
    late_s = time.perf_counter() - started
    await asyncio.gather(*running)
    return {"solo_s": solo_s, "mid_batch_s": late_s, "ratio": late_s / solo_s}


def memory_bandwidth_gbs(size_mb: int = 1024, runs: int = 5) -> float:
    """The machine's memory read bandwidth in GB/s: the best of `runs` sums of a buffer far larger than the
    caches, on every core (torch splits a large reduction across its threads)."""
    import torch

    buffer = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
    best = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        buffer.sum().item()
        best = max(best, buffer.numel() * 4 / (time.perf_counter() - t0) / 1e9)
    return best


def weight_matrix_params(shape) -> int:
    """Parameters a decoding step reads as matrices: per layer QKV, attention output and the two MLP
    projections (12·d²), and the LM head (vocabulary·d)."""
    return 12 * shape.n_layer * shape.n_embd**2 + shape.vocab_size * shape.n_embd


def _stack() -> dict:
    import torch
    import transformers

    stack = {"python": platform.python_version(), "torch": torch.__version__}
    stack["transformers"] = transformers.__version__
    for name, module in (
        ("ipex", "intel_extension_for_pytorch"),
        ("ctranslate2", "ctranslate2"),
        ("openvino_genai", "openvino_genai"),
    ):
        try:
            stack[name] = __import__(module).__version__
        except Exception:
            stack[name] = None
    return stack


def _render(results: dict) -> str:
    rows = results["cases"]
    base = next((r for r in rows if r.get("case") == "torch:none" and "error" not in r), None)
    floor = results["floor"]
    lines = [
        f"{results['shape']} shape, {results['prompt_tokens']}-token prompts, "
        f"{results['new_tokens']} new tokens, batch of {results['batch']}; {results['stack']}",
        f"load average {results['load_average'][0]:.2f} at start, "
        f"{results['load_average_end'][0]:.2f} at end; "
        f"memory read {floor['bandwidth_gbs']:.1f} GB/s: a decode step takes at least "
        f"{floor['int8_ms']:.1f} ms with INT8 weights, {floor['fp32_ms']:.1f} ms with FP32",
        f"{'case':<18} {'load s':>7} {'reply s':>8} {'vs FP32':>8} {'prompt s':>8} {'ms/token':>8}"
        f" {'x floor':>7} {'batch s':>8} {'per reply':>9} {'late/solo':>9} {'peak MB':>8} {'INT8 proj':>9}",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<18} failed: {r['error']}")
            continue
        single = r["single"]["median_s"]
        speedup = f"{base['single']['median_s'] / single:.2f}x" if base else "-"
        limit = floor["int8_ms"] if r["case"].endswith(":int8") else floor["fp32_ms"]
        lines.append(
            f"{r['case']:<18} {r['load_s']:>7.2f} {single:>8.3f} {speedup:>8} {r['prefill_s']:>8.3f}"
            f" {r['decode_ms_per_token']:>8.1f} {r['decode_ms_per_token'] / limit:>6.2f}x"
            f" {r['batch_wall_s']:>8.2f} {r['batch_wall_s'] / results['batch']:>9.3f}"
            f" {r['late']['ratio']:>8.2f}x {r['peak_rss_mb']:>8.0f} {r['projections'] or '-':>9}"
        )
    return "\n".join(lines)


def check_targets(results: dict, default: str = "ctranslate2:int8") -> dict[str, dict]:
    """The speed and memory targets for the default backend (docs/benchmarks.md), from one run's cases.

    Each entry holds the measured value, the target and whether it is met; a target whose cases did not run
    (or failed) is left out rather than guessed."""
    cases = {r["case"]: r for r in results["cases"] if "error" not in r}
    best = cases.get(default)
    if best is None:
        return {}
    checks: dict[str, dict] = {}

    def check(name: str, value: float, target: str, met: bool) -> None:
        checks[name] = {"value": round(value, 3), "target": target, "met": bool(met)}

    single, batch = best["single"]["median_s"], best["batch_wall_s"]
    if fp32 := cases.get("torch:none"):
        check(
            "per reply vs torch FP32",
            fp32["single"]["median_s"] / single,
            ">= 4x",
            fp32["single"]["median_s"] >= 4 * single,
        )
    ct2 = cases.get("ctranslate2:int8")
    if ct2 and ct2 is not best:
        check(
            "per reply vs CTranslate2",
            single / ct2["single"]["median_s"],
            "<= 1x",
            single <= ct2["single"]["median_s"],
        )
        check("batch vs CTranslate2", batch / ct2["batch_wall_s"], "<= 1x", batch <= ct2["batch_wall_s"])
        check(
            "peak memory vs CTranslate2",
            best["peak_rss_mb"] / ct2["peak_rss_mb"],
            "<= 1x",
            best["peak_rss_mb"] <= ct2["peak_rss_mb"],
        )
    over_floor = best["decode_ms_per_token"] / results["floor"]["int8_ms"]
    check("decode vs bandwidth floor", over_floor, "<= 1.5x (stretch 1.3x)", over_floor <= 1.5)
    speedup = results["batch"] * single / batch
    check(f"{results['batch']} channels at once vs serial", speedup, ">= 3.5x", speedup >= 3.5)
    late = best["late"]["ratio"]
    check("late message vs solo", late, "<= 1.5x", late <= 1.5)
    return checks


def _render_targets(checks: dict[str, dict], default: str) -> str:
    lines = [f"targets for the default backend ({default}):"]
    for name, c in checks.items():
        lines.append(
            f"  {'met' if c['met'] else 'NOT MET':<8} {name}: {c['value']:.2f}x (target {c['target']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.case:  # the child: one case, JSON on stdout
        print(json.dumps(_run_case(args)))
        return 0
    from bot.bench.models import SHAPES

    model_dir = str(_model_dir(args.shape))
    bandwidth = memory_bandwidth_gbs()
    weights = weight_matrix_params(SHAPES[args.shape])
    results = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {_cpus()} CPUs, {_cpu_model()}",
        "load_average": os.getloadavg(),
        "stack": _stack(),
        "floor": {
            "bandwidth_gbs": bandwidth,
            "weight_matrix_params": weights,
            "int8_ms": weights / bandwidth / 1e6,
            "fp32_ms": 4 * weights / bandwidth / 1e6,
        },
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
    results["load_average_end"] = os.getloadavg()
    default = f"{_default_backend()}:int8"
    results["targets"] = {"default": default, "checks": check_targets(results, default)}
    print(_render(results))
    print(_render_targets(results["targets"]["checks"], default))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _default_backend() -> str:
    from bot.config import ModelConfig

    return ModelConfig.model_fields["backend"].default


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
