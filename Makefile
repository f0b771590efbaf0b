# Two entry points, both self-contained on a fresh clone: `make chat` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where torch comes from. PyPI's Linux torch wheel is a CUDA build (GBs); on a machine without a local CPU
# wheel, use PyTorch's CPU index: make chat TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: setup chat test lint

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: on our machines this is a local CPU build; an unpinned torch pulls CUDA (GBs).
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# The ctranslate2 and openai backends are small and tested in CI, so they are installed too.
	$(PY) -m pip install --quiet -e ".[dev,ctranslate2,openai]"
	touch $(STAMP)

setup: $(STAMP)

chat: $(STAMP)
	$(VENV)/bin/dialobot chat --model demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q --durations=10

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
