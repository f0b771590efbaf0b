"""A child process of the benchmark: load one model, report the load time and the process's peak memory.

Peak resident memory can only be measured cleanly in a fresh process (its peak never goes down), so the
benchmark runs `python -m bot.bench.probe --model DIR --quantization int8|none` once per case and reads the
JSON line it prints.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big process reports its parent's peak.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.bench.probe")
    parser.add_argument("--model", required=True)
    parser.add_argument("--quantization", choices=["int8", "none"], required=True)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import torch  # imported before the clock starts: start-up compares loading, not imports

    from bot.config import ModelConfig
    from bot.models.loader import load_model

    before = _peak_rss_mb()
    started = time.perf_counter()
    loaded = load_model(ModelConfig(name=args.model, quantization=args.quantization, threads=args.threads))
    load_seconds = time.perf_counter() - started
    # Memory that serves: one forward pass touches every weight (safetensors FP32 weights are mapped lazily).
    with torch.inference_mode():
        loaded.model(torch.full((1, 16), int(loaded.tokenizer.eos_token_id)))
    result = {
        "load_s": load_seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_before_load_mb": before,
        "projections_int8": loaded.info.projections.int8,
        "projections_total": loaded.info.projections.total,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
