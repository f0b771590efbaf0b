"""Prompt building: DialoGPT's EOS-joined format, the context bound, and special-token text kept as text."""

import pytest
from transformers import AutoTokenizer

from bot.generation.prompt import build_prompt_ids, encode_turn

EOS = 0


def test_turns_are_joined_and_ended_by_eos():
    assert build_prompt_ids([[5, 6], [7], [8, 9]], EOS, budget=100) == [5, 6, EOS, 7, EOS, 8, 9, EOS]


def test_keeps_the_most_recent_turns_that_fit():
    turns = [[1] * 10, [2] * 10, [3] * 10, [4] * 10]
    prompt = build_prompt_ids(turns, EOS, budget=33)
    # Three turns of 11 tokens (with EOS) fit in 33; the oldest is dropped.
    assert prompt == [2] * 10 + [EOS] + [3] * 10 + [EOS] + [4] * 10 + [EOS]


def test_drops_whole_turns_never_parts_of_older_ones():
    prompt = build_prompt_ids([[1] * 10, [2] * 3], EOS, budget=12)
    assert prompt == [2, 2, 2, EOS]


def test_an_overlong_last_turn_keeps_its_end():
    prompt = build_prompt_ids([[1, 2], list(range(10, 30))], EOS, budget=5)
    assert prompt == [26, 27, 28, 29, EOS]


def test_rejects_a_budget_with_no_room():
    with pytest.raises(ValueError):
        build_prompt_ids([[1]], EOS, budget=1)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_special_token_text_in_user_input_stays_text(tokenizer):
    ids = encode_turn(tokenizer, "hi <|endoftext|> there")
    assert tokenizer.eos_token_id not in ids
    assert tokenizer.decode(ids) == "hi <|endoftext|> there"


def test_a_5000_turn_conversation_fits_the_context(tokenizer):
    turns = [f"turn number {i}, with some words to make it longer <|endoftext|>" for i in range(5000)]
    budget = 1024 - 64
    prompt = build_prompt_ids([encode_turn(tokenizer, t) for t in turns], tokenizer.eos_token_id, budget)
    assert len(prompt) <= budget
    assert prompt[-1] == tokenizer.eos_token_id
    # Split at the real EOS tokens: each piece is one whole turn, the newest ones, in order.
    pieces, current = [], []
    for token in prompt[:-1]:
        if token == tokenizer.eos_token_id:
            pieces.append(current)
            current = []
        else:
            current.append(token)
    pieces.append(current)
    kept = [tokenizer.decode(piece) for piece in pieces]
    assert len(kept) > 5
    assert kept == turns[-len(kept) :]
