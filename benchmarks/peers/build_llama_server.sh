#!/usr/bin/env bash
# Build llama.cpp's own llama-server (CPU only) for benchmarks/bench_server.py, and its
# llama-quantize for benchmarks/bench_sizes.py (Q4_0, Q4_K_M, Q8_0 of the size checkpoints).
#
# pip has no prebuilt llama-server, so this takes the llama.cpp that llama-cpp-python
# 0.3.36 vendors (the same llama.cpp as the peers venv's bindings), from its sdist, and
# builds only those two targets into benchmarks/.cache/llama-server/ (git-ignored):
#   benchmarks/.cache/llama-server/build/bin/llama-server, .../llama-quantize
# About 10 minutes on 2 cores; a second run only checks that the binaries are there.
#
#   benchmarks/peers/build_llama_server.sh [python]    # python: one with pip (default .venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON="${1:-$ROOT/.venv/bin/python}"
VERSION=0.3.36
DIR="$ROOT/benchmarks/.cache/llama-server"
SRC="$DIR/llama_cpp_python-$VERSION"
BUILD="$DIR/build"
BIN="$BUILD/bin/llama-server"
QUANTIZE="$BUILD/bin/llama-quantize"

if [ -x "$BIN" ] && [ -x "$QUANTIZE" ]; then
    echo "llama-server and llama-quantize: built in $BUILD/bin"
    exit 0
fi
mkdir -p "$DIR"
if [ ! -d "$SRC/vendor/llama.cpp" ]; then
    "$PYTHON" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DIR"
    tar -xzf "$DIR/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
fi
# No web UI (LLAMA_USE_PREBUILT_UI=OFF: no download of its assets); the API does not need it.
cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_BUILD_TYPE=Release
nice -n 10 cmake --build "$BUILD" --target llama-server llama-quantize -j "${JOBS:-$(nproc)}"
"$BIN" --version
echo "llama-server and llama-quantize: built in $BUILD/bin"
