"""How well, and how fast, the safety filter's classifiers do on the project's labelled replies.

    python -m bot.safety.measure [--classifier profanity_check|detoxify] [--thresholds 0.5,0.8] [--model demo]

Prints, per classifier and threshold, the precision and recall on the labelled set (tests/data/
safety_labelled.tsv: offensive and ordinary short chat replies, tricky benign ones included), the
false-positive rate on its ordinary small talk, on its tricky benign lines, and on ordinary replies of the
kind the demo model learns (people's replies in the chitchat-dataset conversations held out of its
training), with `--model` on that model's own replies too, then the time one check adds to a reply. The
figures in docs/reliability.md come from this command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "safety_labelled.tsv"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True, slots=True)
class Example:
    offensive: bool
    kind: str
    text: str


def load_labelled(path: Path = DEFAULT_DATA) -> list[Example]:
    """The labelled set: `label<TAB>kind<TAB>text` lines (`offensive` or `ok`); `#` starts a comment."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        label, kind, text = line.split("\t", 2)
        if label not in ("offensive", "ok"):
            raise ValueError(f"{path}:{number}: label must be 'offensive' or 'ok', not {label!r}")
        examples.append(Example(label == "offensive", kind, text))
    return examples


DEMO_REPLIES = 1000


def demo_replies(limit: int = DEMO_REPLIES) -> list[str]:
    """Ordinary small talk: the replies (every turn after the first) of the chitchat-dataset conversations
    held out of the demo model's training, the first `limit` distinct ones in a stable order."""
    from bot.models.corpus import load_chitchat, split_conversations

    seen: dict[str, None] = {}
    for conversation in split_conversations(load_chitchat(), "heldout"):
        for turn in conversation.turns[1:]:
            seen.setdefault(turn, None)
            if len(seen) >= limit:
                return list(seen)
    return list(seen)


def model_replies(model: str, limit: int = DEMO_REPLIES, seed: int = 0) -> list[str]:
    """What a model itself says: its replies, sampled with the bot's default settings (seeded), to contexts
    drawn from the held-out chitchat-dataset conversations, `limit` of them."""
    import asyncio

    from bot.bench.quality import generate_replies, reply_contexts
    from bot.config import parse_config
    from bot.generation.backends import load_backend
    from bot.models.corpus import load_chitchat, split_conversations

    config = parse_config({"model": {"name": model}})
    conversations = split_conversations(load_chitchat(), "heldout")
    per_conversation = -(-limit // len(conversations))
    contexts = reply_contexts(conversations, per_conversation, seed, config.history.max_turns)[:limit]
    generator = load_backend(config)
    try:
        replies, _ = generate_replies(generator, contexts, seed, config.safety.fallback_reply)
    finally:
        asyncio.run(generator.close())
    return replies


@dataclass(frozen=True, slots=True)
class Row:
    threshold: float
    precision: float
    recall: float
    fpr_small_talk: float
    fpr_tricky: float
    fpr_demo: float
    flagged_demo: int


def rates(examples: list[Example], scores: list[float], demo_scores: list[float], threshold: float) -> Row:
    flagged = [s >= threshold for s in scores]
    tp = sum(f and e.offensive for f, e in zip(flagged, examples, strict=True))
    fp = sum(f and not e.offensive for f, e in zip(flagged, examples, strict=True))
    positives = sum(e.offensive for e in examples)

    def fpr(kind: str) -> float:
        chosen = [f for f, e in zip(flagged, examples, strict=True) if e.kind == kind and not e.offensive]
        return sum(chosen) / len(chosen) if chosen else 0.0

    flagged_demo = sum(s >= threshold for s in demo_scores)
    return Row(
        threshold=threshold,
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / positives if positives else 0.0,
        fpr_small_talk=fpr("smalltalk"),
        fpr_tricky=fpr("tricky"),
        fpr_demo=flagged_demo / len(demo_scores) if demo_scores else 0.0,
        flagged_demo=flagged_demo,
    )


def score_all(classifier, texts: list[str], normalize: bool = True) -> list[float]:
    """The filter's score for each text: the highest over its spellings (bot/safety/normalize.py); with
    `normalize` off, the score of the text as written (what normalization adds, measured). One batch."""
    from bot.safety.normalize import views

    if not normalize:
        return classifier.scores(texts)
    spellings = [views(text) for text in texts]
    flat = classifier.scores([view for group in spellings for view in group])
    scores, start = [], 0
    for group in spellings:
        scores.append(max(flat[start : start + len(group)]))
        start += len(group)
    return scores


def time_checks(classifier, texts: list[str], rounds: int = 3) -> list[float]:
    """Seconds per check of one text (normalization and classifier), as the filter does it per reply."""
    from bot.safety.normalize import views

    classifier.scores(views(texts[0]))  # warm up
    took = []
    for _ in range(rounds):
        for text in texts:
            started = time.perf_counter()
            classifier.scores(views(text))
            took.append(time.perf_counter() - started)
    return took


DETOXIFY_ARCHITECTURES = {
    # Detoxify model -> the transformers architecture and size it runs (its config, without its weights).
    "original": ("BertForSequenceClassification", "BertConfig", {"num_labels": 6}),
    "unbiased": (
        "RobertaForSequenceClassification",
        "RobertaConfig",
        {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1, "num_labels": 16},
    ),
    "original-small": (
        "AlbertForSequenceClassification",
        "AlbertConfig",
        {"vocab_size": 30000, "embedding_size": 128, "hidden_size": 768, "num_attention_heads": 12,
         "intermediate_size": 3072, "num_labels": 6},
    ),
}  # fmt: skip


def detoxify_cost(model: str, tokens: int, rounds: int = 20, threads: int = 1) -> list[float]:
    """Seconds per forward pass of Detoxify `model`'s architecture on one `tokens`-long reply, with random
    weights: what a check costs, measurable where its trained weights cannot be downloaded. One thread by
    default, as the filter runs it."""
    import torch
    import transformers

    model_class, config_class, settings = DETOXIFY_ARCHITECTURES[model]
    torch.set_num_threads(threads)
    net = getattr(transformers, model_class)(getattr(transformers, config_class)(**settings)).eval()
    ids = torch.randint(1000, 2000, (1, tokens))
    took = []
    with torch.inference_mode():
        net(input_ids=ids)
        for _ in range(rounds):
            started = time.perf_counter()
            net(input_ids=ids)
            took.append(time.perf_counter() - started)
    return took


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.safety.measure", description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", choices=("profanity_check", "detoxify"), default="profanity_check")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--thresholds", default=",".join(str(t) for t in THRESHOLDS))
    parser.add_argument(
        "--no-normalize", action="store_true", help="score the text as written only (no de-obfuscated views)"
    )
    parser.add_argument("--detoxify-model", default="original")
    parser.add_argument(
        "--detoxify-cost",
        action="store_true",
        help="only time Detoxify's architectures (random weights, no download) on 16- and 48-token replies, "
        "with one thread and with two",
    )
    parser.add_argument("--detoxify-checkpoint", default="")
    parser.add_argument("--detoxify-config-dir", default="")
    parser.add_argument(
        "--model",
        help="also score a model's own replies ('demo', a directory or a hub id) to held-out conversations",
    )
    parser.add_argument("--model-replies", type=int, default=DEMO_REPLIES, help="how many (with --model)")
    args = parser.parse_args(argv)

    if args.detoxify_cost:
        for model in DETOXIFY_ARCHITECTURES:
            for tokens in (16, 48):
                for threads in (1, 2):
                    took = detoxify_cost(model, tokens, threads=threads)
                    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                    print(f"detoxify {model}, {tokens} tokens, {threads} thread(s): {_ms(took)}; load {load}")
        return 0

    from bot.errors import ConfigError
    from bot.safety.classifiers import DetoxifyClassifier, ProfanityCheck

    started = time.perf_counter()
    try:
        if args.classifier == "profanity_check":
            classifier = ProfanityCheck()
        else:
            classifier = DetoxifyClassifier(
                args.detoxify_model, args.detoxify_checkpoint, args.detoxify_config_dir
            )
    except ConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    load_seconds = time.perf_counter() - started
    examples = load_labelled(args.data)
    demo = demo_replies()
    normalize = not args.no_normalize
    scores = score_all(classifier, [e.text for e in examples], normalize)
    demo_scores = score_all(classifier, demo, normalize)
    offensive = sum(e.offensive for e in examples)
    print(
        f"{classifier.name}: {len(examples)} labelled lines ({offensive} offensive, "
        f"{len(examples) - offensive} ordinary), {len(demo)} demo replies; loaded in {load_seconds:.1f} s"
        f"{'' if normalize else '; text as written only'}\n"
    )
    print("| threshold | precision | recall | FPR small talk | FPR tricky benign | FPR demo replies |")
    print("|---|---|---|---|---|---|")
    for threshold in (float(t) for t in args.thresholds.split(",")):
        r = rates(examples, scores, demo_scores, threshold)
        print(
            f"| {r.threshold:.2f} | {r.precision:.1%} | {r.recall:.1%} | {r.fpr_small_talk:.1%} | "
            f"{r.fpr_tricky:.1%} | {r.fpr_demo:.1%} ({r.flagged_demo}/{len(demo)}) |"
        )
    if args.model:
        said = model_replies(args.model, args.model_replies)
        said_scores = score_all(classifier, said, normalize)
        print(f"\nthe model's own replies ({args.model}, {len(said)} replies, the bot's default sampling):")
        for threshold in (float(t) for t in args.thresholds.split(",")):
            stopped = [r for r, s in zip(said, said_scores, strict=True) if s >= threshold]
            shown = "; ".join(repr(r) for r in stopped[:5])
            print(f"  {threshold:.2f}: {len(stopped) / len(said):.1%} stopped ({len(stopped)}) {shown}")
    kinds = sorted({e.kind for e in examples if e.offensive})
    print("\nrecall by kind at each threshold:")
    for threshold in (float(t) for t in args.thresholds.split(",")):
        parts = []
        for kind in kinds:
            chosen = [s >= threshold for s, e in zip(scores, examples, strict=True) if e.kind == kind]
            parts.append(f"{kind} {sum(chosen)}/{len(chosen)}")
        print(f"  {threshold:.2f}: " + ", ".join(parts))
    took = time_checks(classifier, [e.text for e in examples])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nper check (one reply): {_ms(took)}; {os.cpu_count()} CPUs, load average {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
