"""Dynamic INT8 quantization of a GPT-2-family model for the CPU.

GPT-2's attention and MLP projections are transformers `Conv1D` modules, not `nn.Linear`, so
`quantize_dynamic(model, {nn.Linear})` alone would quantize only the tied `lm_head` and leave nearly all the
compute in FP32 (measured: 1.0x the FP32 speed). Each `Conv1D` is first replaced by the equivalent
`nn.Linear` (the same weight, transposed: bit-exact), then every linear projection is quantized: weights to
INT8 ahead of time, activations quantized on the fly.

The input embedding (50257 x 1024 for DialoGPT-medium: 206 MB in FP32, more than half of what stays FP32 once
the projections are INT8) is stored 8-bit per row too. A lookup only dequantizes the rows it reads, so it
costs no speed; it is what brings an INT8 model's memory to under half of FP32's (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn
from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.ao.quantization import float_qparams_weight_only_qconfig, quantize_dynamic
from transformers.pytorch_utils import Conv1D

from bot.core.generator import ProjectionCounts

logger = logging.getLogger(__name__)


def linear_from_conv1d(conv: Conv1D) -> nn.Linear:
    """An `nn.Linear` computing exactly what `conv` computes (Conv1D stores the weight as in x out)."""
    in_features, out_features = conv.weight.shape
    linear = nn.Linear(in_features, out_features, bias=conv.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear


def replace_conv1d(model: nn.Module) -> int:
    """Replace every `Conv1D` in `model` by its `nn.Linear` equivalent, in place; return how many."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, Conv1D)]
    for name, conv in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, linear_from_conv1d(conv))
    return len(targets)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Quantize every linear projection of `model` to dynamic INT8, in place; return the model."""
    model.eval()
    replaced = replace_conv1d(model)
    with warnings.catch_warnings():
        # torch announces that eager-mode quantization moves to torchao; torch 2.13 still ships it, and it is
        # the path measured fast on CPUs (fbgemm/onednn INT8 kernels with no compile step).
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
        quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
        quantize_input_embedding(model)
    counts = count_projections(model)
    logger.info(
        "quantized %d/%d projections to INT8 (%d Conv1D converted)", counts.int8, counts.total, replaced
    )
    return model


def quantize_input_embedding(model: nn.Module) -> bool:
    """Store the input embedding 8-bit per row (it returns FP32 rows); False if the model has none to do."""
    get, set_ = getattr(model, "get_input_embeddings", None), getattr(model, "set_input_embeddings", None)
    embedding = get() if get else None
    if not isinstance(embedding, nn.Embedding) or set_ is None:
        return False
    embedding.qconfig = float_qparams_weight_only_qconfig
    set_(QuantizedEmbedding.from_float(embedding))
    return True


def count_projections(model: nn.Module) -> ProjectionCounts:
    """How many linear projections (Linear, Conv1D, dynamic INT8 Linear) there are, and how many are INT8."""
    int8 = total = 0
    for module in model.modules():
        if isinstance(module, DynamicQuantizedLinear):
            int8 += 1
            total += 1
        elif isinstance(module, nn.Linear | Conv1D):
            total += 1
    return ProjectionCounts(int8=int8, total=total)
