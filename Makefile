# Two entry points, both self-contained on a fresh clone: `make chat` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where torch comes from. PyPI's Linux torch wheel is a CUDA build (GBs); on a machine without a local CPU
# wheel, use PyTorch's CPU index: make chat TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

# Intel Extension for PyTorch needs its own pinned stack (torch 2.8, transformers 4.57): README "Backends".
IPEX_VENV := .venv-ipex
IPEX_STAMP := $(IPEX_VENV)/.installed

# A real llama-cpp-python server for the openai backend's tests (README "Backends"). Opt-in, in its own venv:
# installing llama-cpp-python compiles llama.cpp (about 20 minutes on 2 cores). Its sdist is downloaded first,
# since its vendored llama.cpp also holds the converter that turns the test model into a GGUF.
LLAMACPP_VENV := .venv-llamacpp
LLAMACPP_STAMP := $(LLAMACPP_VENV)/.installed
LLAMACPP_VERSION := 0.3.36
LLAMACPP_SRC := llama_cpp_python-$(LLAMACPP_VERSION)
LLAMACPP_SDIST := $(LLAMACPP_VENV)/sdist/$(LLAMACPP_SRC).tar.gz

.PHONY: setup chat test test-fast typecheck lint ipex test-ipex llamacpp test-llamacpp

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: on our machines this is a local CPU build; an unpinned torch pulls CUDA (GBs).
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# The demo model's corpus, the bench's plot, the ctranslate2, openvino and openai backends (tested in CI),
	# the default safety classifier, and Detoxify's code (small; its weights are downloaded only when configured).
	$(PY) -m pip install --quiet -e ".[dev,demo,bench,ctranslate2,openvino,openai,safety,detoxify]"
	touch $(STAMP)

setup: $(STAMP)

chat: $(STAMP)
	$(VENV)/bin/dialobot chat --model demo

# Everything CI runs: lint, types, and every test (the demo model's full build and real processes included).
test: $(STAMP) typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q -rs --durations=10

# The edit loop: no full model build, no `dialobot` process per test (pytest 136 s on 2 idle cores).
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	# Two workers, one per core; PostgreSQL cases run in `make test` (parallel workers would share its schema).
	env -u DIALOBOT_TEST_POSTGRES_URL $(VENV)/bin/pytest -q -rs -n 2 -m "not slow and not process" --durations=5

typecheck: $(STAMP)
	$(VENV)/bin/mypy bot/core storage

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

$(IPEX_STAMP): pyproject.toml
	python3 -m venv $(IPEX_VENV)
	$(IPEX_VENV)/bin/python -m pip install --quiet --upgrade pip
	# PyPI's torch 2.8 is a CUDA build (about 7 GB with IPEX); PyTorch's CPU index is far smaller where reachable.
	$(IPEX_VENV)/bin/python -m pip install --quiet torch==2.8.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(IPEX_VENV)/bin/python -m pip install --quiet -e ".[dev,ipex,ctranslate2,openai,safety]"
	touch $(IPEX_STAMP)

ipex: $(IPEX_STAMP)

# The whole suite on the IPEX stack (transformers 4.57, torch 2.8): the ipex cases run instead of skipping.
test-ipex: $(IPEX_STAMP)
	$(IPEX_VENV)/bin/pytest -q -rs --durations=10

$(LLAMACPP_STAMP): pyproject.toml
	python3 -m venv $(LLAMACPP_VENV)
	$(LLAMACPP_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LLAMACPP_VENV)/bin/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(LLAMACPP_VENV)/bin/python -m pip download --quiet --no-deps --no-binary llama-cpp-python \
		llama-cpp-python==$(LLAMACPP_VERSION) -d $(LLAMACPP_VENV)/sdist
	# llama.cpp's HF-to-GGUF converter with the model modules and gguf-py it imports: .venv-llamacpp/llama.cpp/
	tar -xzf $(LLAMACPP_SDIST) -C $(LLAMACPP_VENV) --strip-components=2 \
		$(addprefix $(LLAMACPP_SRC)/vendor/llama.cpp/,convert_hf_to_gguf.py conversion gguf-py)
	# Compiles llama.cpp from the sdist (pip caches the wheel); no multimodal library, which the server's
	# completions never load.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(LLAMACPP_VENV)/bin/python -m pip install --quiet \
		"llama-cpp-python[server] @ file://$(abspath $(LLAMACPP_SDIST))"
	$(LLAMACPP_VENV)/bin/python -m pip install --quiet -e ".[dev,openai,llamacpp,safety]"
	touch $(LLAMACPP_STAMP)

llamacpp: $(LLAMACPP_STAMP)

# The openai backend against a real llama-cpp-python server serving the tiny test model as a GGUF
# (tests/bot/generation/backends/test_llamacpp.py), and its tests against the fake server.
test-llamacpp: $(LLAMACPP_STAMP)
	$(LLAMACPP_VENV)/bin/pytest -q -rs --durations=10 tests/bot/generation/backends/test_llamacpp.py \
		tests/bot/generation/backends/test_openai.py
