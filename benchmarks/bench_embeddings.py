"""ortmodels embeddings (fp32, int8) against sentence-transformers and fastembed, in one process.

Every contender embeds the same real sentences (Python standard-library docstrings) at
batch size 1 and 32. fastembed loads the very ONNX file ortmodels exported as fp32 (a
local custom model: nothing is downloaded), so that comparison is of the code around the
graph: tokenisation, batching, pooling. sentence-transformers runs the checkpoint on
PyTorch. Rounds are interleaved; each ratio is taken within a round, from runs seconds
apart, and the median over rounds is reported.

Quality of int8, against ortmodels fp32 on the same sentences: cosine of each vector to
its fp32 twin (mean and worst), and how many of each sentence's ten nearest neighbours
int8 keeps (what a search index would notice). Every contender's cosine to
sentence-transformers is recorded too. Writes results/embeddings.json and .png.

    python -m benchmarks.bench_embeddings [--sentences 2000] [--rounds 3] [--batch-sizes 1 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.corpus import stdlib_sentences
from benchmarks.quality import cosine_rows, top_k_agreement
from benchmarks.report import bar_chart, machine, versions, write_json
from benchmarks.targets import FASTEMBED, ORT, ST, ratio_key

MODEL = "all-minilm-l6-v2"
#: Pause before each timed run, so the previous contender's spinning worker threads
#: (PyTorch's OpenMP pool, ONNX Runtime's pool) have gone idle and steal no cycles.
SETTLE_S = 1.0
#: The model's own input limit (its sentence_bert_config.json).
MAX_TOKENS = 256
#: The name fastembed knows the local model by (registered at run time, never fetched).
FASTEMBED_NAME = "ortmodels-bench/all-minilm-l6-v2-fp32"

Embed = Callable[[list[str], int], np.ndarray]


def sentence_transformers(models_dir: Path) -> Embed:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = SentenceTransformer(str(models_dir / MODEL), device="cpu", local_files_only=True)
    return lambda texts, batch: model.encode(texts, batch_size=batch, convert_to_numpy=True)


def fastembed(fp32_folder: Path) -> Embed:
    """fastembed on ortmodels' fp32 file: a custom model, mean pooling and normalisation as
    all-MiniLM-L6-v2 does, read from ``specific_model_path`` (HF_HUB_OFFLINE set, too)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    if FASTEMBED_NAME not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(
            model=FASTEMBED_NAME, pooling=PoolingType.MEAN, normalization=True,
            sources=ModelSource(hf=FASTEMBED_NAME), dim=384, model_file="model.onnx",
        )
    model = TextEmbedding(FASTEMBED_NAME, specific_model_path=str(fp32_folder), local_files_only=True)
    # all-MiniLM-L6-v2 reads at most 256 tokens (sentence_bert_config.json), which
    # sentence-transformers and ortmodels honour; fastembed takes 512 from
    # tokenizer_config.json, so it is held to 256 too: same work, same vectors.
    inner = getattr(model, "model", None)
    tokenizer = getattr(inner, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return lambda texts, batch: np.asarray(list(model.embed(texts, batch_size=batch)))


def ortmodels(models_dir: Path, dtype: str) -> Embed:
    from ortmodels import OnnxEmbeddingModel

    models: dict[int, object] = {}

    def run(texts: list[str], batch: int) -> np.ndarray:
        if batch not in models:  # batch size is a model setting; one loaded model per size
            models[batch] = OnnxEmbeddingModel(
                model_path=models_dir / MODEL, device="cpu", dtype=dtype, batch_size=batch
            ).load()
        return np.asarray(models[batch].embed_documents(texts))  # type: ignore[attr-defined]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args()

    sentences = stdlib_sentences(args.sentences)
    runs: dict[str, Embed] = {
        ST: sentence_transformers(args.models_dir),
        FASTEMBED: fastembed(args.models_dir / MODEL / "onnx" / "fp32"),
        f"{ORT} fp32": ortmodels(args.models_dir, "fp32"),
        f"{ORT} int8": ortmodels(args.models_dir, "int8"),
    }
    for run in runs.values():  # warm-up: first-call allocations are not what users wait for
        for batch in args.batch_sizes:
            run(sentences[:64], batch)

    began = time.perf_counter()
    rates: dict[tuple[str, int], list[float]] = {(n, b): [] for n in runs for b in args.batch_sizes}
    vectors: dict[str, np.ndarray] = {}
    names = list(runs)
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for batch in args.batch_sizes:
            for name in names[shift:] + names[:shift]:
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                vectors[name] = runs[name](sentences, batch)
                rates[name, batch].append(len(sentences) / (time.perf_counter() - start))
                print(f"round {round_ + 1}/{args.rounds} batch {batch:>2} {name}: "
                      f"{rates[name, batch][-1]:.0f} sentences/s", flush=True)

    rows = []
    for name in names:
        cos = cosine_rows(vectors[name], vectors[ST])
        row = {"name": name, "cosine_to_sentence_transformers_mean": round(float(cos.mean()), 6),
               "cosine_to_sentence_transformers_min": round(float(cos.min()), 6)}
        for batch in args.batch_sizes:
            row[f"batch_{batch}_sentences_per_s"] = round(statistics.median(rates[name, batch]), 1)
            row[f"batch_{batch}_rounds"] = [round(r, 1) for r in rates[name, batch]]
        rows.append(row)

    figures: dict[str, float] = {}
    for batch in args.batch_sizes:
        for ours in (f"{ORT} fp32", f"{ORT} int8"):
            for theirs in (ST, FASTEMBED, f"{ORT} fp32"):
                if ours != theirs:
                    per_round = [a / b for a, b in zip(rates[ours, batch], rates[theirs, batch])]
                    figures[ratio_key(f"embed_b{batch}", ours, theirs)] = round(statistics.median(per_round), 3)
    int8, fp32 = vectors[f"{ORT} int8"], vectors[f"{ORT} fp32"]
    cos = cosine_rows(int8, fp32)
    figures[f"cosine_mean: {ORT} int8"] = round(float(cos.mean()), 6)
    figures[f"cosine_worst: {ORT} int8"] = round(float(cos.min()), 6)
    figures[f"top10_agreement: {ORT} int8"] = round(top_k_agreement(int8, fp32, 10), 4)
    figures[f"cosine_mean: {FASTEMBED} vs {ORT} fp32"] = round(float(cosine_rows(vectors[FASTEMBED], fp32).mean()), 6)

    print(f"\n{MODEL}: {len(sentences)} stdlib docstrings, median of {args.rounds} rounds")
    print(f"{'contender':24}" + "".join(f"{'batch ' + str(b) + ' sent/s':>18}" for b in args.batch_sizes)
          + f"{'cos to ST mean':>16}{'worst':>10}")
    for row in rows:
        print(f"{row['name']:24}" + "".join(f"{row[f'batch_{b}_sentences_per_s']:18.0f}" for b in args.batch_sizes)
              + f"{row['cosine_to_sentence_transformers_mean']:16.6f}{row['cosine_to_sentence_transformers_min']:10.6f}")
    print("\nratios (median of per-round ratios) and int8 quality against fp32")
    for key, value in figures.items():
        print(f"  {key:55} {value:.4f}")

    path = write_json("embeddings", {
        "benchmark": "embeddings",
        "model": MODEL,
        "sentences": len(sentences),
        "corpus": "first paragraphs of Python standard-library docstrings",
        "batch_sizes": args.batch_sizes,
        "rounds": args.rounds,
        "timed_s": round(time.perf_counter() - began, 1),
        "machine": machine(),
        "versions": versions(),
        "figures": figures,
        "results": rows,
    })
    batch = max(args.batch_sizes)
    chart = bar_chart("embeddings", f"{MODEL}, batch {batch}, {machine()['cores']} cores", names,
                      [r[f"batch_{batch}_sentences_per_s"] for r in rows], "sentences / s (higher is better)")
    print(f"wrote {path} and {chart}")


if __name__ == "__main__":
    main()
