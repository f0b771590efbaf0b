"""Training a GPT-2-family causal language model on conversations in DialoGPT's format, and scoring it.

DialoGPT's layout: a conversation is `turn<eos>turn<eos>...turn<eos>`, and the model learns each next turn
from the ones before. Conversations are packed end to end into rows of `block_size` tokens, so no compute is
spent on padding; a row may start inside a conversation or hold the end of one and the start of the next,
which teaches the model to answer the last turn whatever came before it (a chat prompt carries history).

Used to build the demo model from scratch and by `dialobot train` to fine-tune a model on exported chats.
Seeded, single-process, CPU-friendly: the same data, config and thread count give the same weights.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from bot.models.corpus import Conversation

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass(frozen=True, slots=True)
class TrainConfig:
    steps: int = 0
    """Optimizer steps; 0: as many as `epochs` passes over the data take. A fixed count keeps a build's
    result independent of how fast the machine happens to be."""
    epochs: float = 1.0
    batch_size: int = 16
    """Rows per optimizer step."""
    block_size: int = 256
    """Tokens per row (at most the model's context)."""
    learning_rate: float = 3e-3
    min_lr_fraction: float = 0.1
    """The cosine schedule ends at this fraction of `learning_rate`."""
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    seed: int = 0
    threads: int = 0
    """torch threads while training; 0 keeps the current setting."""


@dataclass(slots=True)
class TrainResult:
    steps: int = 0
    planned_steps: int = 0
    epochs: float = 0.0
    tokens: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    """Mean training loss of each finished epoch (or of the part trained, when stopped early)."""
    recent_loss: float = 0.0
    """Mean training loss of the last 50 steps: where training ended up."""
    stopped: str = ""
    """Why training ended before `planned_steps`: `time` (the deadline), or empty."""


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation]
) -> list[tuple[list[int], list[bool]]]:
    """Each conversation as token ids `turn<eos>turn<eos>...` and, per token, whether it is learned (a token
    of a learned turn, except the unknown-word token)."""
    eos = int(tokenizer.eos_token_id)
    unk = tokenizer.unk_token_id
    unk = None if unk == eos else unk  # GPT-2's BPE names EOS as its unknown token; it has no unknown words
    texts = [turn for c in conversations for turn in c.turns]
    # One batched call: the fast tokenizer encodes a whole data set in seconds this way.
    encoded = (
        tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else []
    )
    out = []
    position = 0
    for conversation in conversations:
        ids: list[int] = []
        learn: list[bool] = []
        for index in range(len(conversation.turns)):
            turn = [*encoded[position], eos]
            position += 1
            flag = conversation.learn[index] if conversation.learn is not None else True
            ids += turn
            learn += [flag and token != unk for token in turn]  # never learn to write <unk>
        out.append((ids, learn))
    return out


def pack_rows(
    encoded: Sequence[tuple[list[int], list[bool]]], block_size: int, eos_id: int, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's rows: conversations in a fresh random order, packed end to end after one EOS.

    Returns inputs and targets, both (rows, block_size); targets are the next tokens, IGNORE_INDEX where a
    token is not learned or past the end of the data (only the last row is padded).
    """
    order = list(range(len(encoded)))
    rng.shuffle(order)
    stream = [eos_id]
    learn = [False]
    for index in order:
        ids, flags = encoded[index]
        stream += ids
        learn += flags
    rows = max(1, math.ceil((len(stream) - 1) / block_size))
    size = rows * block_size + 1
    tokens = torch.full((size,), eos_id, dtype=torch.long)
    tokens[: len(stream)] = torch.tensor(stream, dtype=torch.long)
    mask = torch.zeros(size, dtype=torch.bool)
    mask[: len(learn)] = torch.tensor(learn, dtype=torch.bool)
    targets = tokens.masked_fill(~mask, IGNORE_INDEX)
    index = torch.arange(rows)[:, None] * block_size + torch.arange(block_size)[None, :]
    return tokens[index], targets[index + 1]


def _lr_factor(step: int, steps: int, config: TrainConfig) -> float:
    warmup = max(1, int(steps * config.warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    floor = config.min_lr_fraction
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    config: TrainConfig,
    progress: bool = True,
    deadline: float | None = None,
    on_epoch_end: Callable[[int, TrainResult], None] | None = None,
) -> TrainResult:
    """Train `model` in place on `conversations`.

    `deadline` (a `time.monotonic()` value) stops training after the step that passes it. `on_epoch_end(epoch,
    result)` runs after each finished pass over the data (a checkpoint); a KeyboardInterrupt raised during
    training propagates with the model as the last finished step left it.
    """
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(model, tokenizer, conversations, config, progress, deadline, on_epoch_end)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model, tokenizer, conversations, config, progress, deadline, on_epoch_end) -> TrainResult:
    started = time.monotonic()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    encoded = [e for e in encode_conversations(tokenizer, conversations) if any(e[1])]
    if not encoded:
        raise ValueError("no training examples")
    eos = int(tokenizer.eos_token_id)
    block = min(config.block_size, _context(model))
    inputs, targets = pack_rows(encoded, block, eos, rng)
    steps_per_epoch = math.ceil(len(inputs) / config.batch_size)
    steps = config.steps or max(1, round(config.epochs * steps_per_epoch))
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.99),
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps, config))
    result = TrainResult(planned_steps=steps)
    model.train()
    epoch = 0
    order = torch.randperm(len(inputs))
    total = 0.0
    count = 0
    cursor = 0
    recent: collections.deque[float] = collections.deque(maxlen=50)
    try:
        with tqdm(total=steps, desc="training", unit="step", disable=not progress) as bar:
            while result.steps < steps:
                if cursor >= len(inputs):  # a pass finished: checkpoint, then repack in a new order
                    epoch += 1
                    result.losses.append(total / max(1, count))
                    total, count = 0.0, 0
                    if on_epoch_end is not None:
                        on_epoch_end(epoch, result)
                    inputs, targets = pack_rows(encoded, block, eos, rng)
                    order = torch.randperm(len(inputs))
                    cursor = 0
                batch = order[cursor : cursor + config.batch_size]
                cursor += config.batch_size
                loss = _learned_loss(model, inputs[batch], targets[batch])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                total += loss.item()
                count += 1
                recent.append(loss.item())
                result.steps += 1
                result.tokens += int(batch.numel()) * block
                result.epochs = epoch + min(cursor, len(inputs)) / len(inputs)
                bar.update(1)
                bar.set_postfix(epoch=f"{result.epochs:.2f}", loss=f"{loss.item():.3f}")
                if deadline is not None and time.monotonic() >= deadline and result.steps < steps:
                    result.stopped = "time"
                    break
        if count:
            result.losses.append(total / count)
        if cursor >= len(inputs) and on_epoch_end is not None and not result.stopped:
            on_epoch_end(epoch + 1, result)
    finally:
        model.eval()
        result.seconds = time.monotonic() - started
        result.recent_loss = sum(recent) / len(recent) if recent else 0.0
    return result


def _learned_loss(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the learned positions. The output layer runs only where a target is learned:
    with a large vocabulary it is much of a small model's work, and context turns need none of it."""
    body, head = model.base_model, model.get_output_embeddings()
    if body is model or head is None:  # no separate output layer to skip
        logits = model(input_ids=inputs).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
    everything = torch.ones_like(inputs)  # packed rows: nothing is padding
    hidden = body(input_ids=inputs, attention_mask=everything).last_hidden_state
    learned = targets != IGNORE_INDEX
    if not learned.any():
        return hidden.sum() * 0.0
    logits = head(hidden[learned])
    return F.cross_entropy(logits.float(), targets[learned])


def _context(model) -> int:
    return int(getattr(model.config, "n_positions", None) or model.config.max_position_embeddings)


@dataclass(frozen=True, slots=True)
class HeldoutScore:
    loss: float
    """Mean cross-entropy per token (nats), over the learned turns."""
    bits_per_byte: float
    """Total bits over the UTF-8 bytes of the same text (one byte per turn end): comparable across
    tokenizers, where per-token loss is not."""
    tokens: int
    bytes: int


def heldout_score(
    model, tokenizer, conversations: Sequence[Conversation], context: int | None = None
) -> HeldoutScore:
    """How well `model` predicts `conversations` it never trained on.

    Each conversation is scored on its own, after an EOS, as `turn<eos>turn<eos>...`; one longer than the
    context is scored in windows that overlap by half, every token once, each with at least half a context
    of history before it.
    """
    context = context or _context(model)
    eos = int(tokenizer.eos_token_id)
    nll = 0.0
    tokens = 0
    nbytes = 0
    stride = max(1, context // 2)
    with torch.inference_mode():
        for conversation, (ids, learn) in zip(
            conversations, encode_conversations(tokenizer, conversations), strict=True
        ):
            for index, turn in enumerate(conversation.turns):
                if conversation.learn is None or conversation.learn[index]:
                    nbytes += len(turn.encode("utf-8")) + 1
            ids = [eos, *ids]
            learn = [False, *learn]
            scored = 1  # positions below this are done
            start = 0
            while scored < len(ids):
                end = min(start + context, len(ids))
                window = torch.tensor([ids[start:end]])
                logits = model(input_ids=window).logits[0, :-1].float()
                losses = F.cross_entropy(logits, window[0, 1:], reduction="none")
                keep = torch.tensor(learn[start + 1 : end])
                keep[: max(0, scored - start - 1)] = False
                nll += float(losses[keep].sum())
                tokens += int(keep.sum())
                scored = end
                start = max(start + 1, end - context + stride) if end < len(ids) else end
    if not tokens:
        raise ValueError("no held-out text to score")
    return HeldoutScore(nll / tokens, nll / math.log(2) / nbytes, tokens, nbytes)
