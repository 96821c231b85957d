"""Many callers at once, measured as a user would: through ``ModelManager`` and LangChain calls.

- chat: 1, 2, 4, 8 and 16 callers at once on ``get_chat_model("smollm2-135m-instruct:int4")``
  and ``:fp32``, as threads (each calling ``invoke``) and as ``asyncio.gather`` of
  ``ainvoke``; every caller asks a different question (a standard-library docstring
  sentence to explain) with greedy ``max_tokens``. Aggregate tokens/s (output tokens of
  all calls ÷ wall time), p50/p95 latency per call and p50/p95 time to first token (the
  ``time_to_first_token_s`` each answer's ``response_metadata`` carries, counted from the
  call's start). Baseline: 8 calls one after another. Each run gets questions no earlier
  run asked, so the prompt cache reuses only what real traffic shares (the chat
  template's header), never a whole repeated prompt. After the timed rounds, the 8
  answers of the last 8-caller runs are compared with the same questions asked alone on
  a model without prompt cache (``MODEL_PROMPT_CACHE=0``): what batching may not change.
- embeddings: 1 … 32 threads calling ``get_embedding_model().embed_query`` on short
  stdlib docstring sentences (the corpus of ``bench_embeddings``), each thread its share
  of the same sentences; aggregate sentences/s, p50/p95 latency per call.
- prompt cache: a five-turn conversation under a ~800-token system prompt, on a model
  with the default ``MODEL_PROMPT_CACHE`` and one with ``0`` (``OnnxChatModel(...,
  settings=load_settings(model_prompt_cache=0))``); time to first token of the 5th turn,
  and whether the greedy answers agree. Each round is a new conversation under the same
  system prompt, as a deployment sees.
- kv (engine level, about half a minute; leave out of ``--parts`` to skip): one decode step of
  8 rows with ~700-token pasts, slot buffers against re-padding.

Speculative decoding is off (``MODEL_SPECULATIVE=off``, recorded as ``engine_settings``): a
request decoding alone would speculate on fp32, so the 8 calls in a row would measure
speculation against batching; bench_speculative measures it apart.

Rounds alternate the contenders (their order rotates); medians over rounds are reported,
and each ratio is the median of per-round ratios. On a shared 2-core machine the figures
are noisy: compare ratios, not absolute times. Writes results/concurrency.json and .png.

    python -m benchmarks.bench_concurrency [--rounds 3] [--new-tokens 64] [--sentences 512]
        [--parts chat embeddings cache kv]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.corpus import stdlib_sentences
from benchmarks.report import machine, save_chart, use_engine_settings, versions, write_json
from benchmarks.targets import (
    EMBED_QUERY_FIGURE,
    chat_concurrency_figure,
    prompt_cache_figure,
    prompt_cache_same_figure,
    same_as_solo_figure,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"
VARIANTS = ("int4", "fp32")
MODES = ("threads", "asyncio")
CALLERS = (1, 2, 4, 8, 16)
SEQUENTIAL_CALLERS = 8
EMBED_THREADS = (1, 2, 4, 8, 16, 32)
#: Pause before each timed run, so the previous run's spinning ONNX Runtime threads have gone idle.
SETTLE_S = 0.5
#: New tokens per turn of the prompt-cache conversation (only the 5th turn's first token is read).
TURN_TOKENS = 24
QUESTION = 'Explain in simple words what this sentence from the Python documentation means: "{}"'
SYSTEM = ("You are a meticulous assistant for a museum of natural history. " * 4 + "Rules: " + " ".join(
    f"Rule {i}: answer questions about exhibit {i} politely, cite the room number, avoid speculation, "
    "and keep the tone friendly." for i in range(1, 30)))
CONVERSATIONS = (
    ("Hello!", "Where are the dinosaurs?", "And the minerals?", "Is there a café?", "When do you close?"),
    ("Good morning.", "Which room has the whale skeleton?", "Can children touch the fossils?",
     "Where can I leave my coat?", "Is photography allowed?"),
    ("Hi there.", "What is in room 12?", "Who found the meteorite?", "Are there guided tours?",
     "How much is a ticket?"),
    ("Hello, I have a question.", "Where is the insect collection?", "Is it suitable for small children?",
     "Is there a lift?", "Where is the gift shop?"),
)


# -- pure helpers (tested in tests/test_benchmarks_helpers.py) --------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolating linearly between ranks as numpy's default does;
    None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float | None:
    """Median of per-round ratios (rounds paired by index); None when no round has both."""
    pairs = [a / b for a, b in zip(ours, theirs) if b > 0]
    return round(statistics.median(pairs), 3) if pairs else None


def assign_questions(pool: Sequence[str], rounds: int, runs: Sequence[tuple[str, int]]) -> dict[tuple[int, str, int], list[str]]:
    """Fresh questions for every (round, run name, callers): none is asked twice, and every
    variant gets the same ones for the same run. Raises if the pool is too small."""
    need = rounds * sum(n for _, n in runs)
    if need > len(pool):
        raise ValueError(f"{need} questions needed, only {len(pool)} in the pool")
    out, at = {}, 0
    for round_ in range(rounds):
        for name, callers in runs:
            out[round_, name, callers] = list(pool[at:at + callers])
            at += callers
    return out


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    shift %= max(1, len(items))
    return [*items[shift:], *items[:shift]]


# -- chat -------------------------------------------------------------------------------------


@dataclass
class Call:
    question: str
    latency_s: float
    ttft_s: float
    tokens: int
    text: str


def _call_from(question: str, started: float, message: Any) -> Call:
    latency = time.perf_counter() - started
    return Call(question, latency, float(message.response_metadata["time_to_first_token_s"]),
                int(message.usage_metadata["output_tokens"]), str(message.content))


def ask(model: Any, question: str, new_tokens: int) -> Call:
    started = time.perf_counter()
    return _call_from(question, started, model.invoke(question, max_tokens=new_tokens, temperature=0.0))


def run_threads(model: Any, questions: list[str], new_tokens: int) -> tuple[float, list[Call]]:
    """All questions at once, one thread each; wall time from the common start to the last answer."""
    calls: list[Call | None] = [None] * len(questions)
    errors: list[BaseException] = []
    gate = threading.Barrier(len(questions) + 1)

    def worker(i: int) -> None:
        gate.wait()
        try:
            calls[i] = ask(model, questions[i], new_tokens)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(questions))]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return wall, calls  # type: ignore[return-value]


async def _gather(model: Any, questions: list[str], new_tokens: int) -> tuple[float, list[Call]]:
    async def one(question: str) -> Call:
        started = time.perf_counter()
        return _call_from(question, started, await model.ainvoke(question, max_tokens=new_tokens, temperature=0.0))

    started = time.perf_counter()
    calls = await asyncio.gather(*(one(q) for q in questions))
    return time.perf_counter() - started, list(calls)


def run_sequential(model: Any, questions: list[str], new_tokens: int) -> tuple[float, list[Call]]:
    started = time.perf_counter()
    calls = [ask(model, q, new_tokens) for q in questions]
    return time.perf_counter() - started, calls


def chat_part(args: argparse.Namespace, solo_models: dict[str, Any]) -> dict[str, Any]:
    from ortmodels import ModelManager

    manager = ModelManager()
    models = {v: manager.get_chat_model(f"{MODEL}:{v}") for v in VARIANTS}
    runs = [*((m, n) for m in MODES for n in args.callers), ("sequential", SEQUENTIAL_CALLERS)]
    pool = [QUESTION.format(s) for s in stdlib_sentences(
        args.rounds * sum(n for _, n in runs) + 2 * SEQUENTIAL_CALLERS, min_chars=60, max_chars=160)]
    warm_up, pool = pool[:2 * SEQUENTIAL_CALLERS], pool[2 * SEQUENTIAL_CALLERS:]
    questions = assign_questions(pool, args.rounds, runs)
    with asyncio.Runner() as runner:
        for variant, model in models.items():  # first calls allocate; not what users wait for
            run_threads(model, warm_up[:SEQUENTIAL_CALLERS], 8)
            runner.run(_gather(model, warm_up[SEQUENTIAL_CALLERS:], 8))
        measured: dict[tuple[str, str, int], list[tuple[float, list[Call]]]] = {}
        key_runs = [r for r in runs if r[1] == SEQUENTIAL_CALLERS]  # the key ratio's runs go back to back,
        other_runs = [r for r in runs if r not in key_runs]  # so load swings on a shared machine hit both sides
        for round_ in range(args.rounds):
            order = [(v, m, n) for v in rotated(VARIANTS, round_)
                     for m, n in [*rotated(key_runs, round_), *rotated(other_runs, round_)]]
            for variant, mode, callers in order:
                asked = questions[round_, mode, callers]
                model = models[variant]
                time.sleep(SETTLE_S)
                if mode == "threads":
                    wall, calls = run_threads(model, asked, args.new_tokens)
                elif mode == "asyncio":
                    wall, calls = runner.run(_gather(model, asked, args.new_tokens))
                else:
                    wall, calls = run_sequential(model, asked, args.new_tokens)
                measured.setdefault((variant, mode, callers), []).append((wall, calls))
                tokens = sum(c.tokens for c in calls)
                print(f"round {round_ + 1}/{args.rounds} {variant} {mode:10} {callers:>2} callers: "
                      f"{tokens / wall:6.1f} tok/s, {tokens} tokens in {wall:.1f} s", flush=True)

    rows = []
    for (variant, mode, callers), per_round in measured.items():
        rates = [sum(c.tokens for c in calls) / wall for wall, calls in per_round]

        def stat(key: str, q: float, rounds: list[tuple[float, list[Call]]] = per_round) -> float:
            return round(statistics.median(percentile([getattr(c, key) for c in calls], q)  # type: ignore[misc]
                                           for _, calls in rounds) * 1000, 1)

        rows.append({
            "variant": variant, "mode": mode, "callers": callers,
            "tokens_per_s": round(statistics.median(rates), 1), "tokens_per_s_rounds": [round(r, 1) for r in rates],
            "latency_p50_ms": stat("latency_s", 50), "latency_p95_ms": stat("latency_s", 95),
            "ttft_p50_ms": stat("ttft_s", 50), "ttft_p95_ms": stat("ttft_s", 95),
            "output_tokens": [sum(c.tokens for c in calls) for _, calls in per_round],
            "wall_s_rounds": [round(w, 2) for w, _ in per_round],
        })
    rows.sort(key=lambda r: (VARIANTS.index(r["variant"]), (*MODES, "sequential").index(r["mode"]), r["callers"]))

    figures: dict[str, float] = {}
    solo: dict[str, Any] = {}
    for variant in VARIANTS:
        sequential = [sum(c.tokens for c in calls) / wall for wall, calls in measured[variant, "sequential", 8]]
        for mode in MODES:
            if (variant, mode, 8) not in measured:
                continue
            concurrent = [sum(c.tokens for c in calls) / wall for wall, calls in measured[variant, mode, 8]]
            value = median_ratio(concurrent, sequential)
            if value is not None:
                figures[chat_concurrency_figure(variant, mode)] = value
            # the last round's 8 answers against the same questions asked alone, without prompt cache
            last = measured[variant, mode, 8][-1][1]
            alone = [ask(solo_models[variant], c.question, args.new_tokens) for c in last]
            same = sum(a.text == c.text for a, c in zip(alone, last))
            figures[same_as_solo_figure(variant, mode)] = same
            solo[f"{variant} {mode}"] = {
                "same": same, "of": len(last),
                "differ": [{"question": c.question, "concurrent": c.text, "alone": a.text}
                           for a, c in zip(alone, last) if a.text != c.text],
            }
            print(f"{variant} {mode}: {same}/{len(last)} answers of 8 concurrent callers equal their solo answers",
                  flush=True)
    return {"rows": rows, "figures": figures, "same_as_solo": solo,
            "settings": {k: getattr(manager.settings, k) for k in
                         ("model_max_batch", "model_kv_cache", "model_prompt_cache", "model_threads")}}


# -- embeddings --------------------------------------------------------------------------------


def embed_part(args: argparse.Namespace) -> dict[str, Any]:
    from ortmodels import ModelManager

    model = ModelManager().get_embedding_model(EMBEDDING_MODEL)
    sentences = stdlib_sentences(args.sentences, max_chars=200)

    def run(threads: int) -> tuple[float, list[float]]:
        latencies: list[list[float]] = [[] for _ in range(threads)]
        gate = threading.Barrier(threads + 1)

        def worker(i: int) -> None:
            gate.wait()
            for sentence in sentences[i::threads]:
                started = time.perf_counter()
                model.embed_query(sentence)
                latencies[i].append(time.perf_counter() - started)

        pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
        for t in pool:
            t.start()
        gate.wait()
        started = time.perf_counter()
        for t in pool:
            t.join()
        return time.perf_counter() - started, [x for each in latencies for x in each]

    run(4)  # warm-up
    measured: dict[int, list[tuple[float, list[float]]]] = {n: [] for n in args.embed_threads}
    for round_ in range(args.rounds):
        ends = [n for n in (1, 32) if n in args.embed_threads]  # the key ratio's runs back to back
        for threads in [*rotated(ends, round_), *rotated([n for n in args.embed_threads if n not in ends], round_)]:
            time.sleep(SETTLE_S)
            wall, latencies = run(threads)
            measured[threads].append((wall, latencies))
            print(f"round {round_ + 1}/{args.rounds} embed_query, {threads:>2} threads: "
                  f"{len(sentences) / wall:6.0f} sentences/s", flush=True)
    rows = []
    for threads, per_round in measured.items():
        rates = [len(sentences) / wall for wall, _ in per_round]
        rows.append({
            "threads": threads, "sentences_per_s": round(statistics.median(rates), 1),
            "sentences_per_s_rounds": [round(r, 1) for r in rates],
            "latency_p50_ms": round(statistics.median(percentile(l, 50) for _, l in per_round) * 1000, 2),  # type: ignore[misc]
            "latency_p95_ms": round(statistics.median(percentile(l, 95) for _, l in per_round) * 1000, 2),  # type: ignore[misc]
        })
    figures = {}
    low, high = min(args.embed_threads), max(args.embed_threads)
    if low == 1 and high == 32:
        value = median_ratio([len(sentences) / w for w, _ in measured[32]], [len(sentences) / w for w, _ in measured[1]])
        if value is not None:
            figures[EMBED_QUERY_FIGURE] = value
    return {"rows": rows, "figures": figures, "variant": model.variant, "sentences": len(sentences)}  # type: ignore[attr-defined]


# -- prompt cache ------------------------------------------------------------------------------


def conversation(model: Any, turns: Iterable[str]) -> list[dict[str, Any]]:
    """One greedy conversation under SYSTEM; per turn: answer, first-token time, prompt and cached tokens."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    messages: list[Any] = [SystemMessage(SYSTEM)]
    out = []
    for turn in turns:
        messages.append(HumanMessage(turn))
        reply = model.invoke(messages, max_tokens=TURN_TOKENS, temperature=0.0)
        usage = reply.usage_metadata or {}
        out.append({"answer": str(reply.content), "ttft_s": float(reply.response_metadata["time_to_first_token_s"]),
                    "prompt_tokens": usage.get("input_tokens"),
                    "cached_tokens": usage.get("input_token_details", {}).get("cache_read")})
        messages.append(AIMessage(str(reply.content)))
    return out


def cache_part(args: argparse.Namespace, cached: dict[str, Any], uncached: dict[str, Any]) -> dict[str, Any]:
    contenders = [(v, c) for v in VARIANTS for c in (True, False)]
    for model in [*cached.values(), *uncached.values()]:
        model.invoke("Hi", max_tokens=2, temperature=0.0)  # warm-up: allocation, not the cache
    talks: dict[tuple[str, bool], list[list[dict[str, Any]]]] = {c: [] for c in contenders}
    for round_ in range(args.rounds):
        turns = CONVERSATIONS[round_ % len(CONVERSATIONS)]
        if round_ >= len(CONVERSATIONS):  # more rounds than conversations: still a new conversation
            turns = (f"(visit {round_ + 1}) {turns[0]}", *turns[1:])
        for variant, with_cache in rotated(contenders, round_):
            time.sleep(SETTLE_S)
            talk = conversation((cached if with_cache else uncached)[variant], turns)
            talks[variant, with_cache].append(talk)
            print(f"round {round_ + 1}/{args.rounds} {variant} prompt cache {'on ' if with_cache else 'off'}: "
                  f"5th turn first token {talk[-1]['ttft_s'] * 1000:.0f} ms "
                  f"({talk[-1]['cached_tokens']}/{talk[-1]['prompt_tokens']} prompt tokens cached)", flush=True)
    rows, figures = [], {}
    for variant in VARIANTS:
        on, off = talks[variant, True], talks[variant, False]
        ttft_on, ttft_off = [t[-1]["ttft_s"] for t in on], [t[-1]["ttft_s"] for t in off]
        same_turns = [sum(a["answer"] == b["answer"] for a, b in zip(x, y)) for x, y in zip(on, off)]
        same_fifth = sum(x[-1]["answer"] == y[-1]["answer"] for x, y in zip(on, off))
        ratio = median_ratio(ttft_on, ttft_off)
        if ratio is not None:
            figures[prompt_cache_figure(variant)] = ratio
        figures[prompt_cache_same_figure(variant)] = round(sum(same_turns) / (len(same_turns) * len(CONVERSATIONS[0])), 3)
        rows.append({
            "variant": variant,
            "turn5_prompt_tokens": [t[-1]["prompt_tokens"] for t in on],
            "turn5_cached_tokens": [t[-1]["cached_tokens"] for t in on],
            "ttft_ms_cache": round(statistics.median(ttft_on) * 1000, 1),
            "ttft_ms_cache_rounds": [round(x * 1000, 1) for x in ttft_on],
            "ttft_ms_no_cache": round(statistics.median(ttft_off) * 1000, 1),
            "ttft_ms_no_cache_rounds": [round(x * 1000, 1) for x in ttft_off],
            "ratio": ratio, "same_turns_per_round": same_turns, "same_fifth_answer": same_fifth,
            "rounds": len(on),
            "answers_cache": [[t["answer"] for t in talk] for talk in on],
            "answers_no_cache": [[t["answer"] for t in talk] for talk in off],
        })
    return {"rows": rows, "figures": figures, "system_prompt_chars": len(SYSTEM)}


# -- kv layouts (engine level) ----------------------------------------------------------------


def kv_part(args: argparse.Namespace, rows: int = 8, past: int = 700, steps: int = 16) -> dict[str, Any]:
    """One decode step of ``rows`` rows with ~``past``-token pasts: slot buffers against re-padding."""
    import numpy as np

    from ortmodels.engine import DecoderSession
    from ortmodels.engine.kv_cache import PaddedCache, SlotCache
    from ortmodels.engine.session import create_session

    out = {}
    for variant in VARIANTS:
        decoder = DecoderSession(create_session(ROOT / "models" / MODEL / "onnx" / variant / "model.onnx", "cpu", 0))
        rng = np.random.default_rng(0)
        prefilled = []
        for row in range(rows):
            ids = [int(i) for i in rng.integers(100, 20000, past + 7 * row)]
            prefilled.append((len(ids), decoder.prefill(ids)))
        times: dict[str, list[float]] = {"slots": [], "padded": []}
        for round_ in range(args.rounds):
            for name in rotated(["slots", "padded"], round_):
                cache = (SlotCache if name == "slots" else PaddedCache)(decoder, rows)
                for row, (length, (_, kv)) in enumerate(prefilled):
                    cache.add(row, kv, length)
                tokens = [int(np.argmax(logits)) for _, (logits, _) in prefilled]
                started = time.perf_counter()
                for _ in range(steps):
                    tokens = [int(t) for t in cache.decode(tokens).argmax(axis=1)]
                times[name].append((time.perf_counter() - started) / steps * 1000)
        out[variant] = {"rows": rows, "past": past, "ms_per_step_slots": round(statistics.median(times["slots"]), 1),
                        "ms_per_step_padded": round(statistics.median(times["padded"]), 1),
                        "ratio_slots_to_padded": median_ratio(times["slots"], times["padded"])}
        print(f"kv {variant}: {out[variant]}", flush=True)
    return out


# -- output -----------------------------------------------------------------------------------


def chart(chat_rows: list[dict[str, Any]], embed_rows: list[dict[str, Any]], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (chat_rows, embed_rows) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    colours = {"int4": "#2f6fb0", "fp32": "#d0702c"}
    at = 0
    if chat_rows:
        ax = axes[0][at]
        at += 1
        for variant in VARIANTS:
            for mode, style in (("threads", "-o"), ("asyncio", "--s")):
                points = [(r["callers"], r["tokens_per_s"]) for r in chat_rows if r["variant"] == variant and r["mode"] == mode]
                if points:
                    ax.plot(*zip(*points), style, color=colours[variant], label=f"{variant}, {mode}")
            seq = [r for r in chat_rows if r["variant"] == variant and r["mode"] == "sequential"]
            if seq:
                ax.plot([seq[0]["callers"]], [seq[0]["tokens_per_s"]], "x", color=colours[variant], markersize=10,
                        label=f"{variant}, {seq[0]['callers']} one after another")
        ax.set_xscale("log", base=2)
        ax.set_xticks(CALLERS, [str(c) for c in CALLERS])
        ax.set_xlabel("concurrent callers")
        ax.set_ylabel("output tokens / s, all callers (higher is better)")
        ax.set_title(f"{MODEL} chat")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if embed_rows:
        ax = axes[0][at]
        points = [(r["threads"], r["sentences_per_s"]) for r in embed_rows]
        ax.plot(*zip(*points), "-o", color="#2f6fb0")
        ax.set_xscale("log", base=2)
        ax.set_xticks([p[0] for p in points], [str(p[0]) for p in points])
        ax.set_xlabel("threads calling embed_query")
        ax.set_ylabel("sentences / s, all threads (higher is better)")
        ax.set_title(f"{EMBEDDING_MODEL} embed_query")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_chart(fig, "concurrency")


def _print_tables(data: dict[str, Any]) -> None:
    if data.get("chat"):
        print(f"\n{MODEL}: {data['new_tokens']} greedy tokens per call, median of {data['rounds']} rounds")
        print(f"{'variant':8}{'mode':12}{'callers':>8}{'tok/s':>9}{'lat p50 ms':>12}{'lat p95 ms':>12}"
              f"{'TTFT p50 ms':>13}{'TTFT p95 ms':>13}")
        for r in data["chat"]:
            print(f"{r['variant']:8}{r['mode']:12}{r['callers']:8}{r['tokens_per_s']:9.1f}{r['latency_p50_ms']:12.0f}"
                  f"{r['latency_p95_ms']:12.0f}{r['ttft_p50_ms']:13.0f}{r['ttft_p95_ms']:13.0f}")
    if data.get("embeddings"):
        print(f"\n{EMBEDDING_MODEL} ({data['embedding_variant']}) embed_query, {data['sentences']} sentences")
        print(f"{'threads':>8}{'sentences/s':>13}{'lat p50 ms':>12}{'lat p95 ms':>12}")
        for r in data["embeddings"]:
            print(f"{r['threads']:8}{r['sentences_per_s']:13.0f}{r['latency_p50_ms']:12.1f}{r['latency_p95_ms']:12.1f}")
    if data.get("prompt_cache"):
        print("\nprompt cache, 5th turn under the ~800-token system prompt")
        for r in data["prompt_cache"]:
            print(f"  {r['variant']}: first token {r['ttft_ms_cache']:.0f} ms with cache, {r['ttft_ms_no_cache']:.0f} ms "
                  f"without (ratio {r['ratio']}); turns equal per round {r['same_turns_per_round']}")
    print("\nfigures (ratios: median of per-round ratios)")
    for key, value in data["figures"].items():
        print(f"  {key:75} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--callers", type=int, nargs="+", default=list(CALLERS))
    parser.add_argument("--sentences", type=int, default=512, help="sentences per embed_query run")
    parser.add_argument("--embed-threads", type=int, nargs="+", default=list(EMBED_THREADS))
    parser.add_argument("--parts", nargs="+", default=["chat", "embeddings", "cache", "kv"],
                        choices=["chat", "embeddings", "cache", "kv"])
    args = parser.parse_args()
    if SEQUENTIAL_CALLERS not in args.callers and "chat" in args.parts:
        parser.error(f"--callers must include {SEQUENTIAL_CALLERS}: the key ratio is at {SEQUENTIAL_CALLERS} callers")

    from ortmodels import OnnxChatModel
    from ortmodels.config import load_settings

    engine_settings = use_engine_settings()  # before any settings are read: ModelManager reads the environment
    began = time.perf_counter()
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    data: dict[str, Any] = {}
    figures: dict[str, float] = {}
    cached, uncached = {}, {}
    if {"chat", "cache"} & set(args.parts):  # models without prompt cache: the solo answers and the cache's baseline
        uncached = {v: OnnxChatModel(model_name=MODEL, dtype=v, settings=load_settings(model_prompt_cache=0)).load()
                    for v in VARIANTS}
    if "cache" in args.parts:
        cached = {v: OnnxChatModel(model_name=MODEL, dtype=v, settings=load_settings()).load() for v in VARIANTS}
    if "chat" in args.parts:
        chat = chat_part(args, uncached)
        data.update(chat=chat["rows"], same_as_solo=chat["same_as_solo"], settings=chat["settings"])
        figures.update(chat["figures"])
        load["after_chat"] = [round(x, 2) for x in os.getloadavg()]
    if "embeddings" in args.parts:
        emb = embed_part(args)
        data.update(embeddings=emb["rows"], embedding_variant=emb["variant"], sentences=emb["sentences"])
        figures.update(emb["figures"])
        load["after_embeddings"] = [round(x, 2) for x in os.getloadavg()]
    if "cache" in args.parts:
        cache = cache_part(args, cached, uncached)
        data.update(prompt_cache=cache["rows"], system_prompt_chars=cache["system_prompt_chars"])
        figures.update(cache["figures"])
        load["after_cache"] = [round(x, 2) for x in os.getloadavg()]
    if "kv" in args.parts:
        data["kv"] = kv_part(args)
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    data.setdefault("settings", {k: getattr(load_settings(), k) for k in
                                 ("model_max_batch", "model_kv_cache", "model_prompt_cache", "model_threads")})
    payload = {
        "benchmark": "concurrency",
        "model": MODEL,
        "embedding_model": EMBEDDING_MODEL,
        "new_tokens": args.new_tokens,
        "callers": args.callers,
        "sequential_callers": SEQUENTIAL_CALLERS,
        "embed_threads": args.embed_threads,
        "turn_tokens": TURN_TOKENS,
        "rounds": args.rounds,
        "parts": args.parts,
        "wall_s": round(time.perf_counter() - began, 1),
        "load_average": load,
        "engine_settings": engine_settings,
        "machine": machine(),
        "versions": versions(),
        "figures": figures,
        **data,
    }
    _print_tables(payload)
    path = write_json("concurrency", payload)
    png = chart(payload.get("chat", []), payload.get("embeddings", []),
                f"{machine()['cores']} cores, median of {args.rounds} rounds, MODEL_MAX_BATCH="
                f"{payload['settings']['model_max_batch']}")
    print(f"load average (1, 5, 15 min): {load}")
    print(f"wall time {payload['wall_s']:.0f} s; wrote {path} and {png}")


if __name__ == "__main__":
    main()
