"""DialoGPT prompt building: turns joined by the EOS token, cut to fit the model's context.

DialoGPT was trained on `turn<eos>turn<eos>...turn<eos>` and answers with the next turn. GPT-2 has a fixed
number of positions (1024), so the prompt keeps only the most recent turns that leave room for the reply;
without this a long conversation crashes generation with an index error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bot.errors import ConfigError
from storage.types import Role, StoredTurn


class TextEncoder(Protocol):
    def __call__(self, text: str, **kwargs): ...


def encode_turn(tokenizer: TextEncoder, text: str) -> list[int]:
    """Token ids of one turn's text, with special-token text (`<|endoftext|>`) encoded as plain text.

    Without `split_special_tokens` a user could type the EOS token's text and forge a turn boundary.
    """
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def build_prompt_ids(turn_ids: Sequence[Sequence[int]], eos_id: int, budget: int) -> list[int]:
    """The most recent turns, each followed by EOS, in at most `budget` tokens (oldest turn first).

    The last turn (the message being answered) is always kept; if it alone is too long, its beginning is
    dropped, since its end is what the reply follows.
    """
    if budget < 2:
        raise ValueError(f"prompt budget must be at least 2 tokens, got {budget}")
    if not turn_ids:
        raise ValueError("no turns to build a prompt from")
    *earlier, last = turn_ids
    prompt = [*list(last)[-(budget - 1) :], eos_id]
    used = len(prompt)
    kept: list[list[int]] = []
    for ids in reversed(earlier):
        size = len(ids) + 1
        if used + size > budget:
            break
        kept.append([*ids, eos_id])
        used += size
    return [token for turn in reversed(kept) for token in turn] + prompt


class PromptBuilder:
    """A model's prompts: its tokenizer and EOS, within its context minus the reply's `max_new_tokens`."""

    def __init__(self, tokenizer, context: int, max_new_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.eos_id = int(tokenizer.eos_token_id)
        self.budget = context - max_new_tokens
        if self.budget < 2:
            raise ConfigError(
                f"generation.max_new_tokens ({max_new_tokens}) leaves no room for a prompt in the "
                f"model's {context}-token context"
            )

    def ids(self, turns: Sequence[str]) -> list[int]:
        """The token ids of the prompt for `turns` (oldest first; the last is the message to answer)."""
        return build_prompt_ids([encode_turn(self.tokenizer, t) for t in turns], self.eos_id, self.budget)


def prompt_turns(history: Sequence[StoredTurn], text: str) -> list[str]:
    """The conversation as alternating turns, ending with `text`.

    DialoGPT tells the speakers apart only by alternation, so user turns in a row (one left unanswered when no
    reply could be generated) are joined into one turn; a message sent again after such a failure is not
    repeated.
    """
    turns: list[str] = []
    previous_role, previous_text = None, None
    for role, turn_text in [(t.role, t.text) for t in history] + [(Role.USER, text)]:
        if role is Role.USER and previous_role is Role.USER:
            if turn_text != previous_text:
                turns[-1] = f"{turns[-1]} {turn_text}"
        else:
            turns.append(turn_text)
        previous_role, previous_text = role, turn_text
    return turns
