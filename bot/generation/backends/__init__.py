"""Which runtime generates replies, chosen by `model.backend`; the engine and the scheduler cannot tell.

One module per `model.backend` value, named like it:

- `torch`: the model in this process, FP32 or torch INT8 (`bot.models.quantize`). Always installed.
- `ipex`: the same model optimized and INT8-quantized by Intel Extension for PyTorch.
- `ctranslate2`: the model converted to CTranslate2 INT8 on first use and cached.
- `openvino`: the model exported to OpenVINO IR (INT8 weights) on first use, cached, and run by openvino-genai
  with continuous batching.
- `openai`: a remote OpenAI-compatible completions server, e.g. vLLM.
- `scripted`: not a model but the test harness's echo (`bot.testing.ScriptedGenerator`), for running the
  real bot in tests and in the crash test (`python -m bot.bench.chaos`) without a model.

The in-process backends are `LocalGenerator`s, which the batching scheduler batches across channels, except
`openvino`, which batches continuously by itself; a remote server batches on its own too. Those two are used
as they are.
"""

from __future__ import annotations

import importlib
import logging

from bot.config import Config
from bot.core.generator import Generator
from bot.errors import BackendUnavailable, first_line

logger = logging.getLogger(__name__)

# backend -> (module it needs, the pip extra that installs it, what to add to the hint)
_REQUIREMENTS = {
    "ipex": (
        "intel_extension_for_pytorch",
        "ipex",
        "; it needs its own pinned stack (torch 2.8, transformers 4.57): `make ipex`, see README 'Backends'",
    ),
    "ctranslate2": ("ctranslate2", "ctranslate2", ""),
    # Through the backend's module, which turns OpenVINO's usage reports off before importing it.
    "openvino": ("bot.generation.backends.openvino", "openvino", ""),
    "openai": ("openai", "openai", ""),
}


def require(backend: str) -> None:
    """Import what `backend` needs, or raise one line naming the extra that installs it."""
    if backend not in _REQUIREMENTS:
        return
    module, extra, hint = _REQUIREMENTS[backend]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"model.backend: {backend} is not installed ({first_line(exc)}); "
            f"install it with: pip install -e '.[{extra}]'{hint}"
        ) from None
    except Exception as exc:  # IPEX raises RuntimeError/AttributeError on a torch or transformers it rejects
        raise BackendUnavailable(
            f"model.backend: {backend} cannot be imported here ({first_line(exc)}){hint}"
        ) from None


def load_backend(config: Config) -> Generator:
    """Load the configured backend's model (slow: minutes for a first conversion) and return its generator."""
    backend = config.model.backend
    if backend == "scripted":
        from bot.testing import scripted_backend

        return scripted_backend()
    require(backend)
    if backend in ("torch", "ipex"):
        from bot.generation.backends.torch import TorchGenerator
        from bot.models.loader import load_model

        return TorchGenerator(load_model(config.model), config.generation)
    if backend == "ctranslate2":
        from bot.generation.backends.ctranslate2 import load_ctranslate2

        return load_ctranslate2(config)
    if backend == "openvino":
        from bot.generation.backends.openvino import load_openvino

        return load_openvino(config)
    from bot.generation.backends.openai import OpenAIGenerator

    return OpenAIGenerator.from_config(config)
