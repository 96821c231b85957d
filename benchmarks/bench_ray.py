"""``ortmodels serve --ray`` against ``ortmodels serve``: replicas × threads, and the cost of Ray's proxy.

Three real servers on loopback ports, all up for the whole run (each Ray one its own
local cluster, idle while another is timed): ``ortmodels serve`` (one process,
``MODEL_THREADS=2``); ``ortmodels serve --ray --replicas 1 --threads 2``; ``--replicas 2
--threads 1``; each serving only the chat sample at ``--variant``. After a warm-up of each,
every round runs ``--clients`` streaming ``openai.AsyncOpenAI`` clients at once on each
server in turn (the order rotates by round; greedy, ``--new-tokens`` at most, a different
question each, the same questions for every server), measured as `bench_server` measures:
aggregate tokens/s and time to first token; speculative decoding off in every server
(``MODEL_SPECULATIVE=off``). Figures are medians of per-round ratios.
Writes results/ray.json and results/ray.png.

    python -m benchmarks.bench_ray [--rounds 3] [--new-tokens 64] [--clients 8] [--variant int4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_concurrency import median_ratio, percentile
from benchmarks.bench_server import (
    MODEL,
    Contender,
    in_turn,
    one_level,
    servers_up,
)
from benchmarks.corpus import stdlib_sentences
from benchmarks.report import machine, save_chart, use_engine_settings, versions, write_json

DIRECT = "ortmodels serve"
RAY_1X2 = "serve --ray 1 replica × 2 threads"
RAY_2X1 = "serve --ray 2 replicas × 1 thread"


def contenders(model_id: str) -> list[Contender]:
    base = [sys.executable, "-m", "ortmodels", "serve", "--port", "{port}", "--models", model_id, "--max-queue", "256"]
    return [Contender(DIRECT, ["env", "MODEL_THREADS=2", *base], model_id),
            Contender(RAY_1X2, [*base, "--ray", "--replicas", "1", "--threads", "2"], model_id),
            Contender(RAY_2X1, [*base, "--ray", "--replicas", "2", "--threads", "1"], model_id)]


def chart(summary: dict[str, dict[str, float]], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
    colors = ["#999999", "#2f6fb0", "#6fa8dc"][: len(names)]
    for axis, key, unit in ((ax, "tokens_per_s", "aggregate tokens/s"), (ax2, "ttft_p50_s", "time to first token p50 (s)")):
        values = [summary[n][key] for n in names]
        bars = axis.barh(names, values, color=colors)
        axis.bar_label(bars, labels=[f"{v:,.2f}" if key.startswith("ttft") else f"{v:,.0f}" for v in values], padding=3)
        axis.invert_yaxis()
        axis.set_xlabel(unit)
        axis.set_xlim(0, max(values) * 1.25)
    ax2.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return save_chart(fig, "ray", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--variant", default="int4")
    args = parser.parse_args()
    engine_settings = use_engine_settings()  # the servers and their Ray replicas inherit it
    model_id = f"{MODEL}:{args.variant}"
    questions = stdlib_sentences(args.rounds * args.clients + 4)
    warm, asked = questions[:4], [questions[4 + r * args.clients: 4 + (r + 1) * args.clients] for r in range(args.rounds)]
    logs = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    def warm_up(url: str, contender: Contender) -> None:
        asyncio.run(one_level(url, contender.model, warm, 8))

    with servers_up(contenders(model_id), logs, warm_up) as servers:
        for rnd, contender in in_turn(contenders(model_id), args.rounds):
            url, up_s = servers[contender.name]
            row = asyncio.run(one_level(url, contender.model, asked[rnd], args.new_tokens))
            rows.append({"round": rnd, "contender": contender.name, "up_s": up_s, **row})
            print(f"round {rnd} {contender.name:36} {row['tokens_per_s']:7.1f} tok/s ({row['tokens']} tokens), "
                  f"TTFT p50 {percentile(row['ttft_s'], 50):.3f} s", flush=True)

    def per_round(name: str, key: str) -> list[float]:
        found = [r for r in rows if r["contender"] == name]
        return [r[key] if key == "tokens_per_s" else percentile(r["ttft_s"], 50) for r in found]

    names = [c.name for c in contenders(model_id)]
    summary = {n: {"tokens_per_s": statistics.median(per_round(n, "tokens_per_s")),
                   "ttft_p50_s": percentile([t for r in rows if r["contender"] == n for t in r["ttft_s"]], 50),
                   "ttft_p95_s": percentile([t for r in rows if r["contender"] == n for t in r["ttft_s"]], 95)}
               for n in names}
    clients = f"{args.clients} clients"
    figures = {
        f"tokens/s: {RAY_2X1} / {RAY_1X2}, {clients}": median_ratio(per_round(RAY_2X1, "tokens_per_s"),
                                                                   per_round(RAY_1X2, "tokens_per_s")),
        f"tokens/s: {RAY_1X2} / {DIRECT}, {clients}": median_ratio(per_round(RAY_1X2, "tokens_per_s"),
                                                                  per_round(DIRECT, "tokens_per_s")),
        f"TTFT p50: {RAY_1X2} / {DIRECT}, {clients}": median_ratio(per_round(RAY_1X2, "ttft"),
                                                                  per_round(DIRECT, "ttft")),
        f"TTFT p50: {RAY_2X1} / {RAY_1X2}, {clients}": median_ratio(per_round(RAY_2X1, "ttft"),
                                                                   per_round(RAY_1X2, "ttft")),
    }
    for name, values in summary.items():
        print(f"{name:36} {values['tokens_per_s']:7.1f} tok/s, TTFT p50 {values['ttft_p50_s']:.3f} s "
              f"p95 {values['ttft_p95_s']:.3f} s")
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if value is not None else f"{key}: n/a")
    path = write_json("ray", {
        "machine": machine(), "versions": versions(), "model": model_id, "new_tokens": args.new_tokens,
        "rounds": args.rounds, "clients": args.clients,
        "settings": {"contenders": {c.name: " ".join(c.command[1:]) for c in contenders(model_id)},
                     "order": "all servers up; per round, one after another, rotated by round",
                     "client": "openai.AsyncOpenAI, streamed, stream_options.include_usage, temperature 0"},
        "took_s": round(time.perf_counter() - began, 1), "engine_settings": engine_settings,
        "figures": figures, "summary": summary,
        "rounds_table": [{k: v for k, v in r.items() if k != "ttft_s"} | {
            "ttft_p50_s": percentile(r["ttft_s"], 50), "ttft_p95_s": percentile(r["ttft_s"], 95)} for r in rows],
    })
    print(f"wrote {path}")
    chart(summary, f"{model_id}, {args.clients} streaming clients, {args.new_tokens} greedy tokens; "
          f"median of {args.rounds} rounds; {machine()['cores']} cores")


if __name__ == "__main__":
    main()
