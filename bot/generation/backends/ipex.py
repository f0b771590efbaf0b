"""The `ipex` backend: the torch model optimized and INT8-quantized by Intel Extension for PyTorch.

The recipe, as measured on IPEX 2.8.0 (the project's last CPU release; archived since): GPT-2's projections
are transformers `Conv1D` modules, which IPEX's quantization skips (only `lm_head` would be INT8), so they are
replaced by the equivalent `nn.Linear` first (`bot.models.quantize.replace_conv1d`, bit-exact). Then
`ipex.optimize`, and `ipex.quantization.prepare` / `convert` with the default dynamic qconfig. For INT8,
`ipex.optimize` must run with `weights_prepack=False`: its default repacks every `nn.Linear` into IPEX's own
FP32 module, which the quantizer no longer recognizes, leaving 0 of 17 projections INT8 on the demo model
(measured). FP32 keeps the prepacked weights, IPEX's fast FP32 path.

IPEX 2.8 runs only on torch 2.8.* and fails to import with transformers 5, so it lives in its own
environment: the `ipex` extra pins that stack (`make test-ipex` builds it and runs the tests there).
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from bot.core.generator import ProjectionCounts
from bot.models.quantize import count_projections, replace_conv1d

logger = logging.getLogger(__name__)


def optimize_with_ipex(model: nn.Module, int8: bool) -> tuple[nn.Module, ProjectionCounts]:
    """`model` optimized by IPEX, and dynamically quantized to INT8 if `int8`; with its projection counts."""
    import intel_extension_for_pytorch as ipex

    logging.getLogger("IPEX").setLevel(logging.ERROR)  # "BatchNorm folding failed": GPT-2 has no BatchNorm
    model.eval()
    replaced = replace_conv1d(model)
    if not int8:
        # Counted before: prepacking swaps each projection for IPEX's own module type.
        counts = count_projections(model)
        return ipex.optimize(model, dtype=torch.float32), counts
    model = ipex.optimize(model, dtype=torch.float32, weights_prepack=False)
    example = (torch.tensor([[0, 1, 2, 3]], dtype=torch.long),)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        prepared = ipex.quantization.prepare(
            model, ipex.quantization.default_dynamic_qconfig_mapping, example_inputs=example, inplace=True
        )
        model = ipex.quantization.convert(prepared, inplace=True)
    counts = count_projections(model)
    logger.info(
        "IPEX quantized %d/%d projections to INT8 (%d Conv1D converted)", counts.int8, counts.total, replaced
    )
    return model, counts
