"""ortmodels chat (fp32, int8, int4) against onnxruntime-genai, llama.cpp, optimum and PyTorch.

Every contender answers the same two prompts with greedy decoding: the short chat (about
40 tokens) with ``--new-tokens`` new tokens for decode tokens/s and time to first token,
and the long one (about 1,000 tokens) for time to first token only. Each contender lives
in its own worker process (``benchmarks.chat_worker``) run by its own interpreter: the
dev venv for ortmodels, optimum and PyTorch, the peers venv for onnxruntime-genai and
llama.cpp. Workers are loaded one after the other and kept alive for the whole run.

Rounds are interleaved across the workers, the order rotating from round to round, each
run preceded by a short pause (SETTLE_S) so the previous run's spinning threads have gone
idle; each ratio is taken within a round and the median over rounds reported (shared
virtual machines swing by several times within a minute: read the per-round figures in
the JSON before trusting a ratio). Every engine keeps its default thread count except
llama.cpp, which is given 2 threads (its default is not all cores).

Engine against engine: ortmodels runs with prompt-lookup speculative decoding off
(``MODEL_SPECULATIVE=off``, recorded as ``engine_settings``), as none of the peers
speculates; ``bench_speculative`` measures speculation in its own rows.

Token counts: transformers and optimum get ``min_new_tokens == max_new_tokens``; genai
and llama.cpp are stopped after exactly the cap; ortmodels runs as users run it
(``stream()`` with ``max_tokens``) and stops at an end-of-sequence token, which the
question is chosen never to reach within 128 tokens; should it stop early anyway, its
tokens/s use the tokens it made and the row is flagged.

    python -m benchmarks.bench_chat [--new-tokens 128] [--rounds 3] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.contenders import CHART_LABELS, OPTIMUM, PYTORCH, SPECS, start_worker
from benchmarks.prompts import build_prompts
from benchmarks.protocol import Worker
from benchmarks.report import bar_chart, machine, use_engine_settings, versions, write_json
from benchmarks.targets import (
    GENAI,
    LLAMA_CPP,
    ORT,
    PEAK_RSS_VS_LLAMA_FIGURE,
    ratio_key,
)

MODEL = "smollm2-135m-instruct"
#: Pause before each timed run, so the previous contender's spinning worker threads
#: (PyTorch's OpenMP pool, ONNX Runtime's pool) have gone idle and steal no cycles.
SETTLE_S = 1.0
#: New tokens for the long prompt: only its time to first token is read.
LONG_NEW_TOKENS = 4
#: (ours, theirs) pairs whose ratios are reported; the first of each pair is ortmodels.
PAIRS = [
    *((f"{ORT} {p}", f"{GENAI} {p}") for p in ("fp32", "int8", "int4")),
    (f"{ORT} int4", LLAMA_CPP),
    *((f"{ORT} {p}", ref) for p in ("fp32", "int8", "int4") for ref in (OPTIMUM, PYTORCH)),
]


def median_ratio(ours: list[float], theirs: list[float]) -> float | None:
    """Median of per-round ratios (rounds paired by index); None when either side has no runs."""
    pairs = [a / b for a, b in zip(ours, theirs) if b > 0]
    return round(statistics.median(pairs), 3) if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--long-tokens", type=int, default=1000, help="length of the long prompt")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--only", nargs="*", choices=sorted(SPECS), help="run only these contenders")
    args = parser.parse_args()
    engine_settings = use_engine_settings()  # the ortmodels workers inherit it

    began = time.perf_counter()
    prompts = build_prompts(args.models_dir / MODEL, args.long_tokens)
    names = [n for n in SPECS if not args.only or n in args.only]
    workers: dict[str, Worker] = {}
    ready: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    memory: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.json"
        prompt_file.write_text(json.dumps(prompts), encoding="utf-8")
        try:
            for name in names:  # one at a time, so loading and warm-up are not contended
                print(f"loading {name} ...", flush=True)
                try:
                    workers[name] = start_worker(name, args.models_dir, "serve", prompt_file)
                    ready[name] = workers[name].expect("ready")
                except (RuntimeError, OSError) as exc:
                    failed[name] = str(exc)
                    print(f"  {name} failed to load: {exc}", flush=True)
                    workers.pop(name, None)
            results = {name: {"short": [], "long": []} for name in workers}
            order = list(workers)
            for round_ in range(args.rounds):
                shift = round_ % len(order)  # rotate, so no contender always runs first or last
                for name in order[shift:] + order[:shift]:
                    w = workers[name]
                    for prompt, new_tokens in (("short", args.new_tokens), ("long", LONG_NEW_TOKENS)):
                        time.sleep(SETTLE_S)
                        w.send(f"run {prompt} {new_tokens}")
                        results[name][prompt].append(w.expect("result"))
                    short, long_ = results[name]["short"][-1], results[name]["long"][-1]
                    print(f"round {round_ + 1}/{args.rounds} {name}: {short['tokens']} tokens, "
                          f"{short['decode_tokens_per_s']:.1f} tok/s, first token {short['ttft_s'] * 1000:.0f} ms, "
                          f"long prompt first token {long_['ttft_s'] * 1000:.0f} ms", flush=True)
            for name, w in workers.items():
                w.send("quit")
                memory[name] = w.expect("memory")
                w.process.wait(timeout=60)
        finally:
            for w in workers.values():
                w.close()
    wall_s = time.perf_counter() - began

    prompt_tokens = {p: sorted({r["prompt_tokens"][p] for r in ready.values()}) for p in prompts}
    for prompt, counts in prompt_tokens.items():
        if len(counts) > 1:
            print(f"WARNING: contenders disagree on the {prompt} prompt's token count: "
                  f"{ {n: r['prompt_tokens'][prompt] for n, r in ready.items()} }")

    def series(name: str, prompt: str, key: str) -> list[float]:
        return [r[key] for r in results.get(name, {}).get(prompt, [])]

    rows = []
    for name in workers:
        runs = results[name]["short"]
        rows.append({
            "name": name,
            "venv": SPECS[name].venv,
            "prompt_tokens": ready[name]["prompt_tokens"],
            "new_tokens": sorted({r["tokens"] for r in runs}),
            "stopped_early": any(r["tokens"] < args.new_tokens for r in runs),
            "decode_tokens_per_s": round(statistics.median(series(name, "short", "decode_tokens_per_s")), 2),
            "decode_tokens_per_s_rounds": [round(v, 2) for v in series(name, "short", "decode_tokens_per_s")],
            "ttft_short_ms": round(statistics.median(series(name, "short", "ttft_s")) * 1000, 1),
            "ttft_short_ms_rounds": [round(v * 1000, 1) for v in series(name, "short", "ttft_s")],
            "ttft_long_ms": round(statistics.median(series(name, "long", "ttft_s")) * 1000, 1),
            "ttft_long_ms_rounds": [round(v * 1000, 1) for v in series(name, "long", "ttft_s")],
            "peak_rss_mib": round(memory[name]["peak_rss_mib"], 1),
            "rss_increase_mib": round(memory[name]["peak_rss_mib"] - memory[name]["baseline_rss_mib"], 1),
            "load_s": round(ready[name]["load_s"], 2),
            "answer": runs[-1]["text"],
        })

    figures: dict[str, float] = {}
    for ours, theirs in PAIRS:
        for measure, prompt, key in (("decode", "short", "decode_tokens_per_s"),
                                     ("ttft_short", "short", "ttft_s"), ("ttft_long", "long", "ttft_s")):
            value = median_ratio(series(ours, prompt, key), series(theirs, prompt, key))
            if value is not None:
                figures[ratio_key(measure, ours, theirs)] = value

    ours, llama = memory.get(f"{ORT} int4"), memory.get(LLAMA_CPP)
    if ours and llama:
        figures[PEAK_RSS_VS_LLAMA_FIGURE] = round(ours["peak_rss_mib"] / llama["peak_rss_mib"], 3)

    print(f"\n{MODEL}: {prompt_tokens['short']}-token chat prompt, {args.new_tokens} greedy new tokens; "
          f"{prompt_tokens['long']}-token prompt for its first token; median of {args.rounds} rounds")
    print(f"{'contender':36} {'decode tok/s':>12} {'TTFT short ms':>14} {'TTFT long ms':>13} {'peak RSS MiB':>13}")
    for row in rows:
        flag = " (stopped early)" if row["stopped_early"] else ""
        print(f"{row['name']:36} {row['decode_tokens_per_s']:12.1f} {row['ttft_short_ms']:14.0f} "
              f"{row['ttft_long_ms']:13.0f} {row['peak_rss_mib']:13.0f}{flag}")
    print("\nratios (median of per-round ratios; decode: higher is better, first token: lower is better)")
    for key, value in figures.items():
        print(f"  {key:70} {value:.2f}")
    for name, why in failed.items():
        print(f"  {name}: not measured ({why})")

    path = write_json("chat", {
        "benchmark": "chat",
        "model": MODEL,
        "prompts": {name: p["messages"] for name, p in prompts.items()},
        "prompt_tokens": prompt_tokens,
        "new_tokens": args.new_tokens,
        "long_prompt_new_tokens": LONG_NEW_TOKENS,
        "rounds": args.rounds,
        "torch_threads": ready.get(PYTORCH, {}).get("torch_threads"),
        "llama_cpp_threads": SPECS[LLAMA_CPP].options["threads"],
        "wall_s": round(wall_s, 1),
        "engine_settings": engine_settings,
        "machine": machine(),
        "versions": versions(),
        "failed": failed,
        "figures": figures,
        "results": rows,
    })
    labels = [CHART_LABELS.get(r["name"], r["name"]) for r in rows]
    charts = [
        bar_chart("chat", f"{MODEL}, {args.new_tokens} greedy tokens, {machine()['cores']} cores", labels,
                  [r["decode_tokens_per_s"] for r in rows], "decode tokens / s (higher is better)"),
        bar_chart("chat_ttft", f"{MODEL}, {prompt_tokens['long'][0] if prompt_tokens['long'] else '?'}-token prompt",
                  labels, [r["ttft_long_ms"] for r in rows], "time to first token, ms (lower is better)"),
    ]
    print(f"wall time {wall_s:.0f} s; wrote {path}, {', '.join(str(c) for c in charts)}")


if __name__ == "__main__":
    main()
