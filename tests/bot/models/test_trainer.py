"""The training loop: packed rows without padding waste, what is learned, scoring held-out text."""

import math
import random

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from bot.models.corpus import Conversation, load_chitchat, split_conversations
from bot.models.demo import DemoRecipe, new_model
from bot.models.trainer import (
    IGNORE_INDEX,
    TrainConfig,
    _learned_loss,
    encode_conversations,
    heldout_score,
    pack_rows,
    train_causal_lm,
)
from tests.conftest import TINY_RECIPE_KWARGS


def test_rows_are_packed_end_to_end_and_only_the_last_is_padded():
    encoded = [([1, 2, 0], [True] * 3), ([3, 4, 5, 0], [False, False, False, False]), ([6, 0], [True, True])]
    inputs, targets = pack_rows(encoded, block_size=4, eos_id=0, rng=random.Random(0))
    stream = inputs.flatten().tolist()
    assert inputs.shape == targets.shape == (3, 4)  # an EOS and 9 tokens, predicted in rows of 4, 4 and 1
    assert stream[0] == 0
    assert sorted(stream[1:10]) == sorted([1, 2, 0, 3, 4, 5, 0, 6, 0])
    flat_targets = targets.flatten().tolist()
    # Targets are the next token, except where it is not learned (the second conversation) or padding.
    learned = [t for t in flat_targets if t != IGNORE_INDEX]
    assert sorted(learned) == sorted([1, 2, 0, 6, 0])
    assert flat_targets[-3:] == [IGNORE_INDEX] * 3


def test_training_is_seeded_and_lowers_the_held_out_loss(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversations = split_conversations(load_chitchat(), "train")[1000:1060]
    heldout = split_conversations(load_chitchat(), "heldout")[:10]
    config = TrainConfig(steps=12, batch_size=4, block_size=128, learning_rate=3e-3, threads=1)
    recipe = DemoRecipe(**TINY_RECIPE_KWARGS, train=config)
    models = [new_model(recipe, tokenizer) for _ in range(2)]  # the same seeded random start
    before = heldout_score(models[0], tokenizer, heldout)
    results = [train_causal_lm(m, tokenizer, conversations, config, progress=False) for m in models]
    assert results[0].steps == 12 and results[0].tokens == 12 * 4 * 128
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True))
    after = heldout_score(models[0], tokenizer, heldout)
    assert after.loss < before.loss
    assert after.bits_per_byte < before.bits_per_byte


def test_epochs_checkpoint_and_a_deadline_stops_early(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    conversations = split_conversations(load_chitchat(), "train")[:6]
    ends = []
    config = TrainConfig(epochs=2, batch_size=2, block_size=64, threads=1)
    result = train_causal_lm(
        model, tokenizer, conversations, config, progress=False, on_epoch_end=lambda e, r: ends.append(e)
    )
    assert ends == [1, 2] and len(result.losses) == 2 and math.isclose(result.epochs, 2.0)
    stopped = train_causal_lm(model, tokenizer, conversations, config, progress=False, deadline=0.0)
    assert stopped.stopped == "time" and stopped.steps == 1


def test_bits_per_byte_scores_every_token_once_and_windows_long_conversations(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    conversation = Conversation(
        "k", ("Hello there!", "Hi, how are you doing today?", "Fine, thanks."), ("a", "b", "a")
    )
    ids, _ = encode_conversations(tokenizer, [conversation])[0]
    ids = [tokenizer.eos_token_id, *ids]
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, :-1]
        nll = float(F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))
    whole = heldout_score(model, tokenizer, [conversation], context=1024)
    assert whole.tokens == len(ids) - 1
    text_bytes = sum(len(t.encode()) + 1 for t in conversation.turns)
    assert whole.bytes == text_bytes
    assert math.isclose(whole.bits_per_byte, nll / math.log(2) / text_bytes, rel_tol=1e-5)
    windowed = heldout_score(model, tokenizer, [conversation], context=8)
    assert windowed.tokens == whole.tokens  # each token scored once, with less history before it
    assert windowed.loss > whole.loss * 0.8


def test_the_loss_over_learned_positions_is_the_full_cross_entropy(tiny_model_dir):
    """The output layer runs only where a target is learned; the loss and gradients are the same."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    inputs = torch.randint(0, model.config.vocab_size, (2, 16))
    targets = torch.randint(0, model.config.vocab_size, (2, 16))
    targets[0, :9] = IGNORE_INDEX  # context, not learned
    targets[1, 12:] = IGNORE_INDEX
    fast = _learned_loss(model, inputs, targets)
    fast.backward()
    fast_grad = model.transformer.wte.weight.grad.clone()
    model.zero_grad()
    logits = model(input_ids=inputs).logits
    full = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    full.backward()
    assert torch.allclose(fast, full, atol=1e-6)
    assert torch.allclose(fast_grad, model.transformer.wte.weight.grad, atol=1e-6)
    nothing = torch.full_like(targets, IGNORE_INDEX)
    assert _learned_loss(model, inputs, nothing).item() == 0.0  # a row with nothing learned adds nothing
