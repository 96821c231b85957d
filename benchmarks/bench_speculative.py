"""Prompt-lookup speculative decoding: decode tokens/s with and without it, same prompts, same run.

Three chat prompts on the sample (fp32 and int4), greedy, through the engine
(``Engine(speculative=True)`` against ``False``), one request at a time:

- rag: three paragraphs of context, then a question whose answer quotes them;
- edit: "fix the typos in this text", the text given (the answer repeats it, corrected);
- story: a short story, nothing to copy (speculation must not slow it down).

Decode tokens/s counts the tokens after the first (the first comes from the prefill,
the same either way) over the time from the first token to the last. Rounds alternate
the two settings (the order flips every round); the ratio is the median of per-round
ratios. Also recorded: whether the tokens are identical to the non-speculative run's
(and where they first differ), the share of drafted tokens accepted, and the tokens per
verification pass. Noisy shared machine: compare ratios measured in the same run.

Because a shared 2-core machine's load swings within a round, a second ratio is modelled
from the same run's counts: the time of a verification pass of n tokens is measured
against a one-token step (interleaved, median of many), fitted as ``c0 + c1 * (n - 1)``
steps, and the speculative run's passes and plain steps are priced with it:
``modelled = new tokens / (plain steps + passes * c0 + draft tokens * c1)``.

Writes results/speculative.json and .png, and has `benchmarks.readme` re-render the
README's sections (this table sits between ``<!-- bench:speculative:start -->`` and
``<!-- bench:speculative:end -->``).

    python -m benchmarks.bench_speculative [--rounds 3] [--tokens 160] [--variants fp32 int4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.readme import speculative_table as table
from benchmarks.readme import write as write_readme
from benchmarks.report import machine, save_chart, versions, write_json
from benchmarks.targets import speculative_figure
from ortmodels.engine import DecoderSession, Engine, Request
from ortmodels.engine.session import create_session

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
EOS = (1, 2)  # <|im_start|>, <|im_end|>

CONTEXT = (
    "The Great Barrier Reef is the world's largest coral reef system, composed of over 2,900 individual reefs and "
    "900 islands stretching for over 2,300 kilometres over an area of approximately 344,400 square kilometres. "
    "The reef is located in the Coral Sea, off the coast of Queensland, Australia.\n\n"
    "The Great Barrier Reef can be seen from outer space and is the world's biggest single structure made by "
    "living organisms. This reef structure is composed of and built by billions of tiny organisms, known as coral "
    "polyps. It supports a wide diversity of life and was selected as a World Heritage Site in 1981.\n\n"
    "Climate change, pollution, crown-of-thorns starfish and fishing are the primary threats to the health of "
    "this reef system. Mass coral bleaching events, caused by rising ocean temperatures, occurred in 1998, 2002, "
    "2006, 2016, 2017 and 2020."
)
TEXT = (
    "Dear team, thank you for youre hard work on the new relase. The customers have been very happy with the "
    "faster loading times and the new search feature, wich makes it much easier to find old orders. We will "
    "meet on thursday at ten o'clock to plan the next version; please bring a list of the bugs you whant to fix "
    "first. Best regards, Anna"
)
PROMPTS = {
    "rag": ("Answer the question using only the context, quoting its sentences word for word.",
            f"Context:\n{CONTEXT}\n\nQuestion: What is the Great Barrier Reef, where is it, and what threatens it?"),
    "edit": ("You are a careful proofreader.",
             f"Fix the typos in this text and write out the whole corrected text:\n\n{TEXT}"),
    "story": ("You are a helpful assistant.", "Write a short story about a dragon who learns to bake bread."),
}


def chat_ids(tokenizer: Any, system: str, user: str) -> list[int]:
    text = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")
    return tokenizer.encode(text, add_special_tokens=False).ids


def one_run(decoder: DecoderSession, tokenizer: Any, prompt: list[int], tokens: int,
            speculative: bool) -> dict[str, Any]:
    """Decode tokens/s of one greedy request alone in a fresh engine, with its tokens and draft stats."""
    engine = Engine(decoder, tokenizer, speculative=speculative)
    request = Request(prompt, max_tokens=tokens, eos_token_ids=EOS)
    engine.add_request(request)
    while not request.generated:  # the prefill and its first token
        engine.step()
    began = time.perf_counter()
    while engine.step():
        pass
    seconds = time.perf_counter() - began
    return {"tokens_per_s": (len(request.generated) - 1) / seconds, "generated": list(request.generated),
            "verify_steps": engine.verify_steps, "drafted": engine.drafted_tokens,
            "accepted": engine.accepted_tokens}


def pass_costs(decoder: DecoderSession, prompt: list[int], reps: int = 15) -> tuple[float, float]:
    """(c0, c1): a pass of n tokens over ``prompt``'s cache costs c0 + c1 * (n - 1) one-token steps."""
    import numpy as np

    from ortmodels.engine.kv_cache import SlotCache

    _, past = decoder.prefill(prompt)
    cache = SlotCache(decoder, 1)
    cache.add("row", past, len(prompt))
    sizes = (2, 3, 5, 7, 9)
    times: dict[int, list[float]] = {n: [] for n in (1, *sizes)}
    for _ in range(reps):
        for n in (1, *sizes):
            began = time.perf_counter()
            if n == 1:
                cache.decode([100])
            else:
                cache.extend("row", [100] * n)
            times[n].append(time.perf_counter() - began)
            cache.rewind("row", len(prompt))
    step = statistics.median(times[1])
    ratios = np.array([statistics.median(times[n]) / step for n in sizes])
    c1, c0 = np.polyfit(np.array(sizes) - 1, ratios, 1)
    return round(float(c0), 3), round(float(c1), 3)


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (or of the shorter one's end); None when identical."""
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def measure(decoder: DecoderSession, tokenizer: Any, prompt: list[int], tokens: int, rounds: int) -> dict[str, Any]:
    one_run(decoder, tokenizer, prompt, 8, True)  # warm-up
    c0, c1 = pass_costs(decoder, prompt)
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for round_ in range(rounds):
        for speculative in ((False, True) if round_ % 2 == 0 else (True, False)):
            runs[speculative].append(one_run(decoder, tokenizer, prompt, tokens, speculative))
    off, on = runs[False], runs[True]
    ratios = [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(off, on)]
    last = on[-1]
    new = len(last["generated"]) - 1
    plain_steps = new - (last["accepted"] + last["verify_steps"])
    modelled = new / (plain_steps + last["verify_steps"] * c0 + last["drafted"] * c1)
    return {
        "tokens": len(off[-1]["generated"]),
        "off_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in off), 1),
        "on_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in on), 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "modelled_ratio": round(modelled, 3),
        "pass_cost": {"c0": c0, "c1": c1},
        "identical": all(r["generated"] == off[0]["generated"] for r in on),
        "first_difference": first_difference(off[0]["generated"], on[0]["generated"]),
        "accepted_share": round(last["accepted"] / last["drafted"], 3) if last["drafted"] else None,
        "tokens_per_pass": round((last["accepted"] + last["verify_steps"]) / last["verify_steps"], 2)
        if last["verify_steps"] else None,
        "verify_steps": last["verify_steps"],
        "text": tokenizer.decode(off[0]["generated"]),
    }


def chart(rows: list[dict[str, Any]], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({r["variant"] for r in rows}, key=[r["variant"] for r in rows].index)
    prompts = list(PROMPTS)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(variants)
    for at, variant in enumerate(variants):
        values = [next((r["ratio"] for r in rows if r["variant"] == variant and r["prompt"] == p), 0) for p in prompts]
        bars = ax.bar([i + at * width for i in range(len(prompts))], values, width, label=variant)
        ax.bar_label(bars, labels=[f"{v:.2f}x" for v in values], padding=2, fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(2.0, color="green", linewidth=0.8, linestyle="--", label="target on copy-heavy prompts (2x)")
    ax.axhline(0.95, color="red", linewidth=0.8, linestyle=":", label="floor on the story (0.95x)")
    ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(prompts))], prompts)
    ax.set_ylabel("decode tok/s with ÷ without")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_chart(fig, "speculative")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--variants", nargs="+", default=["fp32", "int4"])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    from tokenizers import Tokenizer

    began = time.perf_counter()
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    rows = []
    for variant in args.variants:
        folder = args.models / MODEL / "onnx" / variant
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        decoder = DecoderSession(create_session(folder / "model.onnx", "cpu"))
        for name, (system, user) in PROMPTS.items():
            row = {"variant": variant, "prompt": name,
                   **measure(decoder, tokenizer, chat_ids(tokenizer, system, user), args.tokens, args.rounds)}
            rows.append(row)
            print(*table([row])[-1:], flush=True)
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    figures = {speculative_figure(r["variant"], r["prompt"]): r["ratio"] for r in rows}
    figures.update({f"speculative_modelled_ratio: {r['variant']} {r['prompt']}": r["modelled_ratio"] for r in rows})
    payload = {"benchmark": "speculative", "model": MODEL, "rounds": args.rounds, "max_tokens": args.tokens,
               "wall_s": round(time.perf_counter() - began, 1), "load_average": load, "machine": machine(),
               "versions": versions(), "figures": figures, "rows": rows}
    print("\n".join(table(rows)))
    path = write_json("speculative", payload)
    png = chart(rows, f"{MODEL}, prompt-lookup speculative decoding, {machine()['cores']} cores, "
                      f"median of {args.rounds} rounds")
    write_readme(args.readme)
    print(f"load average: {load}; wall {payload['wall_s']:.0f} s; wrote {path}, {png} and {args.readme}'s "
          "benchmark sections")


if __name__ == "__main__":
    main()
