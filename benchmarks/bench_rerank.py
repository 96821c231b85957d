"""Reranking: ortmodels (fp32, int8) against sentence-transformers' CrossEncoder and fastembed.

The model is a cross-encoder in cross-encoder/ms-marco-MiniLM-L-6-v2's published shape
(``BertForSequenceClassification``: 6 layers, hidden 384, 12 heads, intermediate 1536,
512 positions, one label, identity activation) with seeded random weights, built here and
cached in ``benchmarks/.cache/checkpoints/`` (no real cross-encoder ships on PyPI); its
tokenizer is the all-MiniLM-L6-v2 sample's, the same bert-base-uncased vocabulary. It is
exported with ``--skip-gates`` (random weights pass no gate), so int8's top-5 order against
fp32 is recorded here as a wiring figure, not as a quality claim.

Each contender reranks the same queries: 1 query × 20 and × 100 documents (standard-library
docstrings, the same sets for everyone). fastembed's ``TextCrossEncoder`` loads the very
fp32 ONNX file ortmodels exported (a local custom model: nothing is downloaded); the
CrossEncoder runs the checkpoint on PyTorch. Per call: latency (p50) and pairs/s; rounds
are interleaved and each ratio is the median of per-round ratios. Then ``ortmodels serve``
answers ``/v1/rerank`` (1 query × 20 documents) from 1 and 8 concurrent clients.
Writes results/rerank.json and .png.

    python -m benchmarks.bench_rerank [--queries 20] [--rounds 3] [--documents 20 100] [--requests 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_server import Contender, start_server, stop_server
from benchmarks.checkpoints import CACHE, link_into
from benchmarks.corpus import stdlib_sentences
from benchmarks.report import bar_chart, machine, versions, write_json
from benchmarks.targets import CROSS_ENCODER, FASTEMBED, ORT, ratio_key

NAME = "ms-marco-minilm-l6-v2-random"
TOKENIZER_FROM = "all-minilm-l6-v2"
#: cross-encoder/ms-marco-MiniLM-L-6-v2's config.json, but for the weights.
CONFIG = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
              intermediate_size=1536, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
              initializer_range=0.02, layer_norm_eps=1e-12, num_labels=1, pad_token_id=0,
              sbert_ce_default_activation_function="torch.nn.modules.linear.Identity")
MAX_LENGTH = 512
FASTEMBED_NAME = "ortmodels-bench/ms-marco-minilm-l6-v2-random-fp32"
SETTLE_S = 1.0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

Rank = Callable[[str, list[str]], list[float]]


def build_checkpoint(models_dir: Path, seed: int = 0) -> Path:
    """The seeded random cross-encoder, built once into the cache; returns its folder."""
    folder = CACHE / NAME
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(seed)
    BertForSequenceClassification(BertConfig(**CONFIG)).eval().save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (models_dir / TOKENIZER_FROM / name).is_file():
            shutil.copy2(models_dir / TOKENIZER_FROM / name, tmp / name)
    config = json.loads((tmp / "tokenizer_config.json").read_text())
    config["model_max_length"] = MAX_LENGTH  # as ms-marco-MiniLM-L-6-v2's tokenizer_config.json
    (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def exported_store(checkpoint: Path) -> Path:
    """A model store holding the checkpoint (hard links), exported fp32 and int8 (gates skipped)."""
    from ortmodels.export import export_model
    from ortmodels.store import ModelStore

    store = CACHE.parent / "rerank-models"
    link_into(checkpoint, store)
    outcome = export_model(ModelStore(store), NAME, ["fp32", "int8"], skip_gates=True)
    print(f"export {'reused' if outcome.skipped else 'made'}: fp32 parity {outcome.manifest.variants['fp32'].parity}")
    return store


def cross_encoder(checkpoint: Path) -> Rank:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(checkpoint), device="cpu", max_length=MAX_LENGTH)
    return lambda query, docs: model.predict([(query, d) for d in docs], batch_size=32,
                                             show_progress_bar=False).tolist()


def fastembed(fp32_folder: Path) -> Rank:
    """fastembed's TextCrossEncoder on ortmodels' fp32 file, registered as a local custom model."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from fastembed.common.model_description import ModelSource
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    if FASTEMBED_NAME.lower() not in {m["model"].lower() for m in TextCrossEncoder.list_supported_models()}:
        TextCrossEncoder.add_custom_model(FASTEMBED_NAME, sources=ModelSource(hf=FASTEMBED_NAME),
                                          model_file="model.onnx")
    model = TextCrossEncoder(FASTEMBED_NAME, specific_model_path=str(fp32_folder), local_files_only=True)
    return lambda query, docs: list(model.rerank(query, docs, batch_size=32))


def ortmodels(store: Path, dtype: str) -> Rank:
    from ortmodels import OnnxCrossEncoder

    model = OnnxCrossEncoder(model_path=store / NAME, device="cpu", dtype=dtype, batch_size=32).load()
    return lambda query, docs: model.score([(query, d) for d in docs])


def _p50(values: list[float]) -> float:
    return float(statistics.median(values))


def serve_clients(store: Path, queries: list[tuple[str, list[str]]], clients: int, requests: int) -> dict[str, Any]:
    """``/v1/rerank`` answered to ``clients`` threads, ``requests`` each: aggregate pairs/s, p50 latency."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    model_id = f"{NAME}:fp32"

    def client(index: int, url: str) -> None:
        with httpx.Client(timeout=300) as http:
            for n in range(requests):
                query, docs = queries[(index * requests + n) % len(queries)]
                began = time.perf_counter()
                reply = http.post(f"{url}/v1/rerank", json={"model": model_id, "query": query, "documents": docs})
                reply.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - began)

    os.environ["LOCAL_MODELS_DIR"] = str(store)
    contender = Contender(f"{ORT} fp32", [sys.executable, "-m", "ortmodels", "serve", "--port", "{port}",
                                          "--models", model_id, "--max-queue", "256"], model_id)
    process, url = start_server(contender, CACHE.parent / "rerank-server.log")
    try:
        client(0, url)  # warm-up
        latencies.clear()
        threads = [threading.Thread(target=client, args=(i, url)) for i in range(clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        wall = time.perf_counter() - began
    finally:
        stop_server(process)
    pairs = clients * requests * len(queries[0][1])
    return {"clients": clients, "requests": clients * requests, "pairs_per_s": round(pairs / wall, 1),
            "latency_p50_ms": round(_p50(latencies) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=20, help="queries per document count and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--documents", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--requests", type=int, default=16, help="server requests per client")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args()
    load = {"start": [round(x, 2) for x in os.getloadavg()]}

    checkpoint = build_checkpoint(args.models_dir)
    store = exported_store(checkpoint)
    texts = stdlib_sentences(args.queries + max(args.documents) + 1)
    sets = {n: [(texts[q].split(". ")[0][:200], texts[args.queries + 1:args.queries + 1 + n][:n])
                for q in range(args.queries)] for n in args.documents}

    runs: dict[str, Rank] = {
        CROSS_ENCODER: cross_encoder(checkpoint),
        FASTEMBED: fastembed(store / NAME / "onnx" / "fp32"),
        f"{ORT} fp32": ortmodels(store, "fp32"),
        f"{ORT} int8": ortmodels(store, "int8"),
    }
    for run in runs.values():  # warm-up
        for n in args.documents:
            run(*sets[n][0])

    began = time.perf_counter()
    latency: dict[tuple[str, int], list[list[float]]] = {(name, n): [] for name in runs for n in args.documents}
    scores: dict[tuple[str, int], list[list[float]]] = {}
    names = list(runs)
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for n in args.documents:
            for name in names[shift:] + names[:shift]:
                time.sleep(SETTLE_S)
                times, got = [], []
                for query, docs in sets[n]:
                    start = time.perf_counter()
                    got.append(list(runs[name](query, docs)))
                    times.append(time.perf_counter() - start)
                latency[name, n].append(times)
                scores[name, n] = got
                print(f"round {round_ + 1}/{args.rounds} 1x{n} {name}: p50 {_p50(times) * 1000:.1f} ms, "
                      f"{n / _p50(times):.0f} pairs/s", flush=True)

    rows, figures = [], {}
    for name in names:
        row: dict[str, Any] = {"name": name}
        for n in args.documents:
            per_round = [n / _p50(times) for times in latency[name, n]]
            row[f"q1x{n}_pairs_per_s"] = round(statistics.median(per_round), 1)
            row[f"q1x{n}_p50_ms"] = round(statistics.median(_p50(t) for t in latency[name, n]) * 1000, 2)
            row[f"q1x{n}_rounds_pairs_per_s"] = [round(r, 1) for r in per_round]
            ref = np.asarray(scores[CROSS_ENCODER, n], dtype=np.float64)
            row[f"q1x{n}_max_abs_diff_to_cross_encoder"] = float(np.abs(np.asarray(scores[name, n]) - ref).max())
        rows.append(row)
    for n in args.documents:
        for ours in (f"{ORT} fp32", f"{ORT} int8"):
            for theirs in (CROSS_ENCODER, FASTEMBED):
                per_round = [_p50(b) / _p50(a) for a, b in zip(latency[ours, n], latency[theirs, n])]
                figures[ratio_key(f"rerank_q1x{n}", ours, theirs)] = round(statistics.median(per_round), 3)
        fp32, int8 = scores[f"{ORT} fp32", n], scores[f"{ORT} int8", n]
        kept = [np.array_equal(np.argsort(-np.asarray(a), kind="stable")[:5], np.argsort(-np.asarray(b), kind="stable")[:5])
                for a, b in zip(fp32, int8)]
        figures[f"rerank_top5_order_kept_q1x{n}: {ORT} int8 vs fp32"] = round(float(np.mean(kept)), 3)

    server = [serve_clients(store, sets[min(args.documents)], c, args.requests) for c in (1, 8)]
    figures[ratio_key("rerank_server_pairs_per_s", f"{ORT} fp32 8 clients", f"{ORT} fp32 1 client")] = round(
        server[1]["pairs_per_s"] / server[0]["pairs_per_s"], 3)
    load["end"] = [round(x, 2) for x in os.getloadavg()]

    print(f"\n{NAME}: {args.queries} queries per size, median of {args.rounds} rounds")
    for row in rows:
        print(f"{row['name']:38}" + "".join(f"  1x{n}: {row[f'q1x{n}_pairs_per_s']:8.0f} pairs/s "
                                            f"p50 {row[f'q1x{n}_p50_ms']:8.1f} ms" for n in args.documents))
    for level in server:
        print(f"/v1/rerank, {level['clients']} clients: {level['pairs_per_s']:.0f} pairs/s, "
              f"p50 {level['latency_p50_ms']:.1f} ms")
    for key, value in figures.items():
        print(f"  {key:70} {value:.3f}")

    path = write_json("rerank", {
        "benchmark": "rerank",
        "model": NAME,
        "shape": "cross-encoder/ms-marco-MiniLM-L-6-v2",
        "corpus": "first paragraphs of Python standard-library docstrings",
        "queries": args.queries,
        "documents": args.documents,
        "rounds": args.rounds,
        "timed_s": round(time.perf_counter() - began, 1),
        "load_average": load,
        "machine": machine(),
        "versions": versions(),
        "figures": figures,
        "results": rows,
        "server": server,
    })
    n = max(args.documents)
    chart = bar_chart("rerank", f"1 query x {n} documents, {machine()['cores']} cores", names,
                      [r[f"q1x{n}_pairs_per_s"] for r in rows], "pairs / s (higher is better)")
    print(f"wrote {path} and {chart}")


if __name__ == "__main__":
    main()
