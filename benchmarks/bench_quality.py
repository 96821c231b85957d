"""Perplexity of every chat contender's model on real text nobody on this project wrote.

The text is the first ``--tokens`` tokens of Python standard-library docstrings,
tokenized once by the checkpoint's tokenizer; every contender scores the very same ids in
one pass (its logits for each position), and the same numpy arithmetic turns logits into
perplexity (``benchmarks.quality``). Each contender runs in a fresh worker process of its
own venv, one after the other. Ratios are to ortmodels fp32, the unquantized export of
the same checkpoint; the GGUF's Q4_1 weights come from the sample's own file.

    python -m benchmarks.bench_quality [--tokens 1024]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.contenders import SPECS, start_worker
from benchmarks.prompts import perplexity_ids
from benchmarks.report import machine, versions, write_json
from benchmarks.targets import GENAI, LLAMA_CPP, ORT

MODEL = "smollm2-135m-instruct"
CONTENDERS = [*(f"{ORT} {p}" for p in ("fp32", "int8", "int4")),
              *(f"{GENAI} {p}" for p in ("fp32", "int8", "int4")), LLAMA_CPP]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--only", nargs="*", choices=sorted(SPECS))
    args = parser.parse_args()

    ids = perplexity_ids(args.models_dir / MODEL, args.tokens)
    scores: dict[str, float] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "ids.json"
        ids_file.write_text(json.dumps(ids))
        for name in [n for n in CONTENDERS if not args.only or n in args.only]:
            began = time.perf_counter()
            worker = start_worker(name, args.models_dir, "perplexity", ids_file)
            try:
                scores[name] = worker.expect("perplexity")["perplexity"]
                print(f"{name:32} perplexity {scores[name]:8.4f}  ({time.perf_counter() - began:.0f} s)", flush=True)
            except RuntimeError as exc:
                failed[name] = str(exc)
                print(f"{name:32} not measured: {exc}", flush=True)
            finally:
                worker.close()

    reference = scores.get(f"{ORT} fp32")
    figures = {f"perplexity_ratio: {name}": round(value / reference, 4)
               for name, value in scores.items() if reference and name != f"{ORT} fp32"}
    for key, value in figures.items():
        print(f"  {key:45} {value:.4f}")
    path = write_json("quality", {
        "benchmark": "quality",
        "model": MODEL,
        "text": "Python standard-library docstrings (from the 1,000th first paragraph on)",
        "tokens": len(ids),
        "machine": machine(),
        "versions": versions(),
        "perplexity": {k: round(v, 4) for k, v in scores.items()},
        "failed": failed,
        "figures": figures,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
