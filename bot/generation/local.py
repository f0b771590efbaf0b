"""Reply generation as a service behind a small protocol, run off the event loop.

The engine only knows `Generator.generate(turns) -> str`, and the batching scheduler only knows
`LocalGenerator.generate_batch_sync`; which runtime answers (torch, IPEX, CTranslate2 or a remote server, see
`bot.generation.backends`) stays behind them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bot.config import GenerationConfig
from bot.core.generator import Generator, ModelInfo
from bot.generation.prompt import PromptBuilder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["Generator", "LocalGenerator"]

logger = logging.getLogger(__name__)


class LocalGenerator:
    """A model run in this process, on one dedicated thread: prompt building and decoding shared by backends.

    One thread is enough: the runtimes (torch, CTranslate2) spread each forward pass over all cores
    themselves, and release the GIL while they compute, so the event loop stays responsive. Subclasses only
    turn unpadded prompt ids into reply ids (`_generate_ids`).
    """

    batches_itself = False
    """True for a runtime that batches concurrent `generate` calls itself (continuous batching): the
    cross-channel scheduler then leaves it as it is."""

    def __init__(
        self,
        info: ModelInfo,
        tokenizer: PreTrainedTokenizerBase,
        settings: GenerationConfig,
        stop_at_eos: bool = True,
    ) -> None:
        self.info = info
        # The benchmark turns this off so that every reply has exactly `max_new_tokens` tokens.
        self._stop_at_eos = stop_at_eos
        self._tokenizer = tokenizer
        self._settings = settings
        self._prompt = PromptBuilder(tokenizer, info.context, settings.max_new_tokens)
        self._eos_id = self._prompt.eos_id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    def ignore_eos(self) -> None:
        """For benchmarks: every reply gets exactly `max_new_tokens` tokens; runs compare like with like."""
        self._stop_at_eos = False

    def prompt_ids(self, turns: Sequence[str]) -> list[int]:
        """The token ids fed to the model for `turns`."""
        return self._prompt.ids(turns)

    async def generate(self, turns: Sequence[str]) -> str:
        loop = asyncio.get_running_loop()
        abandoned = threading.Event()
        try:
            replies = await loop.run_in_executor(
                self._executor, self.generate_batch_sync, [list(turns)], abandoned.is_set
            )
        except asyncio.CancelledError:  # timed out or shut down: the model stops at its next token
            abandoned.set()
            raise
        return replies[0]

    def generate_sync(self, turns: Sequence[str]) -> str:
        """Blocking generation of one reply: the batch-of-one case of `generate_batch_sync`."""
        return self.generate_batch_sync([turns])[0]

    def generate_batch_sync(
        self, conversations: Sequence[Sequence[str]], abandoned: Callable[[], bool] = lambda: False
    ) -> list[str]:
        """Blocking generation of one reply per conversation in one batch; each row samples on its own.

        `abandoned()` is asked after every token: once nobody waits for the replies any more (a generation
        timeout, a shutdown), decoding stops there and the thread is free for the next request, instead of
        finishing replies nobody will read. The replies are then cut short, and thrown away by the caller.
        """
        prompts = [self.prompt_ids(turns) for turns in conversations]
        return [self.decode(ids) for ids in self._generate_ids(prompts, abandoned)]

    def decode(self, ids: Sequence[int]) -> str:
        """A reply's text: up to the first EOS (the end of the model's turn), special tokens dropped."""
        ids = list(ids)
        if self._eos_id in ids:
            ids = ids[: ids.index(self._eos_id)]
        return self._tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _generate_ids(self, prompts: list[list[int]], abandoned: Callable[[], bool]) -> list[list[int]]:
        """The new token ids for each prompt (may run past an EOS; `decode` cuts there); stop early once
        `abandoned()` is true."""
        raise NotImplementedError

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The generation thread: whoever batches requests runs `generate_batch_sync` on it."""
        return self._executor

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
