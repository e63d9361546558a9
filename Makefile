# The two commands: `make demo` and `make test`. Both set up .venv from scratch when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned, so pip takes the CPU build on disk instead of a multi-GB CUDA build
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[demo,plot,dev,export]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/weightshare compress minilm --bits 4 -o out/minilm-4bit.safetensors
	$(BIN)/weightshare inspect out/minilm-4bit.safetensors --summary

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'

clean:
	rm -rf $(VENV) out
