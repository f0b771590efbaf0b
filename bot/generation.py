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

    def __init__(self, loaded: LoadedModel, settings: GenerationConfig) -> None:
        self.info = loaded.info
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
        """Blocking generation; `generate` runs this on the generation thread."""
        prompt = self.prompt_ids(turns)
        s = self._settings
        input_ids = torch.tensor([prompt], dtype=torch.long)
        with torch.inference_mode():
            output = self._model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=s.max_new_tokens,
                do_sample=s.do_sample,
                top_k=s.top_k if s.do_sample else None,
                top_p=s.top_p if s.do_sample else None,
                temperature=s.temperature if s.do_sample else None,
                no_repeat_ngram_size=s.no_repeat_ngram_size,
                repetition_penalty=s.repetition_penalty,
                eos_token_id=self._eos_id,
                pad_token_id=self._eos_id,
            )
        new_tokens = output[0, len(prompt) :]
        return self._tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
