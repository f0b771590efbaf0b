"""The `torch` backend: a transformers model in this process, FP32 or torch dynamic INT8 (and IPEX's, which
optimizes the same model: `bot.generation.backends.ipex`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from bot.config import GenerationConfig
from bot.generation.local import LocalGenerator
from bot.models.loader import LoadedModel


class TorchGenerator(LocalGenerator):
    """Generates with a transformers model (FP32, torch INT8, or IPEX-optimized)."""

    def __init__(self, loaded: LoadedModel, settings: GenerationConfig, stop_at_eos: bool = True) -> None:
        super().__init__(loaded.info, loaded.tokenizer, settings, stop_at_eos)
        self._model = loaded.model

    def _generate_ids(self, prompts: list[list[int]], abandoned: Callable[[], bool]) -> list[list[int]]:
        """One padded batch through `model.generate`.

        Prompts are left-padded (GPT-2 continues from the last position, so every row must end there) and the
        attention mask hides the padding; transformers derives each row's positions from the mask, so a row's
        reply does not depend on the length of its neighbours.
        """
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
                stopping_criteria=StoppingCriteriaList([_StopWhen(abandoned)]),
            )
        # Rows that finished early are filled with EOS, which `decode` cuts off.
        return [row[width:].tolist() for row in output]


class _StopWhen(StoppingCriteria):
    """Stops every row of a `generate` call once `abandoned()` is true (checked after each token)."""

    def __init__(self, abandoned: Callable[[], bool]) -> None:
        self._abandoned = abandoned

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self._abandoned(), dtype=torch.bool)
