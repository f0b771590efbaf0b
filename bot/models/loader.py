"""Loading a DialoGPT model and tokenizer: from the Hugging Face hub, a local directory, or the demo model."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from bot.config import DEMO_MODEL, ModelConfig
from bot.core.generator import ModelInfo
from bot.errors import ConfigError, ModelLoadError, first_line
from bot.models.prequantized import is_prequantized, load_prequantized
from bot.models.quantize import count_projections, quantize_int8

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo


def resolve_source(name: str) -> str:
    """The local directory or hub id to load for a configured model name (builds the demo model if needed)."""
    if name == DEMO_MODEL:
        from bot.models.demo import ensure_demo_model

        return str(ensure_demo_model())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model.name: {name} is a path but holds no model (config.json missing)")
        return str(path)
    return name


def _from_pretrained(source: str, local_files_only: bool):
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModelForCausalLM.from_pretrained(
        source, local_files_only=local_files_only, dtype=torch.float32
    )
    return tokenizer, model


def _tokenizer_and_context(source: str, local_files_only: bool):
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    return tokenizer, model_context(AutoConfig.from_pretrained(source, local_files_only=local_files_only))


def model_context(model_config) -> int:
    """The model's context in tokens (GPT-2 calls it `n_positions`)."""
    return int(getattr(model_config, "n_positions", None) or model_config.max_position_embeddings)


def about_to_download(source: str) -> None:
    """Before fetching `source` from the hub: refuse at once when HF_HUB_OFFLINE is set, else say so."""
    if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0"):
        raise ModelLoadError(
            f"model {source!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"use --model {DEMO_MODEL} for the offline demo model"
        )
    logger.warning("downloading %s from the Hugging Face hub (first use)", source)


def _load_pretrained(source: str, load=_from_pretrained):
    """`load(source, local_files_only)`, local files first, downloading only when allowed and needed."""
    if Path(source).is_dir():
        return load(source, local_files_only=True)
    try:  # Once downloaded, a hub model loads with no network at all.
        return load(source, local_files_only=True)
    except OSError:
        pass
    about_to_download(source)
    try:
        return load(source, local_files_only=False)
    except OSError as exc:
        reason = first_line(exc)
        raise ModelLoadError(
            f"could not download model {source!r} from the Hugging Face hub ({reason}); "
            f"use --model {DEMO_MODEL} for the offline demo model"
        ) from None


def require_eos(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"model {name!r}: its tokenizer has no EOS token, which DialoGPT prompts need")


def quiet_transformers() -> None:
    """transformers logs errors only, without progress bars, and through the bot's log handler: its own
    handler would print them unformatted (not JSON) and without the secrets blotted out."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


def load_tokenizer(config: ModelConfig) -> tuple[PreTrainedTokenizerBase, int]:
    """The tokenizer and context of the configured model, without its weights: all that a client of a remote
    server running the model needs (the `openai` backend)."""
    quiet_transformers()
    tokenizer, context = _load_pretrained(resolve_source(config.name), _tokenizer_and_context)
    require_eos(tokenizer, config.name)
    return tokenizer, context


def load_model(config: ModelConfig) -> LoadedModel:
    """Load, optionally quantize, and describe the configured model. Slow: call it before serving.

    This is the `torch` backend, and the `ipex` one when `config.backend` says so.
    """
    quiet_transformers()
    if config.threads:
        torch.set_num_threads(config.threads)
    source = resolve_source(config.name)
    prequantized = is_prequantized(source)
    if prequantized:
        if config.quantization != "int8":
            raise ConfigError(f"model.quantization: none, but {source} holds a pre-quantized INT8 model")
        tokenizer, model, parameters = load_prequantized(source)
    else:
        tokenizer, model = _load_pretrained(source)
        parameters = sum(p.numel() for p in model.parameters())
    require_eos(tokenizer, config.name)
    model.eval()
    if config.backend == "ipex":
        if prequantized:
            raise ConfigError(
                f"model.backend: ipex quantizes FP32 models; {source} is pre-quantized (pick the FP32 one)"
            )
        from bot.generation.backends.ipex import optimize_with_ipex

        model, projections = optimize_with_ipex(model, int8=config.quantization == "int8")
    elif config.quantization == "int8" and not prequantized:
        quantize_int8(model)
    if config.backend != "ipex":
        projections = count_projections(model)
    info = ModelInfo(
        name=config.name,
        source=source,
        quantization=config.quantization,
        backend=config.backend if config.backend == "ipex" else "torch",
        parameters=parameters,
        context=model_context(model.config),
        projections=projections,
    )
    logger.info("model ready: %s", info.summary())
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)
