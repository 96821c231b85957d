"""Prefix-aware routing on Ray: do a conversation's turns find their cache on the replica they reach?

Two real ``ortmodels serve --ray --replicas 2`` servers on loopback ports, both up for the whole
run (each its own local cluster, idle while the other is timed), serving only the chat sample
at ``--variant`` with default settings but for speculative decoding (off, as in every server
benchmark): one with Serve's own routing (``MODEL_RAY_ROUTING=load``, power of two choices), one with
ortmodels' prefix routing (the default). Each round, on each server in turn (the order rotates
by round): ``--conversations`` conversations at once, each of ``--turns`` turns one after
another (streamed ``openai.AsyncOpenAI``, greedy, at most ``--new-tokens`` each; before each
turn after the first the user reads the answer, a seeded random pause of up to ``--think-s``), all under the
same ~800-token system prompt, each with its own questions (new ones every round, so no round
finds another's cache). Counted: last turns whose prompt-cache hit (``cached_tokens``) covers
the whole prompt of the turn before (the replica they reached holds it), and the last turns'
time to first token. Figures are medians of per-round ratios.
Writes results/ray_prefix.json and results/ray_prefix.png.

    python -m benchmarks.bench_ray_prefix [--rounds 3] [--conversations 16] [--turns 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_concurrency import median_ratio, percentile
from benchmarks.bench_server import MODEL, Contender, in_turn, servers_up
from benchmarks.corpus import stdlib_sentences
from benchmarks.report import (
    machine,
    save_chart,
    use_engine_settings,
    versions,
    write_json,
)
from benchmarks.targets import (
    LOAD_FOUND_FIGURE,
    PREFIX_FOUND_FIGURE,
    PREFIX_TTFT_FIGURE,
)

LOAD = "serve --ray 2 replicas, Serve's routing"
PREFIX = "serve --ray 2 replicas, prefix routing"
#: Characters of system prompt: about 800 tokens of the stdlib's English docstrings.
SYSTEM_CHARS = 3400
#: The most seconds a user reads an answer before the next turn. Without it (a closed loop, the
#: next turn sent the moment the last ended) Serve's power of two choices mostly picks the
#: replica that just freed a slot, the one that answered the turn before: at 067c52e, 60 of 64
#: later turns found their previous prompt whole under Serve's routing, with requests split
#: 40/44 between the replicas (a scratch count of the replicas' logs, 2026-12-04).
THINK_S = 2.0


def contenders(model_id: str) -> list[Contender]:
    base = [sys.executable, "-m", "ortmodels", "serve", "--port", "{port}", "--models", model_id, "--max-queue", "256",
            "--ray", "--replicas", "2"]
    return [Contender(LOAD, ["env", "MODEL_RAY_ROUTING=load", *base], model_id),
            Contender(PREFIX, ["env", "MODEL_RAY_ROUTING=prefix", *base], model_id)]


def system_prompt(sentences: list[str]) -> str:
    text = "You answer questions about Python's standard library. Here is some of its documentation.\n"
    for sentence in sentences:
        if len(text) >= SYSTEM_CHARS:
            break
        text += sentence + "\n"
    return text


async def one_turn(client: Any, model_id: str, messages: list[dict[str, str]], new_tokens: int) -> dict[str, Any]:
    """One streamed turn: its answer appended to ``messages``; time to first token and usage."""
    started = time.perf_counter()
    first, text, usage = None, [], None
    stream = await client.chat.completions.create(model=model_id, messages=messages, max_tokens=new_tokens,
                                                  temperature=0, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - started
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    messages.append({"role": "assistant", "content": "".join(text)})
    details = getattr(usage, "prompt_tokens_details", None)
    return {"ttft_s": first if first is not None else time.perf_counter() - started,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "cached_tokens": (details.cached_tokens or 0) if details else 0}


async def conversation(client: Any, model_id: str, system: str, questions: list[str],
                       new_tokens: int, think_s: float = 0.0, seed: int = 0) -> list[dict[str, Any]]:
    """One conversation's turns in order; before each turn after the first, the user reads the
    answer for a random ``0..think_s`` seconds (seeded), as people do between turns."""
    rng = random.Random(seed)
    messages = [{"role": "system", "content": system}]
    turns = []
    for number, question in enumerate(questions):
        if number and think_s > 0:
            await asyncio.sleep(rng.uniform(0.0, think_s))
        messages.append({"role": "user", "content": question})
        turns.append(await one_turn(client, model_id, messages, new_tokens))
    return turns


async def one_round(url: str, model_id: str, system: str, questions: list[list[str]],
                    new_tokens: int, think_s: float = 0.0, seed: int = 0) -> list[list[dict[str, Any]]]:
    """Every conversation at once; each one's turns, in order."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    try:
        return list(await asyncio.gather(*(conversation(client, model_id, system, q, new_tokens, think_s,
                                                        seed * 1000 + number)
                                           for number, q in enumerate(questions))))
    finally:
        await client.close()


def found_whole(turns: list[dict[str, Any]]) -> bool:
    """Whether the last turn's cache hit covers the whole prompt of the turn before."""
    return turns[-1]["cached_tokens"] >= turns[-2]["prompt_tokens"]


def chart(summary: dict[str, dict[str, float]], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.0))
    colors = ["#999999", "#2f6fb0"][: len(names)]
    for axis, key, unit in ((ax, "whole_share", "last turns finding the previous prompt cached (share)"),
                            (ax2, "last_ttft_p50_s", "last turn's time to first token p50 (s)")):
        values = [summary[n][key] for n in names]
        bars = axis.barh(names, values, color=colors)
        axis.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3)
        axis.invert_yaxis()
        axis.set_xlabel(unit)
        axis.set_xlim(0, max(max(values) * 1.25, 0.01))
    ax2.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return save_chart(fig, "ray_prefix", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--variant", default="int4")
    parser.add_argument("--think-s", type=float, default=THINK_S,
                        help="the most seconds a user reads an answer before the next turn (0: none)")
    parser.add_argument("--quick", action="store_true", help="one round, 16 new tokens: checks the wiring")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.new_tokens = 1, 16
    if args.turns < 2:
        parser.error("--turns must be at least 2: the last turn is compared with the one before")
    engine_settings = use_engine_settings()  # the servers and their Ray replicas inherit it
    model_id = f"{MODEL}:{args.variant}"
    sentences = stdlib_sentences(400)
    system = system_prompt(sentences[:60])
    asked = sentences[60:]

    def questions(rnd: int, name: str) -> list[list[str]]:
        """New questions per round and server, so no conversation finds another's cache."""
        offset = (rnd * 2 + [c.name for c in contenders(model_id)].index(name)) * args.conversations
        return [[f"Conversation {offset + c}, question {t + 1}: what does this mean? "
                 f"{asked[(offset + c * args.turns + t) % len(asked)][:200]}" for t in range(args.turns)]
                for c in range(args.conversations)]

    logs = Path(tempfile.mkdtemp(prefix="bench-ray-prefix-"))
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    def warm_up(url: str, contender: Contender) -> None:
        asyncio.run(one_round(url, contender.model, "You are brief.", [[f"Warm-up {i}: hello"] for i in range(4)], 4))

    with servers_up(contenders(model_id), logs, warm_up,
                    log_name=lambda c: c.name.split(",")[1].strip().replace(" ", "_")) as servers:
        for rnd, contender in in_turn(contenders(model_id), args.rounds):
            url, _ = servers[contender.name]
            began_round = time.perf_counter()
            turns = asyncio.run(one_round(url, contender.model, system, questions(rnd, contender.name),
                                          args.new_tokens, args.think_s, seed=rnd))
            whole = sum(found_whole(t) for t in turns)
            last = [t[-1]["ttft_s"] for t in turns]
            rows.append({"round": rnd, "contender": contender.name, "whole": whole, "conversations": len(turns),
                         "last_ttft_s": last, "last_ttft_p50_s": percentile(last, 50),
                         "first_prompt_tokens": statistics.median(t[0]["prompt_tokens"] for t in turns),
                         "took_s": round(time.perf_counter() - began_round, 1),
                         "turns": [[{k: round(v, 4) if isinstance(v, float) else v for k, v in turn.items()}
                                    for turn in t] for t in turns]})
            print(f"round {rnd} {contender.name:42} {whole}/{len(turns)} last turns found the previous prompt "
                  f"cached; last-turn TTFT p50 {percentile(last, 50):.3f} s ({rows[-1]['took_s']} s)", flush=True)

    def of(name: str, key: str) -> list[Any]:
        return [r[key] for r in rows if r["contender"] == name]

    names = [c.name for c in contenders(model_id)]
    summary = {n: {"whole_share": sum(of(n, "whole")) / max(1, sum(of(n, "conversations"))),
                   "whole": sum(of(n, "whole")), "conversations": sum(of(n, "conversations")),
                   "last_ttft_p50_s": percentile([t for ts in of(n, "last_ttft_s") for t in ts], 50),
                   "last_ttft_p95_s": percentile([t for ts in of(n, "last_ttft_s") for t in ts], 95)}
               for n in names}
    figures = {
        PREFIX_TTFT_FIGURE: median_ratio(of(PREFIX, "last_ttft_p50_s"), of(LOAD, "last_ttft_p50_s")),
        PREFIX_FOUND_FIGURE: round(summary[PREFIX]["whole_share"], 3),
        LOAD_FOUND_FIGURE: round(summary[LOAD]["whole_share"], 3),
    }
    for name, values in summary.items():
        print(f"{name:42} {values['whole']}/{values['conversations']} found whole; last-turn TTFT p50 "
              f"{values['last_ttft_p50_s']:.3f} s, p95 {values['last_ttft_p95_s']:.3f} s")
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if value is not None else f"{key}: n/a")
    path = write_json("ray_prefix", {
        "machine": machine(), "versions": versions(), "model": model_id, "new_tokens": args.new_tokens,
        "rounds": args.rounds, "conversations": args.conversations, "turns": args.turns, "quick": args.quick,
        "think_s": args.think_s,
        "system_prompt_chars": len(system),
        "settings": {"contenders": {c.name: " ".join(c.command[1:]) for c in contenders(model_id)},
                     "order": "both servers up; per round, one after another, rotated by round",
                     "client": "openai.AsyncOpenAI, streamed, stream_options.include_usage, temperature 0",
                     "think": f"before each turn after the first, a seeded random 0..{args.think_s} s pause",
                     "found": "last turn's cached_tokens >= the previous turn's prompt_tokens"},
        "took_s": round(time.perf_counter() - began, 1), "engine_settings": engine_settings,
        "figures": figures, "summary": summary, "rounds_table": rows,
    })
    print(f"wrote {path}")
    chart(summary, f"{model_id}, 2 Ray replicas, {args.conversations} conversations at once × {args.turns} turns, "
          f"~{len(system)}-character system prompt; {args.rounds} round(s); {machine()['cores']} cores")


if __name__ == "__main__":
    main()
