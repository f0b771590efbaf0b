"""Pre-quantized model directories: quantize once with `dialobot quantize`, then load the INT8 model directly.

Loading a model and quantizing it at every start-up costs time and memory: the FP32 weights (1.4 GB for
DialoGPT-medium) must be in memory before their INT8 copy exists. A pre-quantized directory holds the model's
config, its tokenizer, the INT8 state dict (packed weights, with their scales) and a marker file. Loading it
builds the model's skeleton on the `meta` device (no memory), swaps every projection for an empty dynamic INT8
Linear, and loads the state dict into that structure, so the FP32 projection weights never exist.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from bot.errors import ModelLoadError, first_line

logger = logging.getLogger(__name__)

MARKER = "dialobot-quantization.json"
WEIGHTS = "model-int8.pt"
FORMAT_VERSION = 1


def is_prequantized(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory written by `save_prequantized`."""
    return (Path(path) / MARKER).is_file()


def save_prequantized(model: PreTrainedModel, tokenizer, parameters: int, out_dir: str | os.PathLike) -> Path:
    """Write an INT8-quantized `model` and its tokenizer to `out_dir` (which must not hold anything yet).

    The directory is written under a temporary name and renamed into place, so a half-written one is never
    mistaken for a model.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelLoadError(f"--out: {out} already exists and is not an empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(model.state_dict(), tmp / WEIGHTS)
        marker = {
            "format": FORMAT_VERSION,
            "quantization": "int8",
            "scheme": "torch dynamic qint8, every projection (GPT-2 Conv1D converted to Linear)",
            "parameters": parameters,
            "torch": torch.__version__,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("saved the INT8 model to %s", out)
    return out


def _load_int8_projections(model: nn.Module, state: dict) -> None:
    """Swap each projection (Linear or GPT-2 Conv1D) of a meta-device model for its saved INT8 Linear.

    One module at a time, each saved weight dropped once it is packed: memory never holds empty placeholders
    for the whole model, nor the saved and the packed copy of more than one projection at once.
    """
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D)]
    for name, module in targets:
        if isinstance(module, Conv1D):
            in_features, out_features = module.weight.shape
        else:
            in_features, out_features = module.in_features, module.out_features
        try:
            weight, bias = state.pop(f"{name}._packed_params._packed_params")
        except KeyError:
            raise ModelLoadError(f"model.name: the saved INT8 state has no weights for {name}") from None
        for key in ("scale", "zero_point", "_packed_params.dtype"):
            state.pop(f"{name}.{key}", None)
        if tuple(weight.shape) != (out_features, in_features):
            raise ModelLoadError(
                f"model.name: saved weights for {name} have the wrong shape {tuple(weight.shape)}"
            )
        linear = DynamicQuantizedLinear(1, 1, bias_=bias is not None, dtype=torch.qint8)
        linear.set_weight_bias(weight, bias)
        linear.in_features, linear.out_features = in_features, out_features
        del weight, bias
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, linear)


def _load_int8_embeddings(model: nn.Module, state: dict) -> None:
    """Swap each embedding saved 8-bit per row (see `quantize_input_embedding`) for its quantized module."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    for name, module in targets:
        prefix = f"{name}._packed_params."
        if f"{prefix}_packed_weight" not in state:
            continue
        embedding = QuantizedEmbedding(module.num_embeddings, module.embedding_dim)
        embedding.load_state_dict(
            {k.removeprefix(f"{name}."): state.pop(k) for k in list(state) if k.startswith(prefix)}
        )
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, embedding)


def _load_the_rest(model: nn.Module, state: dict) -> None:
    """Load the remaining (FP32) tensors, embeddings and layer norms, module by module."""
    by_module: dict[str, dict] = {}
    for key in list(state):
        prefix, _, attr = key.rpartition(".")
        by_module.setdefault(prefix, {})[attr] = state.pop(key)
    for prefix, tensors in by_module.items():
        module = model.get_submodule(prefix) if prefix else model
        module.load_state_dict(tensors, strict=True, assign=True)


def _rebuild_causal_masks(model: nn.Module, config) -> None:
    """transformers 4.x GPT-2 keeps its causal mask in non-persistent buffers (`bias`, `masked_bias`): never
    saved, so left on the meta device; build them as GPT-2 does (one mask shared by every layer)."""
    n = config.max_position_embeddings
    mask = None
    for module in model.modules():
        unsaved = module._non_persistent_buffers_set
        if "bias" in unsaved and module.bias is not None and module.bias.is_meta:
            if mask is None:
                mask = torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n)
            module.bias = mask
        if "masked_bias" in unsaved and module.masked_bias.is_meta:
            module.masked_bias = torch.tensor(-1e4)


def load_prequantized(path: str | os.PathLike):
    """(tokenizer, model, parameters) from a pre-quantized directory, without FP32 projection weights."""
    path = Path(path)
    marker = json.loads((path / MARKER).read_text())
    if marker.get("format") != FORMAT_VERSION or marker.get("quantization") != "int8":
        raise ModelLoadError(
            f"model.name: {path} holds a pre-quantized model in a format this version can't read"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # The packed INT8 weights are plain tensors in tuples, so the safe weights-only unpickler reads them.
    with warnings.catch_warnings():  # torch's own TypedStorage notice when it rebuilds quantized tensors
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    try:
        _load_int8_projections(model, state)
        _load_int8_embeddings(model, state)
        _load_the_rest(model, state)
    except (RuntimeError, AttributeError) as exc:
        reason = first_line(exc)
        raise ModelLoadError(
            f"model.name: {path}: the saved INT8 state does not fit the model: {reason}"
        ) from None
    _rebuild_causal_masks(model, config)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise ModelLoadError(f"model.name: {path}: the saved state has no values for {left_on_meta[:3]}")
    model.eval()
    return tokenizer, model, int(marker["parameters"])
