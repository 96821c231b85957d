"""One contender of the size benchmark in its own process: ``python -m benchmarks.sizes_worker KIND PATH``.

Started by `benchmarks.bench_sizes` with the contender's interpreter (the dev venv for
ortmodels, the peers venv for onnxruntime-genai and llama.cpp), so its memory is its own:
load, warm up, report ``ready``; then answer ``run <prompt> <new_tokens>`` until ``quit``,
and report memory (peak RSS over the worker's life: the largest thing it held is the
longest conversation the parent asked for). Standard library only at the top, as
`benchmarks.chat_worker`.

KIND is ``ortmodels`` (PATH: the model folder; ``--dtype`` the variant, fp16 keys and values in a
200 MB KV cache),
``genai`` (PATH: the builder's output folder) or ``llama.cpp`` (PATH: the GGUF file).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # the clock starts before anything else is imported
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmarks.measure import peak_rss_mib, rss_mib
from benchmarks.protocol import answer_runs, emit

WARMUP_TOKENS = 8
LLAMA_THREADS = 2
#: ortmodels' KV-cache budget here (``MODEL_KV_CACHE``): issue 20 asks that a 4,000-token
#: conversation on the 1B shape run in 200 MB, so the conversation below is held in that.
KV_CACHE_BYTES = 200_000_000


def load(kind: str, path: Path, dtype: str | None, n_ctx: int, kv_cache: int = KV_CACHE_BYTES) -> Any:
    if kind == "ortmodels":
        from benchmarks.chat_ortmodels import OrtModelsEngine

        return OrtModelsEngine(path.parent, dtype or "int4", model=path.name, model_kv_dtype="fp16",
                               model_kv_cache=kv_cache)
    if kind == "genai":
        from benchmarks.peers.chat_peers import GenaiEngine

        return GenaiEngine(path)
    if kind == "llama.cpp":
        from benchmarks.peers.chat_peers import LlamaCppEngine

        return LlamaCppEngine(path, LLAMA_THREADS, n_ctx=n_ctx)
    raise SystemExit(f"unknown kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["ortmodels", "genai", "llama.cpp"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--input", type=Path, required=True, help="the prompts, as the parent built them (JSON)")
    parser.add_argument("--n-ctx", type=int, default=4608)
    parser.add_argument("--kv-cache", type=int, default=KV_CACHE_BYTES, help="ortmodels' MODEL_KV_CACHE, bytes")
    args = parser.parse_args()
    prompts: dict[str, dict[str, Any]] = json.loads(args.input.read_text())
    try:
        baseline = rss_mib()
        began = time.perf_counter()
        engine = load(args.kind, args.path, args.dtype, args.n_ctx, args.kv_cache)
        load_s = time.perf_counter() - began
        engine.run(prompts["short"], WARMUP_TOKENS)
        kv = engine.kv_bytes_per_token() if hasattr(engine, "kv_bytes_per_token") else None
        emit("ready", load_s=load_s, started_s=began - STARTED, kv_bytes_per_token=kv,
             prompt_tokens={k: engine.prompt_tokens(p) for k, p in prompts.items()})
        answer_runs(engine, prompts)
        emit("memory", baseline_rss_mib=baseline, peak_rss_mib=peak_rss_mib(), rss_at_end_mib=rss_mib())
    except Exception as exc:  # the parent names the contender and stops
        traceback.print_exc()
        emit("error", message=f"{type(exc).__name__}: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
