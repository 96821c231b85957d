"""Check the CUDA execution provider against the CPU on exported models: `make check-cuda`.

CI has no GPU, so the suite never runs the CUDA provider; this script is the check to run on a
machine that has one (with the GPU build, ``make install-gpu``). For each exported chat and
embedding model in ``--models`` (default: ``LOCAL_MODELS_DIR``) and each of its variants, one
child process per device loads it through the public classes and records: the providers the
session runs on and where onnxruntime placed each node, the logits of a fixed prompt, greedy
answers to three questions, a streamed answer, four concurrent answers, and decode speed. The
parent then compares CUDA with CPU (logit distance, greedy agreement) and writes a JSON report.

    python scripts/check_cuda.py [--models DIR] [--out report.json] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

QUESTIONS = ["What is the capital of France?", "Write one sentence about the sea.",
             "List three colours."]
LOGIT_PROMPT = "The quick brown fox jumps over the lazy dog. Tell me more about foxes."
NEW_TOKENS = 48
SPEED_TOKENS = 128
TEXTS = ["A man is playing a guitar.", "The capital of France is Paris.", "hash tables map keys to values"]


def _child_chat(folder: Path, dtype: str, device: str, out: Path) -> dict[str, Any]:
    """One chat variant on one device (its KV precision from ``MODEL_KV_DTYPE``, set by the parent)."""
    import numpy as np
    from langchain_core.messages import HumanMessage

    from ortmodels import OnnxChatModel

    began = time.perf_counter()
    chat = OnnxChatModel(model_path=str(folder), dtype=dtype, device=device)
    chat.invoke([HumanMessage("hi")], temperature=0.0, max_tokens=1)  # loads
    loaded = time.perf_counter() - began
    service = chat.loaded
    session = service.engine.decoder.session
    ids = chat.prompt_token_ids([HumanMessage(LOGIT_PROMPT)])
    logits = np.asarray(service.engine.all_logits(ids), dtype=np.float32)
    np.save(out.with_suffix(".npy"), logits)
    greedy = [chat.invoke([HumanMessage(q)], temperature=0.0, max_tokens=NEW_TOKENS).content for q in QUESTIONS]
    streamed = "".join(str(c.content) for c in chat.stream([HumanMessage(QUESTIONS[0])], temperature=0.0,
                                                            max_tokens=NEW_TOKENS))
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda q: chat.invoke([HumanMessage(q)], temperature=0.0,
                                                       max_tokens=NEW_TOKENS).content, QUESTIONS + QUESTIONS[:1]))
    start = time.perf_counter()
    answer = chat.invoke([HumanMessage("Tell me a long story about a dragon.")], temperature=0.0,
                         max_tokens=SPEED_TOKENS)
    seconds = time.perf_counter() - start
    made = (answer.usage_metadata or {}).get("output_tokens", 0)
    return {
        "providers": session.get_providers(),
        "variant": chat.variant,
        "kv_bytes_per_token": chat.kv_bytes_per_token,
        "load_s": round(loaded, 3),
        "greedy": greedy,
        "stream_equals_invoke": streamed == greedy[0],
        "concurrent_equal_sequential": together == greedy + greedy[:1],
        "decode_tokens": made,
        "decode_tok_s": round(made / seconds, 1) if seconds > 0 else None,
        "finite": bool(np.isfinite(logits).all()),
    }


def _child_embed(folder: Path, dtype: str, device: str, out: Path) -> dict[str, Any]:
    import numpy as np

    from ortmodels import OnnxEmbeddingModel

    model = OnnxEmbeddingModel(model_path=str(folder), dtype=dtype, device=device)
    vectors = np.asarray(model.embed_documents(TEXTS * 11), dtype=np.float32)  # a few batches' worth
    np.save(out.with_suffix(".npy"), vectors)
    return {"providers": model.session.get_providers(), "finite": bool(np.isfinite(vectors).all()),
            "dimension": int(vectors.shape[1])}


def _placement(graph: Path) -> dict[str, int]:
    """Nodes per provider in a CUDA session of ``graph`` with onnxruntime's default options (not
    the runtime's), read from its verbose log."""
    code = (
        "import onnxruntime as ort, sys\n"
        "o = ort.SessionOptions(); o.log_severity_level = 0; o.log_verbosity_level = 0\n"
        f"ort.InferenceSession({str(graph)!r}, o, providers=['CUDAExecutionProvider', 'CPUExecutionProvider'])\n"
    )
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"error": "no session within 600 s"}
    counts: dict[str, Any] = {}
    provider, cpu_ops = "", set()
    for line in (run.stdout + run.stderr).splitlines():
        found = re.search(r"(?:All nodes placed on|Node\(s\) placed on) \[(\w+)\]\. Number of nodes: (\d+)", line)
        if found:
            provider = found.group(1)
            counts[provider] = counts.get(provider, 0) + int(found.group(2))
            continue
        node = re.search(r"\]\s+(\w+) \(([^)]*)\)\s*$", line)
        if node and provider == "CPUExecutionProvider":
            cpu_ops.add(node.group(1))
        elif not node:
            provider = ""
    if run.returncode:
        counts["error"] = (run.stderr or run.stdout)[-500:]
    if cpu_ops:
        counts["cpu_op_types"] = sorted(cpu_ops)
    return counts


def _variants(folder: Path) -> tuple[str, list[str]]:
    manifest = json.loads((folder / "onnx" / "manifest.json").read_text())
    kind = manifest.get("kind") or ""
    present = [v for v in manifest.get("variants", {}) if (folder / "onnx" / v / "model.onnx").exists()]
    return kind, present


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8", "int4": "int4"}


def _run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    try:
        run = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                             timeout=900, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "no answer within 900 s"}
    if run.returncode:
        return {"error": (run.stderr or run.stdout)[-1500:]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def _compare(cpu: dict[str, Any], gpu: dict[str, Any], cpu_npy: Path, gpu_npy: Path) -> dict[str, Any]:
    import numpy as np

    if "error" in cpu or "error" in gpu:
        return {}
    a, b = np.load(cpu_npy), np.load(gpu_npy)
    figures: dict[str, Any] = {"max_abs_diff": float(np.abs(a - b).max())}
    if a.ndim == 2 and "greedy" in cpu:
        figures["argmax_agreement"] = float((a.argmax(-1) == b.argmax(-1)).mean())
        figures["greedy_equal"] = sum(x == y for x, y in zip(cpu["greedy"], gpu["greedy"]))
        figures["greedy_common_chars"] = [len(os.path.commonprefix([x, y])) for x, y in zip(cpu["greedy"], gpu["greedy"])]
    else:
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        figures["min_cosine"] = float(((a * b).sum(axis=1) / norms).min())
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("LOCAL_MODELS_DIR", "models")))
    parser.add_argument("--out", type=Path, default=Path("cuda-check.json"))
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--kv-models", nargs="*", default=None,
                        help="models whose fp32/int4 variants also run with each KV precision (default: all)")
    parser.add_argument("--devices", default="cpu,cuda", help="the two devices compared (a dry run: cpu,cpu)")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        kind, folder, dtype, device, _kv, out = args.child  # the KV precision travels in the environment
        result = (_child_chat(Path(folder), dtype, device, Path(out)) if kind == "chat"
                  else _child_embed(Path(folder), dtype, device, Path(out)))
        print(json.dumps(result))
        return 0

    import onnxruntime as ort

    report: dict[str, Any] = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
                              "models": {}}
    first, second = args.devices.split(",")
    if "cuda" in (first, second) and "CUDAExecutionProvider" not in report["providers"]:
        print("No CUDAExecutionProvider here: install the GPU build (make install-gpu).", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="cuda-check-"))
    folders = sorted(p for p in args.models.iterdir() if (p / "onnx" / "manifest.json").exists())
    if args.only:  # in the order given
        folders = [args.models / name for name in args.only if args.models / name in folders]
    for folder in folders:
        kind, variants = _variants(folder)
        if kind not in ("chat", "embedding"):
            continue
        chat = kind == "chat"
        for variant in variants:
            each_kv = chat and variant in ("fp32", "int4") and (args.kv_models is None or folder.name in args.kv_models)
            kvs = ["auto", "fp32", "fp16"] if each_kv else ["auto"]
            for kv in kvs:
                key = f"{folder.name}/{variant}" + ("" if kv == "auto" else f"/kv-{kv}")
                results = {}
                for device in dict.fromkeys((first, second)):
                    env = {**os.environ, "MODEL_KV_DTYPE": kv, "MODEL_DEVICE": device}
                    out = scratch / f"{folder.name}-{variant}-{kv}-{device}"
                    began = time.perf_counter()
                    results[device] = _run_child(["chat" if chat else "embed", str(folder), _DTYPES[variant],
                                                  device, kv, str(out)], env)
                    results[device]["child_s"] = round(time.perf_counter() - began, 1)
                entry = {**results, "compare": _compare(results[first], results[second],
                                                        scratch / f"{folder.name}-{variant}-{kv}-{first}.npy",
                                                        scratch / f"{folder.name}-{variant}-{kv}-{second}.npy")}
                if kv == "auto" and second == "cuda":
                    graphs = sorted((folder / "onnx" / variant).glob("model*.onnx"))
                    entry["placement"] = {g.name: _placement(g) for g in graphs}
                report["models"][key] = entry
                summary = {d: {k: results[d].get(k) for k in ("providers", "decode_tok_s", "error")}
                           for d in results}
                print(key, json.dumps(entry["compare"]), json.dumps(summary)[:600], flush=True)
                args.out.write_text(json.dumps(report, indent=1))  # after each, should a later one hang
    args.out.write_text(json.dumps(report, indent=1))
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
