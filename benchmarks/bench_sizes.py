"""Real sizes: ortmodels against onnxruntime-genai and llama.cpp on a 1B/3B-shaped checkpoint.

The checkpoint is `benchmarks.checkpoints`' seeded random-weight one in a published model's
exact shape (``--shape``, default ``llama-3.2-1b``); random weights serve speed, memory and
file size, never quality. Each contender gets it its own way, as a user would:

- **ortmodels** int4 and int8, from ``ortmodels export SHAPE --dtype int4,int8 --skip-gates
  --int4-search`` (int4 is then the smallest candidate, all 4-bit in blocks of 128 from 1B
  up, as nothing can be judged; run beforehand, this benchmark reads the export's own record
  of its time and peak memory from the manifest), run with fp16 keys and values
  (``MODEL_KV_DTYPE=fp16``) in a 200 MB KV cache at 1B (``MODEL_KV_CACHE``: the 4,000-token
  conversation must fit it; a larger shape gets 1.1x that conversation's fp16 keys and values);
- **onnxruntime-genai** int4 from its model builder on the same checkpoint;
- **llama.cpp** Q4_0, Q4_K_M and Q8_0 from its own ``convert_hf_to_gguf.py`` (bf16) and
  ``llama-quantize``, both from the llama.cpp that llama-cpp-python 0.3.36 vendors (the
  converter is told the sample tokenizer's pre-tokenizer, ``smollm``, whose hash it does not
  know); decoded through llama-cpp-python, served by ``llama-server``.

Conversions are timed with their peak memory (the resident memory of the process tree,
sampled every 0.1 s) and cached in ``benchmarks/.cache/sizes/SHAPE/`` with that record.
Then, per contender, one worker process (`benchmarks.sizes_worker`) measured interleaved
over ``--rounds`` rounds: decode tokens/s of one stream (the short prompt, ``--new-tokens``
greedy tokens), time to first token on a ``--long-tokens`` prompt, and at the end one
``--conversation-tokens`` conversation, whose peak RSS (over the worker's life) is the
memory figure. Every contender is fed the same token ids (see `benchmarks.prompts`). Then
8 streams: ``ortmodels serve`` against ``llama-server --parallel 8`` (``-c`` 2048 per slot),
8 streaming clients at once (`benchmarks.bench_server`'s client), tokens/s of all of them.
KV bytes per token: ortmodels' engine reports its own; llama.cpp's f16 cache and genai's
cache are computed from the config and the cache's element type.

    python -m benchmarks.bench_sizes --models-dir DIR [--shape llama-3.2-1b] [--rounds 3]
        [--new-tokens 64] [--long-tokens 2000] [--conversation-tokens 4000] [--quick]

Writes results/sizes.json and results/sizes.png (the 1B shape; another shape's part is
`targets.sizes_part`'s: ``sizes_3b`` for ``llama-3.2-3b``). ``--no-genai`` leaves
onnxruntime-genai out (its builder's memory at 3B is more than a 24 GB machine has).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_concurrency import median_ratio, rotated
from benchmarks.bench_server import (
    LLAMA_SERVER_BIN,
    Contender,
    one_level,
    start_server,
    stop_server,
)
from benchmarks.corpus import stdlib_sentences
from benchmarks.peers.env import CACHE, peers_python
from benchmarks.prompts import build_prompts
from benchmarks.protocol import Worker
from benchmarks.report import (
    machine,
    save_chart,
    use_engine_settings,
    versions,
    write_json,
)
from benchmarks.sizes_worker import KV_CACHE_BYTES
from benchmarks.targets import GENAI as GENAI_NAME
from benchmarks.targets import ORT, ratio_key, sizes_export_peak_figure, sizes_part

ROOT = Path(__file__).resolve().parents[1]
LLAMA_CPP_SRC = CACHE / "llama-server" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
LLAMA_QUANTIZE_BIN = LLAMA_SERVER_BIN.parent / "llama-quantize"
GGUF_TYPES = ("Q4_0", "Q4_K_M", "Q8_0")
GENAI = f"{GENAI_NAME} int4"
CTX_PER_SLOT = 2048
#: The converter, told the pre-tokenizer of the sample's tokenizer (the size checkpoints carry it):
#: llama.cpp knows SmolLM's pre-tokenizer as "smollm" but not this file's hash of it.
CONVERT = """
import runpy, sys
src = sys.argv.pop(1)
sys.path[:0] = [src, src + "/gguf-py"]
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"
sys.argv[0] = src + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def measured(command: list[str], log: Path) -> dict[str, float]:
    """Run ``command`` to its end: its seconds and the peak resident memory of its process tree."""
    import psutil

    began = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        root, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)
    if process.returncode != 0:
        sys.exit(f"{command[0]} failed ({process.returncode}); the end of {log}:\n"
                 + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
    return {"seconds": round(time.perf_counter() - began, 1), "peak_rss_bytes": peak}


def cached(folder: Path, name: str, output: str, make: Any) -> dict[str, Any]:
    """``make()``'s record (time, peak memory, bytes) of ``folder / output``, kept beside it."""
    record_file = folder / f"{name}.record.json"
    if record_file.is_file() and (folder / output).exists():
        record = json.loads(record_file.read_text())
    else:
        record = make()
        record_file.write_text(json.dumps(record, indent=2) + "\n")
    return {**record, "path": str(folder / output), "bytes": size_of(folder / output)}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def convert_peers(model_dir: Path, folder: Path, python: Path, genai_too: bool = True) -> dict[str, dict[str, Any]]:
    """genai int4 (unless not ``genai_too``) and the GGUFs, built once per checkpoint into ``folder`` with their cost."""
    folder.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}

    def genai() -> dict[str, Any]:
        out = folder / "genai-int4"
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            cost = measured([str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o",
                             str(out), "-p", "int4", "-e", "cpu", "-c", tmp], folder / "genai-int4.log")
        return cost

    if genai_too:
        records[GENAI] = cached(folder, "genai-int4", "genai-int4", genai)
    bf16 = folder / "model-bf16.gguf"

    def convert() -> dict[str, Any]:
        cost = measured([str(python), "-c", CONVERT, str(LLAMA_CPP_SRC), str(model_dir), "--outfile", str(bf16),
                         "--outtype", "bf16"], folder / "convert.log")
        return cost

    records["convert_hf_to_gguf bf16"] = cached(folder, "convert", bf16.name, convert)
    for kind in GGUF_TYPES:
        target = folder / f"model-{kind}.gguf"

        def quantize(kind: str = kind, target: Path = target) -> dict[str, Any]:
            cost = measured([str(LLAMA_QUANTIZE_BIN), str(bf16), str(target), kind, "2"], folder / f"{kind}.log")
            return cost

        records[f"llama.cpp {kind}"] = cached(folder, kind, target.name, quantize)
    return records


def kv_bytes(config: dict[str, Any], element_bytes: int) -> int:
    """Keys and values of every layer for one token."""
    heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * heads * head_dim * element_bytes


def export_record(model_dir: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The ortmodels export's cost (from its manifest) and each variant's bytes."""
    manifest = json.loads((model_dir / "onnx" / "manifest.json").read_text())
    variants = {name: size_of(model_dir / "onnx" / name) for name in manifest["variants"]
                if (model_dir / "onnx" / name).is_dir()}
    return manifest.get("export_cost") or {}, variants


def conversation_prompt(model_dir: Path, tokens: int) -> dict[str, Any]:
    """A ``tokens``-token conversation: the long prompt, grown to that size."""
    return build_prompts(model_dir, long_tokens=tokens)["long"]


def single_streams(contenders: dict[str, list[str]], prompts: dict[str, dict[str, Any]], rounds: int,
                   new_tokens: int, logs: Path) -> dict[str, dict[str, Any]]:
    """Per contender: ready info, per-round decode tokens/s and TTFT, memory after the conversation."""
    prompt_file = logs / "prompts.json"
    prompt_file.write_text(json.dumps(prompts))
    workers: dict[str, Worker] = {}
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, (python, *args) in contenders.items():
            worker = Worker(name, python, ["-m", "benchmarks.sizes_worker", *args, "--input", str(prompt_file)])
            out[name] = {"ready": worker.expect("ready"), "decode": [], "ttft_long": []}
            workers[name] = worker
            print(f"{name}: loaded in {out[name]['ready']['load_s']:.1f} s", flush=True)
        for round_index in range(rounds):
            for name in rotated(list(workers), round_index):
                worker = workers[name]
                worker.send(f"run short {new_tokens}")
                out[name]["decode"].append(worker.expect("result")["decode_tokens_per_s"])
                worker.send("run long 1")
                out[name]["ttft_long"].append(worker.expect("result")["ttft_s"])
                print(f"round {round_index + 1} {name}: {out[name]['decode'][-1]:.1f} tok/s, "
                      f"TTFT {out[name]['ttft_long'][-1]:.2f} s", flush=True)
        for name, worker in workers.items():  # one at a time: each holds the conversation alone
            worker.send("run conversation 16")
            out[name]["conversation"] = worker.expect("result")
            worker.send("quit")
            out[name]["memory"] = worker.expect("memory")
            worker.close()
            print(f"{name}: peak RSS {out[name]['memory']['peak_rss_mib']:.0f} MiB", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    return out


def eight_streams(servers: list[Contender], streams: int, rounds: int, new_tokens: int,
                  logs: Path) -> dict[str, list[float]]:
    """Aggregate tokens/s of ``streams`` streaming clients, per server and round."""
    questions = stdlib_sentences(streams * rounds * len(servers) + 10)[10:]
    running = {c.name: start_server(c, logs / f"{c.name.replace(' ', '_')}.log") for c in servers}
    rates: dict[str, list[float]] = {c.name: [] for c in servers}
    try:
        asked = 0
        for round_index in range(rounds):
            for contender in rotated(servers, round_index):
                batch, asked = questions[asked:asked + streams], asked + streams
                level = asyncio.run(one_level(running[contender.name][1], contender.model, batch, new_tokens))
                rates[contender.name].append(level["tokens_per_s"])
                print(f"round {round_index + 1} {contender.name}: {level['tokens_per_s']:.1f} tok/s", flush=True)
    finally:
        for process, _ in running.values():
            stop_server(process)
    return rates


def figures_of(single: dict[str, dict[str, Any]], streams: dict[str, list[float]], ours: list[str],
               stream_names: dict[str, str], export: dict[str, Any], part: str = "sizes") -> dict[str, float]:
    """The ratios, keyed under ``part`` (`targets.sizes_part` of the shape measured)."""
    figures: dict[str, float] = {}
    for our in ours:
        for peer in (GENAI, "llama.cpp Q4_K_M", "llama.cpp Q4_0"):
            if our in single and peer in single:
                figures[ratio_key(f"{part}_decode", our, peer)] = median_ratio(single[our]["decode"],
                                                                                 single[peer]["decode"])
                figures[ratio_key(f"{part}_ttft_long", our, peer)] = median_ratio(single[our]["ttft_long"],
                                                                                    single[peer]["ttft_long"])
                figures[ratio_key(f"{part}_peak_rss", our, peer)] = (single[our]["memory"]["peak_rss_mib"]
                                                                     / single[peer]["memory"]["peak_rss_mib"])
        theirs = stream_names.get("llama")
        if our in stream_names and theirs and streams.get(stream_names[our]) and streams.get(theirs):
            figures[ratio_key(f"{part}_8_streams", our, "llama-server Q4_K_M parallel 8")] = median_ratio(
                streams[stream_names[our]], streams[theirs])
    if export.get("peak_rss_ratio"):
        figures[sizes_export_peak_figure(part)] = export["peak_rss_ratio"]
    return {k: round(v, 3) for k, v in figures.items() if v is not None}


def chart(single: dict[str, dict[str, Any]], title: str, part: str = "sizes") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(single)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].barh(names, [statistics.median(single[n]["decode"]) for n in names], color="#4c72b0")
    axes[0].set_xlabel("decode tokens/s, 1 stream (higher is better)")
    axes[1].barh(names, [statistics.median(single[n]["ttft_long"]) for n in names], color="#dd8452")
    axes[1].set_xlabel("time to first token, long prompt, s (lower is better)")
    axes[1].set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    return save_chart(fig, part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, required=True,
                        help="holds SHAPE/ with its ortmodels export (int4, int8)")
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--long-tokens", type=int, default=2000)
    parser.add_argument("--conversation-tokens", type=int, default=4000)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=["int4", "int8"])
    parser.add_argument("--no-streams", action="store_true", help="skip the 8-stream servers")
    parser.add_argument("--no-genai", action="store_true",
                        help="leave onnxruntime-genai out: its builder peaked at 4.2x the 1B checkpoint (10.5 GB), "
                             "so at 3B it needs more than a 24 GB machine has")
    parser.add_argument("--quick", action="store_true", help="a wiring check: 1 round, 8 tokens, short prompts")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.new_tokens, args.long_tokens, args.conversation_tokens = 1, 8, 200, 400
    model_dir = (args.models_dir / args.shape).resolve()
    if not (model_dir / "onnx" / "manifest.json").is_file():
        sys.exit(f"No ortmodels export in {model_dir}: run 'python -m benchmarks.checkpoints {args.shape} --out "
                 f"{args.models_dir}' then 'LOCAL_MODELS_DIR={args.models_dir} ortmodels export {args.shape} "
                 "--dtype int4,int8 --skip-gates --int4-search'.")
    python = peers_python()
    if not python.is_file() or not LLAMA_SERVER_BIN.is_file() or not LLAMA_QUANTIZE_BIN.is_file():
        sys.exit("The peers are missing: run 'make peers llama-server'.")
    engine_settings = use_engine_settings()
    config = json.loads((model_dir / "config.json").read_text())
    folder = CACHE / "sizes" / args.shape
    part = sizes_part(args.shape)
    conversions = convert_peers(model_dir, folder, python, genai_too=not args.no_genai)
    export, variant_bytes = export_record(model_dir)

    prompts = build_prompts(model_dir, long_tokens=args.long_tokens)
    prompts["conversation"] = conversation_prompt(model_dir, args.conversation_tokens)
    n_ctx = len(prompts["conversation"]["ids"]) + 64
    # 200 MB holds the conversation's fp16 keys and values at 1B (issue 20's figure); a larger shape gets room for them
    kv_cache = max(KV_CACHE_BYTES, int(round(1.1 * n_ctx * kv_bytes(config, 2), -6)))
    ours = [f"{ORT} {v}" for v in args.variants]
    contenders = {
        **{f"{ORT} {v}": [sys.executable, "ortmodels", str(model_dir), "--dtype", v, "--kv-cache", str(kv_cache)]
           for v in args.variants},
        **({} if args.no_genai else {GENAI: [str(python), "genai", conversions[GENAI]["path"]]}),
        **{f"llama.cpp {k}": [str(python), "llama.cpp", conversions[f"llama.cpp {k}"]["path"], "--n-ctx", str(n_ctx)]
           for k in GGUF_TYPES},
    }
    logs = Path(tempfile.mkdtemp(prefix="bench-sizes-"))
    single = single_streams(contenders, prompts, args.rounds, args.new_tokens, logs)

    streams: dict[str, list[float]] = {}
    stream_names: dict[str, str] = {}
    if not args.no_streams:
        os.environ["LOCAL_MODELS_DIR"] = str(model_dir.parent)
        os.environ["MODEL_KV_DTYPE"] = "fp16"
        servers = []
        for v in args.variants:
            model_id = f"{args.shape}:{v}"
            stream_names[f"{ORT} {v}"] = f"{ORT} serve {v}"
            servers.append(Contender(f"{ORT} serve {v}", [sys.executable, "-m", "ortmodels", "serve", "--port", "{port}",
                                                           "--models", model_id, "--max-queue", "256"], model_id))
        gguf = conversions["llama.cpp Q4_K_M"]["path"]
        stream_names["llama"] = f"llama-server Q4_K_M parallel {args.streams}"
        servers.append(Contender(stream_names["llama"],
                                 [str(LLAMA_SERVER_BIN), "-m", gguf, "--host", "127.0.0.1", "--port", "{port}", "-t", "2",
                                  "--parallel", str(args.streams), "-c", str(CTX_PER_SLOT * args.streams),
                                  "--cont-batching", "--no-webui"], "llama"))
        streams = eight_streams(servers, args.streams, args.rounds, args.new_tokens, logs)

    element = {"fp32": 4, "fp16": 2, "bf16": 2}
    rows = []
    for name, data in single.items():
        kv = data["ready"].get("kv_bytes_per_token")
        if kv is None:
            kv = kv_bytes(config, 4 if name == GENAI else 2)  # genai's CPU cache is fp32; llama.cpp's f16
        size = (variant_bytes.get(name.split()[-1]) if name.startswith(ORT)
                else conversions.get(name, {}).get("bytes"))
        rows.append({"name": name, "bytes": size, "kv_bytes_per_token": kv,
                     "decode_tokens_per_s": round(statistics.median(data["decode"]), 2),
                     "ttft_long_s": round(statistics.median(data["ttft_long"]), 3),
                     "peak_rss_mib": round(data["memory"]["peak_rss_mib"], 1),
                     "load_s": round(data["ready"]["load_s"], 2),
                     "prompt_tokens": data["ready"]["prompt_tokens"],
                     "rounds": {"decode": data["decode"], "ttft_long": data["ttft_long"]}})
    figures = figures_of(single, streams, ours, stream_names, export, part)
    payload = {
        "shape": args.shape, "rounds": args.rounds, "new_tokens": args.new_tokens,
        "long_tokens": len(prompts["long"]["ids"]), "conversation_tokens": len(prompts["conversation"]["ids"]),
        "streams": args.streams, "quick": args.quick, "without": ["onnxruntime-genai"] if args.no_genai else [],
        "engine_settings": engine_settings,
        "ortmodels_kv_cache_bytes": kv_cache,
        "kv_element_bytes": element, "export": {ORT: export, **conversions}, "results": rows,
        "streams_tokens_per_s": streams, "figures": figures, "machine": machine(), "versions": versions(),
    }
    path = write_json(part, payload)
    chart(single, f"{args.shape} (random weights), 2 threads", part)
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
