"""Reply quality, measured the way DialoGPT was: `dialobot eval` (and `dialobot bench --quality`).

On held-out conversations of chitchat-dataset (never trained on by the demo model), each sampled context gets
the model's reply, generated as the bot generates it (its prompt building, its sampling settings, seeded,
an empty reply retried once before the fallback), and the reply is compared with what the person really
answered there. Reported, for FP32 and INT8 side by side:

- the DialoGPT paper's automatic metrics: BLEU-2/4 and NIST-2/4 against the real reply (nltk's corpus-level
  implementations; one reference per context, so lower than the paper's multi-reference figures), Entropy-4
  (nats) and Dist-1/Dist-2 of all replies together;
- held-out bits per byte (`bot.models.trainer.heldout_score`): comparable across tokenizers;
- the reply's average length in words; the shares of replies that copy a training line verbatim, that are made
  of real words (every word seen in the training text), that were empty (first try) or ended as the fallback
  reply, and that repeat the bot's previous turn.

The same figures for the people's own replies (`human`) say what each number looks like for real small talk.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.models.corpus import Conversation

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")
_TOKEN = re.compile(r"\w+|[^\w\s]")

TARGETS = {
    # metric: (comparison, threshold) for the demo model (issue-level acceptance, docs/benchmarks.md)
    "real_words": (">=", 0.95),
    "empty": ("<=", 0.0),
    "verbatim_copy": ("<=", 0.10),
    "dist2": (">=", 0.25),
    "repeat_previous": ("<=", 0.02),
}


def words(text: str) -> list[str]:
    """Lower-cased words (letters, digits, inner apostrophes): what real-word and Dist/Entropy counts use."""
    return _WORD.findall(text.lower())


def bleu_tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: what BLEU and NIST compare."""
    return _TOKEN.findall(text.lower())


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass(frozen=True, slots=True)
class ReplyContext:
    history: tuple[str, ...]
    """The turns before the reply, oldest first (at most `max_turns`); the last is the message answered."""
    reference: str
    """What the person really answered."""

    @property
    def previous_reply(self) -> str | None:
        """The replying side's previous turn (the bot's, in a chat), if the history has one."""
        return self.history[-2] if len(self.history) >= 2 else None


def reply_contexts(
    conversations: Sequence[Conversation], per_conversation: int = 2, seed: int = 0, max_turns: int = 10
) -> list[ReplyContext]:
    """`per_conversation` reply positions from each conversation, chosen with a seeded generator."""
    rng = random.Random(seed)
    max_turns = max(1, max_turns)
    contexts = []
    for conversation in conversations:
        turns = conversation.turns
        positions = sorted(rng.sample(range(1, len(turns)), min(per_conversation, len(turns) - 1)))
        for i in positions:
            contexts.append(ReplyContext(tuple(turns[max(0, i - max_turns) : i]), turns[i]))
    return contexts


@dataclass(frozen=True, slots=True)
class TrainingText:
    """What a reply is checked against: the training lines (normalised) and every word in them."""

    lines: frozenset[str]
    vocabulary: frozenset[str]

    @classmethod
    def of(cls, conversations: Sequence[Conversation]) -> TrainingText:
        turns = [t for c in conversations for t in c.turns]
        return cls(frozenset(normalise(t) for t in turns), frozenset(w for t in turns for w in words(t)))


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def reply_metrics(
    replies: Sequence[str],
    contexts: Sequence[ReplyContext],
    training: TrainingText,
    fallback_reply: str | None = None,
    first_try_empty: int = 0,
) -> dict[str, float]:
    """The automatic metrics of `replies` (one per context) against the contexts' real replies."""
    try:
        from nltk.translate.bleu_score import corpus_bleu
        from nltk.translate.nist_score import corpus_nist
    except ImportError:
        from bot.errors import DialobotError

        raise DialobotError("BLEU and NIST need nltk: pip install -e '.[bench]'") from None

    if len(replies) != len(contexts) or not replies:
        raise ValueError("one reply per context, at least one")
    references = [[bleu_tokens(c.reference)] for c in contexts]
    hypotheses = [bleu_tokens(r) for r in replies]
    reply_words = [words(r) for r in replies]
    count = len(replies)
    with warnings.catch_warnings():  # nltk warns when no 4-gram matches: BLEU-4 is then 0, as reported
        warnings.simplefilter("ignore", UserWarning)
        result: dict[str, float] = {
            "bleu2": corpus_bleu(references, hypotheses, weights=(0.5, 0.5)),
            "bleu4": corpus_bleu(references, hypotheses, weights=(0.25, 0.25, 0.25, 0.25)),
        }
    for n in (2, 4):
        # nltk divides by the hypotheses' n-gram count, zero when every reply is shorter than n words.
        has_ngrams = any(len(h) >= n for h in hypotheses) and any(len(r[0]) >= n for r in references)
        result[f"nist{n}"] = corpus_nist(references, hypotheses, n=n) if has_ngrams else 0.0
    four = Counter(g for w in reply_words for g in _ngrams(w, 4))
    total = sum(four.values())
    result["entropy4"] = -sum(c / total * math.log(c / total) for c in four.values()) if total else 0.0
    for n in (1, 2):
        grams = [g for w in reply_words for g in _ngrams(w, n)]
        result[f"dist{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    result["avg_words"] = sum(map(len, reply_words)) / count
    result["verbatim_copy"] = sum(normalise(r) in training.lines for r in replies if r.strip()) / count
    result["real_words"] = (
        sum(bool(w) and all(x in training.vocabulary for x in w) for w in reply_words) / count
    )
    result["empty"] = first_try_empty / count
    result["fallback"] = sum(r == fallback_reply for r in replies) / count if fallback_reply else 0.0
    with_previous = [
        (r, c.previous_reply) for r, c in zip(replies, contexts, strict=True) if c.previous_reply
    ]
    result["repeat_previous"] = (
        sum(normalise(r) == normalise(p) for r, p in with_previous if r.strip()) / len(with_previous)
        if with_previous
        else 0.0
    )
    return result


def human_metrics(contexts: Sequence[ReplyContext], training: TrainingText) -> dict[str, float]:
    """The same metrics for the people's own replies (BLEU/NIST against themselves left out)."""
    metrics = reply_metrics([c.reference for c in contexts], contexts, training)
    for key in ("bleu2", "bleu4", "nist2", "nist4", "empty", "fallback"):
        metrics.pop(key)
    return metrics


def generate_replies(
    generator, contexts: Sequence[ReplyContext], seed: int, fallback_reply: str, batch_size: int = 16
) -> tuple[list[str], int]:
    """The generator's reply to each context, as the bot answers: an empty reply is retried once, then the
    fallback. Returns the replies and how many were empty at the first try."""
    import torch

    torch.manual_seed(seed)
    replies: list[str] = []
    for start in range(0, len(contexts), batch_size):
        batch = [list(c.history) for c in contexts[start : start + batch_size]]
        replies += generator.generate_batch_sync(batch)
    empty = [i for i, r in enumerate(replies) if not r.strip()]
    if empty:
        again = generator.generate_batch_sync([list(contexts[i].history) for i in empty])
        for i, reply in zip(empty, again, strict=True):
            replies[i] = reply if reply.strip() else fallback_reply
    return replies, len(empty)


def check_targets(metrics: dict[str, float]) -> dict[str, bool]:
    ok = {}
    for key, (op, threshold) in TARGETS.items():
        value = metrics[key]
        ok[key] = value >= threshold if op == ">=" else value <= threshold
    return ok


def evaluate(
    model: str,
    settings,
    quantizations: Sequence[str] = ("none", "int8"),
    per_conversation: int = 2,
    seed: int = 0,
    threads: int = 0,
    conversation_limit: int | None = None,
    bits_per_byte: bool = True,
    max_turns: int = 10,
    progress=None,
) -> dict:
    """The full report for `model` (`demo`, a directory, or a hub id) on chitchat-dataset's held-out part."""
    from bot.config import ModelConfig
    from bot.generation.backends.torch import TorchGenerator
    from bot.models.corpus import load_chitchat, split_conversations
    from bot.models.loader import load_model
    from bot.models.trainer import heldout_score

    say = progress or (lambda message: None)
    conversations = load_chitchat()
    heldout = split_conversations(conversations, "heldout")[:conversation_limit]
    training = TrainingText.of(split_conversations(conversations, "train"))
    contexts = reply_contexts(heldout, per_conversation, seed, max_turns)
    report: dict = {
        "model": model,
        "data": {
            "heldout_conversations": len(heldout),
            "contexts": len(contexts),
            "per_conversation": per_conversation,
            "seed": seed,
        },
        "sampling": {k: v for k, v in settings.model_dump().items() if k not in ("fallback_reply",)},
        "human": human_metrics(contexts, training),
        "runs": {},
    }
    for quantization in quantizations:
        label = "int8" if quantization == "int8" else "fp32"
        say(f"loading {model} ({label.upper()})")
        loaded = load_model(ModelConfig(name=model, quantization=quantization, threads=threads))
        generator = TorchGenerator(loaded, settings)
        say(f"{label.upper()}: replying to {len(contexts)} held-out contexts")
        started = time.perf_counter()
        replies, first_empty = generate_replies(generator, contexts, seed, settings.fallback_reply)
        seconds = time.perf_counter() - started
        metrics = reply_metrics(replies, contexts, training, settings.fallback_reply, first_empty)
        run: dict = {"metrics": metrics, "generation_seconds": round(seconds, 1)}
        if bits_per_byte:
            say(f"{label.upper()}: bits per byte on {len(heldout)} held-out conversations")
            score = heldout_score(loaded.model, loaded.tokenizer, heldout, loaded.info.context)
            metrics["bits_per_byte"] = score.bits_per_byte
            metrics["loss"] = score.loss
        run["targets"] = check_targets(metrics)
        run["examples"] = [
            {"message": c.history[-1], "reference": c.reference, "reply": r}
            for c, r in list(zip(contexts, replies, strict=True))[:8]
        ]
        report["runs"][label] = run
        report.setdefault("parameters", loaded.info.parameters)
        report.setdefault("context", loaded.info.context)
        _close(generator)
    return report


def _close(generator) -> None:
    generator.executor.shutdown(wait=False, cancel_futures=True)


_ROWS = [
    ("bits_per_byte", "bits per byte", "{:.3f}"),
    ("bleu2", "BLEU-2", "{:.2%}"),
    ("bleu4", "BLEU-4", "{:.2%}"),
    ("nist2", "NIST-2", "{:.3f}"),
    ("nist4", "NIST-4", "{:.3f}"),
    ("entropy4", "Entropy-4", "{:.2f}"),
    ("dist1", "Dist-1", "{:.3f}"),
    ("dist2", "Dist-2", "{:.3f}"),
    ("avg_words", "avg words", "{:.1f}"),
    ("verbatim_copy", "verbatim copy", "{:.1%}"),
    ("real_words", "real words", "{:.1%}"),
    ("empty", "empty (1st try)", "{:.1%}"),
    ("fallback", "fallback", "{:.1%}"),
    ("repeat_previous", "repeats previous", "{:.1%}"),
]


def render(report: dict) -> str:
    """A short table: one column per run (FP32, INT8) and the people's own replies."""
    columns = [(name.upper(), run["metrics"], run.get("targets", {})) for name, run in report["runs"].items()]
    columns.append(("people", report["human"], {}))
    data = report["data"]
    lines = [
        f"{report['model']}: {data['contexts']} replies on {data['heldout_conversations']} held-out "
        f"chitchat-dataset conversations (seed {data['seed']})",
        f"{'metric':<18}" + "".join(f"{name:>12}" for name, _, _ in columns),
    ]
    for key, label, fmt in _ROWS:
        if not any(key in m for _, m, _ in columns):
            continue
        cells = []
        for _, metrics, targets in columns:
            cell = fmt.format(metrics[key]) if key in metrics else "-"
            if key in targets and not targets[key]:
                cell += "!"
            cells.append(f"{cell:>12}")
        lines.append(f"{label:<18}" + "".join(cells))
    if any(not all(t.values()) for _, _, t in columns if t):
        lines.append("! misses the demo model's target (docs/benchmarks.md)")
    return "\n".join(lines)


def heldout_sequences(tokenizer, context: int, limit: int | None = 64) -> list[list[int]]:
    """The first `limit` held-out conversations as token ids (turns joined by EOS), each cut to `context`."""
    from bot.models.corpus import load_chitchat, split_conversations
    from bot.models.trainer import encode_conversations

    heldout = split_conversations(load_chitchat(), "heldout")[:limit]
    return [ids[:context] for ids, _ in encode_conversations(tokenizer, heldout) if len(ids) >= 2]


def compare(fp32_model, int8_model, sequences: Iterable[list[int]]) -> dict:
    """Perplexity of both models on `sequences` and how often their most likely next token is the same."""
    import torch
    import torch.nn.functional as F

    nll = {"fp32": 0.0, "int8": 0.0}
    positions = agree = 0
    with torch.inference_mode():
        for ids in sequences:
            inputs = torch.tensor([ids])
            targets = inputs[0, 1:]
            logits = {}
            for name, model in (("fp32", fp32_model), ("int8", int8_model)):
                logits[name] = model(inputs).logits[0, :-1].float()
                nll[name] += F.cross_entropy(logits[name], targets, reduction="sum").item()
            agree += int((logits["fp32"].argmax(-1) == logits["int8"].argmax(-1)).sum())
            positions += len(targets)
    if not positions:
        raise ValueError("no held-out text to score")
    ppl_fp32 = math.exp(nll["fp32"] / positions)
    ppl_int8 = math.exp(nll["int8"] / positions)
    return {
        "positions": positions,
        "perplexity_fp32": ppl_fp32,
        "perplexity_int8": ppl_int8,
        "perplexity_change": ppl_int8 / ppl_fp32 - 1,
        "same_next_token": agree / positions,
    }
