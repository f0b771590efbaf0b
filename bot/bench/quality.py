"""What INT8 costs in accuracy: perplexity on held-out conversations, FP32 vs INT8, and next-token agreement.

The claim to check is "minimum-to-zero accuracy loss". Both models score the same held-out conversations (the
demo model's held-out slice of chatterbot-corpus, text it never trained on), laid out exactly as the bot's
prompts are: turns joined by EOS, cut to the model's context.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from bot.generation.prompt import encode_turn
from bot.models.corpus import load_chatterbot_english, split_dialogs

logger = logging.getLogger(__name__)


def heldout_sequences(tokenizer, context: int) -> list[list[int]]:
    """Each held-out conversation as token ids (turns joined by EOS), cut to `context` tokens."""
    eos = int(tokenizer.eos_token_id)
    sequences = []
    for dialog in split_dialogs(load_chatterbot_english(), "heldout"):
        ids: list[int] = []
        for turn in dialog:
            ids += [*encode_turn(tokenizer, turn), eos]
        if len(ids) >= 2:
            sequences.append(ids[:context])
    return sequences


def compare(fp32_model, int8_model, sequences: Iterable[list[int]]) -> dict:
    """Perplexity of both models on `sequences` and how often their most likely next token is the same."""
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
