"""The benchmark's outputs: the targets checked against one run, a text table, the JSON file, the PNG plot."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


def _at(rows: list[dict], channels: int) -> dict:
    return next(r for r in rows if r["channels"] == channels)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    better: str  # ">=" or "<="
    goal: float
    measure: Callable[[dict], float]


TARGETS = [
    Target(
        "INT8 speed-up per reply over FP32",
        ">=",
        3.0,
        lambda r: r["single"]["fp32"]["median_s"] / r["single"]["int8"]["median_s"],
    ),
    Target(
        "8 channels: replies/s batched over serial INT8",
        ">=",
        3.0,
        lambda r: (
            _at(r["concurrency"]["batched"], 8)["replies_per_s"]
            / _at(r["concurrency"]["serial"], 8)["replies_per_s"]
        ),
    ),
    Target(
        "event-loop lag p99 while generating (ms)",
        "<=",
        20.0,
        lambda r: max(row["lag_p99_ms"] for row in r["concurrency"]["batched"] + r["concurrency"]["serial"]),
    ),
    Target(
        "peak memory INT8 (pre-quantized) / FP32",
        "<=",
        0.5,
        lambda r: r["memory"]["int8_prequantized"]["peak_rss_mb"] / r["memory"]["fp32"]["peak_rss_mb"],
    ),
    Target(
        "start-up: load-and-quantize / load pre-quantized",
        ">=",
        2.0,
        lambda r: r["memory"]["int8_quantize_at_load"]["load_s"] / r["memory"]["int8_prequantized"]["load_s"],
    ),
    Target(
        "single reply: CTranslate2 int8 time / ours",
        ">=",
        1.0,
        lambda r: r["single"]["ct2_int8"]["median_s"] / r["single"]["int8"]["median_s"],
    ),
    Target(
        "8 channels: our replies/s / CTranslate2's batch of 8",
        ">=",
        1.0,
        lambda r: (
            _at(r["concurrency"]["batched"], 8)["replies_per_s"]
            / _at(r["concurrency"]["ct2_int8"], 8)["replies_per_s"]
        ),
    ),
    Target(
        "INT8 perplexity change over FP32",
        "<=",
        0.03,
        lambda r: r["quality"]["perplexity_change"],
    ),
    Target("INT8 picks FP32's next token", ">=", 0.95, lambda r: r["quality"]["same_next_token"]),
]


def check_targets(results: dict) -> list[dict]:
    """Each target with its value and whether it is met; targets whose part did not run are left out."""
    checked = []
    for target in TARGETS:
        try:
            value = float(target.measure(results))
        except (KeyError, StopIteration, TypeError, ZeroDivisionError):
            continue
        met = value >= target.goal if target.better == ">=" else value <= target.goal
        checked.append(
            {"target": target.name, "goal": f"{target.better} {target.goal:g}", "value": value, "met": met}
        )
    return checked


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def render(results: dict) -> str:
    """The human-readable report printed at the end of a run."""
    out = []
    machine = results.get("machine", {})
    out.append(
        f"dialobot bench: {results.get('model')} | {machine.get('cpu')} ({machine.get('cores')} cores, "
        f"{machine.get('torch_threads')} torch threads) | {machine.get('date')}"
    )
    work = results.get("workload", {})
    if work:
        out.append(
            f"workload: {work['prompt_tokens']}-token prompt, {work['new_tokens']} new tokens, sampling as "
            f"the bot's defaults; batching max {work['max_batch_size']} rows, window {work['window_ms']:g} ms"
        )
    if single := results.get("single"):
        out.append("\nTime per reply (one at a time)")
        rows = [
            [name, f"{s['median_s']:.3f}", f"{s['p95_s']:.3f}", f"{s['tokens_per_s']:.1f}", str(s["runs"])]
            for name, s in single.items()
        ]
        out.append(_table(["model", "median s", "p95 s", "tokens/s", "runs"], rows))
    if conc := results.get("concurrency"):
        out.append("\nChannels sending at once (INT8)")
        rows = []
        for mode, entries in conc.items():
            for e in entries:
                rows.append(
                    [
                        mode,
                        str(e["channels"]),
                        f"{e['replies_per_s']:.2f}",
                        f"{e['wall_s']:.2f}",
                        f"{e['latency_median_s']:.2f}" if "latency_median_s" in e else "-",
                        f"{e['latency_p95_s']:.2f}" if "latency_p95_s" in e else "-",
                        f"{e['lag_p99_ms']:.1f}" if "lag_p99_ms" in e else "-",
                        f"{e['lag_max_ms']:.1f}" if "lag_max_ms" in e else "-",
                    ]
                )
        headers = [
            "mode",
            "channels",
            "replies/s",
            "wall s",
            "latency med s",
            "p95 s",
            "lag p99 ms",
            "max ms",
        ]
        out.append(_table(headers, rows))
    if memory := results.get("memory"):
        out.append("\nLoading (separate processes)")
        rows = [
            [
                name,
                f"{m['peak_rss_mb']:.0f}",
                f"{m['peak_rss_mb'] - m['peak_rss_before_load_mb']:.0f}",
                f"{m['load_s']:.2f}",
            ]
            for name, m in memory.items()
        ]
        out.append(_table(["case", "peak RSS MB", "of which loading MB", "load s"], rows))
    if quality := results.get("quality"):
        out.append(
            f"\nQuality on {quality['positions']} held-out positions: "
            f"perplexity FP32 {quality['perplexity_fp32']:.3f}, "
            f"INT8 {quality['perplexity_int8']:.3f} ({quality['perplexity_change']:+.2%}); same next token "
            f"{quality['same_next_token']:.2%}"
        )
    if extra := results.get("model_part"):
        out.append(f"\nOn the {extra['model']} model ({extra['prompt_tokens']}-token prompts):")
        out.append(
            render({k: v for k, v in extra.items() if k in ("single", "concurrency")}).split("\n", 1)[1]
        )
    if targets := results.get("targets"):
        out.append("\nTargets (ratios within this run)")
        rows = [
            [t["target"], t["goal"], f"{t['value']:.3f}", "met" if t["met"] else "NOT MET"] for t in targets
        ]
        out.append(_table(["target", "goal", "measured", ""], rows))
    return "\n".join(out)


def write_json(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


def plot(results: dict, path: Path) -> None:
    """Latency and throughput against the number of channels sending at once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = results["concurrency"]
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"batched": ("tab:blue", "o"), "serial": ("tab:orange", "s"), "ct2_int8": ("tab:green", "^")}
    for mode, entries in conc.items():
        color, marker = styles.get(mode, ("tab:gray", "x"))
        channels = [e["channels"] for e in entries]
        label = {
            "batched": "INT8, batching on",
            "serial": "INT8, batching off",
            "ct2_int8": "CTranslate2 int8",
        }
        throughput.plot(
            channels,
            [e["replies_per_s"] for e in entries],
            marker=marker,
            color=color,
            label=label.get(mode, mode),
        )
        if "latency_median_s" in entries[0]:
            latency.plot(
                channels,
                [e["latency_median_s"] for e in entries],
                marker=marker,
                color=color,
                label=f"{label.get(mode, mode)}, median",
            )
            latency.plot(
                channels,
                [e["latency_p95_s"] for e in entries],
                marker=marker,
                color=color,
                linestyle="--",
                alpha=0.6,
                label=f"{label.get(mode, mode)}, p95",
            )
        else:
            latency.plot(
                channels,
                [e["wall_s"] for e in entries],
                marker=marker,
                color=color,
                label=f"{label.get(mode, mode)} (one batch)",
            )
    for ax in (latency, throughput):
        ax.set_xscale("log", base=2)
        ax.set_xticks([e["channels"] for e in conc["batched"]], [str(e["channels"]) for e in conc["batched"]])
        ax.set_xlabel("channels sending at once")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    latency.set_ylabel("seconds until the reply")
    latency.set_title("Latency")
    throughput.set_ylabel("replies per second")
    throughput.set_title("Throughput")
    work = results.get("workload", {})
    fig.suptitle(
        f"dialobot bench: {results.get('model')}, {work.get('prompt_tokens')}-token prompts, "
        f"{work.get('new_tokens')} new tokens, {results.get('machine', {}).get('cpu')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
