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

from bot.generation.prompt import encode_turn

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
    context_turns: int = 0
    """Put each dialog behind 0 to this many turns of other random dialogs, drawn afresh every epoch.

    Short dialogs alone teach a model to answer only at the start of a conversation; in a chat the prompt
    carries earlier turns. Fresh unrelated context each epoch teaches it to answer the last turn whatever came
    before, and trains the positions that a prompt with history reaches.
    """
    threads: int = 0
    """torch threads while training; 0 keeps the current setting. Tiny models train fastest on one."""


def turn_ids(tokenizer: PreTrainedTokenizerBase, dialog: Sequence[str]) -> list[list[int]]:
    """Each turn's token ids followed by EOS: joined, they are DialoGPT's `turn<eos>turn<eos>...`."""
    return [[*encode_turn(tokenizer, turn), tokenizer.eos_token_id] for turn in dialog]


def _examples(dialogs: list[list[list[int]]], config: TrainConfig, rng: random.Random) -> list[list[int]]:
    """One epoch's rows: each dialog behind fresh random context turns, cut to `max_length` from the left."""
    rows = []
    for dialog in dialogs:
        turns = list(dialog)
        wanted = rng.randint(0, config.context_turns)
        context: list[list[int]] = []
        while len(context) < wanted:
            context += rng.choice(dialogs)
        turns = context[len(context) - wanted :] + turns
        # Keep the end: the dialog itself matters more than the context in front of it.
        rows.append([token for turn in turns for token in turn][-config.max_length :])
    return rows


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
    encoded = [turns for d in dialogs if len(turns := turn_ids(tokenizer, d)) >= 1]
    if not encoded:
        raise ValueError("no training examples")
    steps = config.epochs * math.ceil(len(encoded) / config.batch_size)
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
            examples = _examples(encoded, config, rng)
            for input_ids, mask, labels in _batches(examples, config.batch_size, rng, pad_id):
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
