# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install samples export-samples demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[export,dev]'
	touch $(STAMP)

install: $(STAMP)

samples: $(STAMP)
	$(BIN)/ortmodels samples

export-samples: samples
	$(BIN)/ortmodels export all-minilm-l6-v2 --dtype fp32,int8
	$(BIN)/ortmodels export smollm2-135m-instruct --dtype fp32,fp16,int8,int4

demo: export-samples
	$(BIN)/ortmodels demo

test: export-samples
	$(BIN)/python -m pytest -q -ra

bench: export-samples
	$(BIN)/python -m benchmarks.bench_embeddings
	$(BIN)/python -m benchmarks.bench_chat

clean:
	rm -rf $(VENV) build *.egg-info
