"""The `ctranslate2` backend: the model converted to CTranslate2 on first use, cached, and batched by it.

CTranslate2 runs GPT-2 with its own fused CPU kernels, INT8 included, so a conversion pays off from the first
reply. Converting DialoGPT-medium takes a while and needs the FP32 model in memory, so it happens once per
(source model, quantization): the result is cached under `cache_dir()/ctranslate2/<key>`
(`bot.models.converted`), with the tokenizer and what `ModelInfo` reports, and later starts load only the
converted directory. The key changes with the source files, so a retrained or updated model is converted
again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import ctranslate2
from ctranslate2.converters import TransformersConverter
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bot.config import Config, GenerationConfig, cache_dir
from bot.core.generator import ModelInfo, ProjectionCounts
from bot.errors import ModelLoadError
from bot.generation.local import LocalGenerator
from bot.models import converted
from bot.models.converted import MARKER, local_snapshot, reason, write_marker
from bot.models.loader import model_context, quiet_transformers, require_eos, resolve_source
from bot.models.quantize import count_projections

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bump when the layout of a converted directory changes: every cached conversion is redone."""
_COMPUTE_TYPES = {"int8": "int8", "none": "float32"}


class CTranslate2Generator(LocalGenerator):
    """Generates with a `ctranslate2.Generator`, which takes unpadded prompts of any lengths in one batch."""

    def __init__(
        self,
        generator: ctranslate2.Generator,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        settings: GenerationConfig,
        stop_at_eos: bool = True,
    ) -> None:
        super().__init__(info, tokenizer, settings, stop_at_eos)
        self._generator = generator

    def _generate_ids(self, prompts: list[list[int]], abandoned: Callable[[], bool]) -> list[list[int]]:
        """The torch backend's decoding settings, through `generate_batch`.

        CTranslate2 takes token strings, not ids; they are mapped back through the converted vocabulary (the
        tokenizer's, id for id), so a user's literal "<|endoftext|>", already split into plain BPE pieces by
        the shared prompt code, stays those pieces and never becomes EOS.

        One difference remains: CTranslate2 applies `repetition_penalty` and `no_repeat_ngram_size` to the
        tokens of its decoding loop (the reply, plus the part of a longer prompt past the batch's shortest
        one, which it feeds token by token), transformers to the whole prompt as well. Greedy replies are
        identical to torch's with both off, and usually, not always, with them on.
        """
        s = self._settings
        results = self._generator.generate_batch(
            [self._tokenizer.convert_ids_to_tokens(p) for p in prompts],
            max_length=s.max_new_tokens,
            min_length=0 if self._stop_at_eos else s.max_new_tokens,
            include_prompt_in_result=False,
            end_token=[self._eos_id],
            return_end_token=False,
            repetition_penalty=s.repetition_penalty,
            no_repeat_ngram_size=s.no_repeat_ngram_size,
            callback=lambda _step: abandoned(),  # called after each token; True stops that row
            **sampling_options(s),
        )
        return [list(result.sequences_ids[0]) for result in results]


def sampling_options(s: GenerationConfig) -> dict:
    """`generate_batch`'s sampling arguments for our settings: top-k 1 is greedy, top-k 0 the whole vocabulary
    (as in transformers)."""
    if not s.do_sample:
        return {"sampling_topk": 1}
    return {"sampling_topk": s.top_k, "sampling_topp": s.top_p, "sampling_temperature": s.temperature}


def load_ctranslate2(config: Config, stop_at_eos: bool = True) -> CTranslate2Generator:
    """Convert the configured model if it is not cached yet (slow, once), then load the converted one."""
    quiet_transformers()
    quantization = config.model.quantization
    source = resolve_source(config.model.name)
    local_dir, identity = local_snapshot(source, "ctranslate2")
    model_dir = ensure_converted(local_dir, identity, quantization)
    meta = json.loads((model_dir / MARKER).read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    generator = ctranslate2.Generator(
        str(model_dir),
        device="cpu",
        compute_type=_COMPUTE_TYPES[quantization],
        # CTranslate2's own default for 0 is 4 threads, not one per core as `model.threads = 0` promises.
        intra_threads=config.model.threads or os.cpu_count() or 0,
        inter_threads=1,  # one generation at a time: the scheduler batches, all threads work on each batch
    )
    total = int(meta["projections"])
    info = ModelInfo(
        name=config.model.name,
        source=source,
        quantization=quantization,
        backend="ctranslate2",
        parameters=int(meta["parameters"]),
        context=int(meta["context"]),
        projections=ProjectionCounts(int8=total if quantization == "int8" else 0, total=total),
    )
    logger.info("model ready: %s", info.summary())
    return CTranslate2Generator(generator, tokenizer, info, config.generation, stop_at_eos=stop_at_eos)


def cache_key(local_dir: Path, identity: str, quantization: str) -> str:
    """Stable for one source model and quantization; changes when any of the source's files does."""
    # A model converted by a newer CTranslate2 may not load in an older one.
    major = ctranslate2.__version__.split(".")[0]
    return converted.cache_key(local_dir, identity, quantization, format=FORMAT_VERSION, ctranslate2=major)


def ensure_converted(local_dir: Path, identity: str, quantization: str, root: Path | None = None) -> Path:
    """The converted model's directory, converting `local_dir` first if it is not in the cache."""
    root = root or cache_dir() / "ctranslate2"
    key = cache_key(local_dir, identity, quantization)
    label = "int8" if quantization == "int8" else "float32"
    return converted.ensure_built(
        root,
        key,
        lambda out: convert_model(local_dir, out, quantization),
        doing=f"converting {local_dir} to CTranslate2 {label}",
        done=f"converted {local_dir}",
    )


def convert_model(local_dir: Path, out: Path, quantization: str) -> None:
    """Convert the transformers model in `local_dir` to `out`, with its tokenizer and `dialobot.json`."""
    converter = _CountingConverter(str(local_dir))
    try:
        converter.convert(str(out), quantization="int8" if quantization == "int8" else None)
    except ModelLoadError:
        raise
    except Exception as exc:  # missing or unreadable files, invalid configs, unsupported architectures
        logger.debug("converting %s failed", local_dir, exc_info=True)
        raise ModelLoadError(
            f"model.name: could not convert {local_dir} to CTranslate2: {reason(exc)}"
        ) from None
    meta = {
        **converter.facts,
        "format": FORMAT_VERSION,
        "source": str(local_dir),
        "quantization": quantization,
    }
    try:
        converter.tokenizer.save_pretrained(out)
    except OSError as exc:  # a full disk, a read-only cache directory
        raise ModelLoadError(
            f"could not write the CTranslate2 model to {out}: {exc.strerror or exc}"
        ) from None
    write_marker(out, meta, "CTranslate2")


class _CountingConverter(TransformersConverter):
    """Notes what `ModelInfo` needs from the model and tokenizer the conversion loads anyway."""

    facts: dict
    tokenizer: PreTrainedTokenizerBase

    def load_model(self, model_class, model_name_or_path, **kwargs):
        model = super().load_model(model_class, model_name_or_path, **kwargs)
        config = model.config
        self.facts = {
            "name": getattr(config, "_name_or_path", "") or model_name_or_path,
            "parameters": sum(p.numel() for p in model.parameters()),
            "context": model_context(config),
            # CTranslate2 INT8 quantizes every projection, GPT-2's Conv1D ones included.
            "projections": count_projections(model).total,
        }
        return model

    def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
        self.tokenizer = super().load_tokenizer(tokenizer_class, model_name_or_path, **kwargs)
        require_eos(self.tokenizer, model_name_or_path)
        return self.tokenizer
