"""Training a GPT-2-family causal language model on conversations in DialoGPT's format.

Used to build the demo model from scratch; the same loop fine-tunes a pretrained DialoGPT on an admin's own
conversations (pass the loaded model and its tokenizer). Seeded, single-process, CPU-friendly.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from bot.prompt import encode_turn

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass(frozen=True, slots=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    max_length: int = 128
    seed: int = 0
    pack: bool = False
    """Pack dialogs back to back into blocks of `max_length` tokens instead of one padded dialog per row.

    Packing trains every position up to `max_length` and teaches the model to answer the last turn after
    unrelated earlier ones, as a chat prompt with history looks; it also wastes no compute on padding.
    """
    threads: int = 0
    """torch threads while training; 0 keeps the current setting. Tiny models train fastest on one."""


def dialog_ids(tokenizer: PreTrainedTokenizerBase, dialog: Sequence[str], max_length: int) -> list[int]:
    """`turn<eos>turn<eos>...` token ids, as DialoGPT was trained, cut to `max_length`."""
    eos = tokenizer.eos_token_id
    ids = [token for turn in dialog for token in [*encode_turn(tokenizer, turn), eos]]
    return ids[:max_length]


def _pack(examples: list[list[int]], block: int, rng: random.Random) -> list[list[int]]:
    """The examples in a random order, concatenated and cut into blocks of `block` tokens."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    stream = [token for i in order for token in examples[i]]
    return [stream[start : start + block] for start in range(0, len(stream) - 1, block)]


def _batches(examples: list[list[int]], batch_size: int, rng: random.Random, pad_id: int):
    # Batch dialogs of similar length together (random tie-breaks, shuffled batch order): most dialogs are
    # short, and padding each batch to its longest member would multiply the compute.
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i]), rng.random()))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    for batch in batches:
        chunk = [torch.tensor(examples[i], dtype=torch.long) for i in batch]
        input_ids = pad_sequence(chunk, batch_first=True, padding_value=pad_id)
        lengths = torch.tensor([len(c) for c in chunk])
        mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
        yield input_ids, mask, labels


def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dialogs: Sequence[Sequence[str]],
    config: TrainConfig,
    progress: bool = True,
) -> list[float]:
    """Train `model` in place on `dialogs`; return the mean loss of each epoch."""
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(model, tokenizer, dialogs, config, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model, tokenizer, dialogs, config: TrainConfig, progress: bool) -> list[float]:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    examples = [ids for d in dialogs if len(ids := dialog_ids(tokenizer, d, config.max_length)) >= 2]
    if not examples:
        raise ValueError("no training examples")
    rows = len(_pack(examples, config.max_length, rng)) if config.pack else len(examples)
    steps = config.epochs * math.ceil(rows / config.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = get_linear_schedule_with_warmup(optimizer, int(steps * config.warmup_fraction), steps)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    epoch_losses: list[float] = []
    with tqdm(total=steps, desc="training", unit="step", disable=not progress) as bar:
        for epoch in range(config.epochs):
            total = 0.0
            count = 0
            rows_this_epoch = _pack(examples, config.max_length, rng) if config.pack else examples
            for input_ids, mask, labels in _batches(rows_this_epoch, config.batch_size, rng, pad_id):
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                total += loss.item()
                count += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            epoch_losses.append(total / count)
            logger.debug("epoch %d: mean loss %.3f", epoch + 1, epoch_losses[-1])
    model.eval()
    return epoch_losses
