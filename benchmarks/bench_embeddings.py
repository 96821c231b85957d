"""ortmodels (fp32, int8) against sentence-transformers on PyTorch, in one process run.

Every contender embeds the same real sentences (Python standard-library docstrings) at
the same batch size. Rounds are interleaved; each ratio is taken within a round, from
runs seconds apart, and the median over rounds is reported. Prints a table and writes
results/embeddings.json and results/embeddings.png.

    python -m benchmarks.bench_embeddings [--sentences 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.corpus import stdlib_sentences
from benchmarks.report import bar_chart, machine, write_json
from ortmodels.export.checkpoint import package_versions

MODEL = "all-minilm-l6-v2"
BASELINE = "sentence-transformers (PyTorch fp32)"
#: Pause before each timed run, so the previous contender's spinning worker threads
#: (PyTorch's OpenMP pool, ONNX Runtime's pool) have gone idle and steal no cycles.
SETTLE_S = 1.0


def contenders(models_dir: Path, batch_size: int) -> dict[str, Callable[[list[str]], np.ndarray]]:
    import torch
    from sentence_transformers import SentenceTransformer

    from ortmodels.runtime.embeddings import OnnxEmbeddingModel

    torch.set_num_threads(max(1, torch.get_num_threads()))
    st = SentenceTransformer(str(models_dir / MODEL), device="cpu")
    runs: dict[str, Callable[[list[str]], np.ndarray]] = {
        BASELINE: lambda texts: st.encode(texts, batch_size=batch_size, convert_to_numpy=True),
    }
    for dtype in ("fp32", "int8"):
        model = OnnxEmbeddingModel(
            model_path=models_dir / MODEL, device="cpu", dtype=dtype, batch_size=batch_size
        ).load()
        runs[f"ortmodels {dtype}"] = lambda texts, m=model: np.asarray(m.embed_documents(texts))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args()

    sentences = stdlib_sentences(args.sentences)
    runs = contenders(args.models_dir, args.batch_size)
    for run in runs.values():  # warm-up: first-call allocations are not what users wait for
        run(sentences[:64])

    rates: dict[str, list[float]] = {name: [] for name in runs}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            vectors[name] = run(sentences)
            rates[name].append(len(sentences) / (time.perf_counter() - start))

    reference = vectors[BASELINE] / np.linalg.norm(vectors[BASELINE], axis=1, keepdims=True)
    rows = []
    for name in runs:
        got = vectors[name] / np.linalg.norm(vectors[name], axis=1, keepdims=True)
        cos = (got * reference).sum(axis=1)
        # Each round's ratio pairs runs made seconds apart, so shared-machine noise cancels.
        ratio = statistics.median(r / b for r, b in zip(rates[name], rates[BASELINE]))
        rows.append({
            "name": name,
            "sentences_per_s": round(statistics.median(rates[name]), 1),
            "rounds": [round(r, 1) for r in rates[name]],
            "ratio_to_sentence_transformers": round(ratio, 3),
            "cosine_to_sentence_transformers_mean": round(float(cos.mean()), 6),
            "cosine_to_sentence_transformers_min": round(float(cos.min()), 6),
        })

    table = Table(title=f"{MODEL}: {len(sentences)} stdlib docstrings, batch {args.batch_size}")
    for column in ("contender", "sentences/s", "× sentence-transformers", "cosine mean", "cosine worst"):
        table.add_column(column, justify="right" if column != "contender" else "left")
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['sentences_per_s']:.0f}",
            f"{row['ratio_to_sentence_transformers']:.2f}",
            f"{row['cosine_to_sentence_transformers_mean']:.6f}",
            f"{row['cosine_to_sentence_transformers_min']:.6f}",
        )
    Console(width=120).print(table)

    path = write_json("embeddings", {
        "benchmark": "embeddings",
        "model": MODEL,
        "sentences": len(sentences),
        "corpus": "first paragraphs of Python standard-library docstrings",
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "machine": machine(),
        "versions": package_versions("ortmodels", "onnxruntime", "torch", "transformers", "sentence-transformers"),
        "results": rows,
    })
    chart = bar_chart(
        "embeddings",
        f"{MODEL}, batch {args.batch_size}, {machine()['cores']} cores",
        [r["name"] for r in rows],
        [r["sentences_per_s"] for r in rows],
        "sentences / s (higher is better)",
    )
    print(f"wrote {path} and {chart}")


if __name__ == "__main__":
    main()
