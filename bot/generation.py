"""Reply generation as a service behind a small protocol, run off the event loop.

The engine only knows `Generator.generate(turns) -> str`; which runtime answers (torch FP32/INT8 here, other
backends later) stays behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import torch

from bot.config import GenerationConfig
from bot.errors import ConfigError
from bot.model_loader import LoadedModel, ModelInfo
from bot.prompt import build_prompt_ids, encode_turn

logger = logging.getLogger(__name__)


class Generator(Protocol):
    info: ModelInfo

    async def generate(self, turns: Sequence[str]) -> str:
        """The model's next turn after `turns` (oldest first; the last is the message to answer)."""

    async def close(self) -> None: ...


class TorchGenerator:
    """Generates with a transformers model on one dedicated thread.

    One thread is enough: torch spreads each forward pass over all cores itself, and releases the GIL while it
    computes, so the event loop stays responsive.
    """

    def __init__(self, loaded: LoadedModel, settings: GenerationConfig, stop_at_eos: bool = True) -> None:
        self.info = loaded.info
        # The benchmark turns this off so that every reply has exactly `max_new_tokens` tokens.
        self._stop_at_eos = stop_at_eos
        self._model = loaded.model
        self._tokenizer = loaded.tokenizer
        self._settings = settings
        self._eos_id = int(loaded.tokenizer.eos_token_id)
        self._budget = loaded.info.context - settings.max_new_tokens
        if self._budget < 2:
            raise ConfigError(
                f"generation.max_new_tokens ({settings.max_new_tokens}) leaves no room for a prompt in the "
                f"model's {loaded.info.context}-token context"
            )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    def prompt_ids(self, turns: Sequence[str]) -> list[int]:
        """The token ids fed to the model for `turns`."""
        return build_prompt_ids([encode_turn(self._tokenizer, t) for t in turns], self._eos_id, self._budget)

    async def generate(self, turns: Sequence[str]) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.generate_sync, list(turns))

    def generate_sync(self, turns: Sequence[str]) -> str:
        """Blocking generation of one reply: the batch-of-one case of `generate_batch_sync`."""
        return self.generate_batch_sync([turns])[0]

    def generate_batch_sync(self, conversations: Sequence[Sequence[str]]) -> list[str]:
        """Blocking generation of one reply per conversation, all in one padded batch.

        Prompts are left-padded (GPT-2 continues from the last position, so every row must end there) and the
        attention mask hides the padding; transformers derives each row's positions from the mask, so a row's
        reply does not depend on the length of its neighbours. Each row samples on its own.
        """
        prompts = [self.prompt_ids(turns) for turns in conversations]
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self._eos_id] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        s = self._settings
        with torch.inference_mode():
            output = self._model.generate(
                input_ids,
                attention_mask=attention_mask,
                max_new_tokens=s.max_new_tokens,
                min_new_tokens=None if self._stop_at_eos else s.max_new_tokens,
                do_sample=s.do_sample,
                top_k=s.top_k if s.do_sample else None,
                top_p=s.top_p if s.do_sample else None,
                temperature=s.temperature if s.do_sample else None,
                no_repeat_ngram_size=s.no_repeat_ngram_size,
                repetition_penalty=s.repetition_penalty,
                eos_token_id=self._eos_id,
                pad_token_id=self._eos_id,
            )
        # Rows that finished early are filled with EOS, which decoding skips.
        return [self._tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The generation thread: whoever batches requests runs `generate_batch_sync` on it."""
        return self._executor

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
