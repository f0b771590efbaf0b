"""Every backend built on the tiny trained model, for the shared behavioural tests in test_contract.py.

The in-process backends load the model themselves (CTranslate2 and OpenVINO convert it once per session);
`openai` talks to `FakeOpenAIServer`, which serves the same model over HTTP on 127.0.0.1. IPEX needs its own
pinned stack (`make test-ipex`), so its cases are skipped, with that reason, where it is not installed; so
are the tests against a real llama-cpp-python server (`make test-llamacpp`, test_llamacpp.py).
"""

from __future__ import annotations

import importlib.util

import pytest

from bot.config import parse_config

BACKENDS = ("torch", "ipex", "ctranslate2", "openvino", "openai")
# Plain greedy decoding: runtimes agree on it token for token. Repetition penalties are applied differently
# (transformers penalizes prompt tokens too, CTranslate2 only the reply's; vLLM has no n-gram blocking), so
# they are checked on their own in test_contract.py.
GREEDY = {"do_sample": False, "max_new_tokens": 12, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def ipex_installed() -> bool:
    return importlib.util.find_spec("intel_extension_for_pytorch") is not None


SKIP_WITHOUT_IPEX = pytest.mark.skipif(
    not ipex_installed(),
    reason="intel-extension-for-pytorch is not installed; it needs its own torch 2.8 stack: `make test-ipex`",
)


def llamacpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


SKIP_WITHOUT_LLAMACPP = pytest.mark.skipif(
    not llamacpp_installed(),
    reason="llama-cpp-python is not installed; it compiles llama.cpp on install: `make test-llamacpp`",
)


def backend_config(backend: str, model_dir, quantization: str = "none", generation=None, **sections):
    """A config serving the tiny model with `backend`, greedy so that replies can be compared."""
    data = {
        "model": {"name": str(model_dir), "backend": backend, "quantization": quantization, "threads": 1},
        "generation": {**GREEDY, **(generation or {})},
        **sections,
    }
    return parse_config(data)


@pytest.fixture(scope="session")
def ct2_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ct2-cache")


@pytest.fixture(params=BACKENDS)
async def make_generator(request, tiny_model_dir, ct2_cache, monkeypatch):
    """`make_generator(quantization="none")`: a `Generator` for the tiny model on the parametrized backend."""
    backend = request.param
    if backend == "ipex" and not ipex_installed():
        pytest.skip(SKIP_WITHOUT_IPEX.kwargs["reason"])
    monkeypatch.setenv("DIALOBOT_CACHE_DIR", str(ct2_cache))
    sections, server = {}, None
    if backend == "openai":
        from tests.bot.generation.backends.fake_openai import FakeOpenAIServer

        server = FakeOpenAIServer(tiny_model_dir)
        await server.start()
        sections["openai"] = {"base_url": server.base_url, "model": "tiny", "timeout_seconds": 10}
    made = []

    def make(quantization: str = "none", **generation):
        from bot.generation.backends import load_backend

        config = backend_config(backend, tiny_model_dir, quantization, generation, **sections)
        generator = load_backend(config)
        made.append(generator)
        return generator

    make.backend = backend
    make.server = server  # the fake OpenAI-compatible server (openai only), to see what reached it
    yield make
    for generator in made:
        await generator.close()
    if server is not None:
        await server.close()
