"""One chat contender in its own process: ``python -m benchmarks.chat_worker NAME ...``.

Started by the parent with the contender's interpreter (dev venv or peers venv), so memory
is the contender's own (peak RSS, and its rise over the bare worker: library imports
count, as they do for a user) and no contender's thread pools or allocations touch
another's. Modes:

- ``serve``: load, warm up, report ``ready``; then answer ``run <prompt> <new_tokens>``
  until ``quit``, and report memory.
- ``cold``: load and produce the first token of the short prompt once, as a user's fresh
  process would; the parent times it from process start.
- ``perplexity``: the logits of a token sequence in one pass, reduced to its perplexity.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # the clock starts before anything else is imported
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmarks.contenders import SPECS
from benchmarks.measure import peak_rss_mib, rss_mib
from benchmarks.protocol import answer_runs, emit

#: Tokens generated once after loading, untimed: first-call allocations are not what users wait for.
WARMUP_TOKENS = 16


def load(name: str, models_dir: Path) -> Any:
    spec = SPECS[name]
    module = importlib.import_module(spec.module)
    return getattr(module, spec.loader)(models_dir, **spec.options)


def serve(name: str, models_dir: Path, prompts: dict[str, dict[str, Any]]) -> None:
    baseline = rss_mib()
    began = time.perf_counter()
    engine = load(name, models_dir)
    load_s = time.perf_counter() - began
    engine.run(prompts["short"], WARMUP_TOKENS)
    engine.run(prompts["long"], 1)
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    emit("ready", load_s=load_s, prompt_tokens={k: engine.prompt_tokens(p) for k, p in prompts.items()},
         torch_threads=threads)
    answer_runs(engine, prompts)
    emit("memory", baseline_rss_mib=baseline, peak_rss_mib=peak_rss_mib(), rss_at_end_mib=rss_mib(),
         torch_imported="torch" in sys.modules)


def cold(name: str, models_dir: Path, prompts: dict[str, dict[str, Any]]) -> None:
    began = time.perf_counter()
    engine = load(name, models_dir)
    loaded = time.perf_counter()
    result = engine.run(prompts["short"], 1)
    emit("first_token", since_interpreter_s=time.perf_counter() - STARTED, load_s=loaded - began,
         ttft_s=result["ttft_s"], peak_rss_mib=peak_rss_mib())


def perplexity(name: str, models_dir: Path, ids: list[int]) -> None:
    from benchmarks.quality import perplexity as ppl

    engine = load(name, models_dir)
    if not hasattr(engine, "logits"):
        emit("error", message=f"{name} gives no logits")
        return
    logits = engine.logits(ids)
    emit("perplexity", perplexity=ppl(logits, ids), tokens=len(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(SPECS))
    parser.add_argument("--mode", choices=("serve", "cold", "perplexity"), default="serve")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--input", type=Path, required=True, help="JSON: the prompts, or the token ids")
    args = parser.parse_args()
    data = json.loads(args.input.read_text(encoding="utf-8"))
    try:
        if args.mode == "serve":
            serve(args.name, args.models_dir, data)
        elif args.mode == "cold":
            cold(args.name, args.models_dir, data)
        else:
            perplexity(args.name, args.models_dir, data)
    except Exception as exc:  # reported to the parent, which names the contender
        traceback.print_exc()
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
