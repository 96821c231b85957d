"""What continuous batching and the prompt cache buy on the sample chat model (ratios only).

- concurrency: N requests of T greedy tokens (no end token) through one engine at once,
  against the same N one after another; aggregate tokens/s, ratio concurrent / sequential.
- kv: one decode step of N rows with ~P-token pasts, slot buffers against re-padding.
- ttft: the 5th turn of a chat under a long (~800-token) system prompt, time to first
  token with the prompt cache against without it.

Rounds alternate the contenders; medians are reported. On a shared 2-core machine the
figures are noisy: compare ratios, not absolute times.

    python -m benchmarks.bench_concurrency [--dtypes int4 fp32] [--requests 8] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ortmodels.engine import DecoderSession, Engine, Request
from ortmodels.engine.kv_cache import PaddedCache, SlotCache
from ortmodels.engine.session import create_session

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
EOS = (1, 2)
QUESTIONS = [
    "What is the capital of France?", "Write a haiku about snow.", "Explain recursion to a child.",
    "List three uses of copper.", "Why is the sky blue?", "Tell me a short story about a cat.",
    "What does a compiler do?", "Give me a recipe for pancakes.", "How do bees make honey?",
    "Summarise the plot of Hamlet.",
]
SYSTEM = ("You are a meticulous assistant for a museum of natural history. " * 4 + "Rules: " + " ".join(
    f"Rule {i}: answer questions about exhibit {i} politely, cite the room number, avoid speculation, "
    "and keep the tone friendly." for i in range(1, 30)))
TURNS = ("Hello!", "Where are the dinosaurs?", "And the minerals?", "Is there a café?", "When do you close?")


def _open(models: Path, dtype: str, threads: int) -> tuple[DecoderSession, object]:
    from tokenizers import Tokenizer

    folder = models / MODEL / "onnx" / dtype
    return (DecoderSession(create_session(folder / "model.onnx", "cpu", threads)),
            Tokenizer.from_file(str(folder / "tokenizer.json")))


def _prompt(tokenizer: object, question: str, system: str | None = None) -> list[int]:
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    text += f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return tokenizer.encode(text, add_special_tokens=False).ids  # type: ignore[attr-defined]


def concurrency(decoder: DecoderSession, tokenizer: object, requests: int, new: int, rounds: int) -> dict:
    prompts = [_prompt(tokenizer, QUESTIONS[i % len(QUESTIONS)]) for i in range(requests)]
    results: dict[str, list[float]] = {"concurrent": [], "sequential": []}
    same = True
    for _ in range(rounds):
        for mode in ("concurrent", "sequential"):
            engine = Engine(decoder, tokenizer, max_batch=requests if mode == "concurrent" else 1)
            batch = [Request(p, max_tokens=new) for p in prompts]
            started = time.perf_counter()
            for request in batch:
                engine.add_request(request)
            while engine.step():
                pass
            results[mode].append(sum(len(r.generated) for r in batch) / (time.perf_counter() - started))
            if mode == "concurrent":
                tokens = [r.generated for r in batch]
            else:
                same = same and tokens == [r.generated for r in batch]
    concurrent, sequential = (statistics.median(results[m]) for m in ("concurrent", "sequential"))
    return {"requests": requests, "new_tokens": new, "tok_s_concurrent": round(concurrent, 1),
            "tok_s_sequential": round(sequential, 1), "ratio": round(concurrent / sequential, 2),
            "same_greedy_tokens": same}


def kv_layouts(decoder: DecoderSession, rows: int, past: int, steps: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    prefilled = []
    for row in range(rows):
        ids = [int(i) for i in rng.integers(100, 20000, past + 7 * row)]
        prefilled.append((len(ids), decoder.prefill(ids)))
    times: dict[str, list[float]] = {"slots": [], "padded": []}
    for _ in range(rounds):
        for name, cls in (("slots", SlotCache), ("padded", PaddedCache)):
            cache = cls(decoder, rows)
            for row, (length, (_, kv)) in enumerate(prefilled):
                cache.add(row, kv, length)
            tokens = [int(np.argmax(logits)) for _, (logits, _) in prefilled]
            started = time.perf_counter()
            for _ in range(steps):
                tokens = [int(t) for t in cache.decode(tokens).argmax(axis=1)]
            times[name].append((time.perf_counter() - started) / steps * 1000)
    slots, padded = (statistics.median(times[m]) for m in ("slots", "padded"))
    return {"rows": rows, "past": past, "ms_per_step_slots": round(slots, 1), "ms_per_step_padded": round(padded, 1),
            "ratio_slots_to_padded": round(slots / padded, 2)}


def ttft(decoder: DecoderSession, tokenizer: object, rounds: int) -> dict:
    figures: dict[str, list[float]] = {"cache": [], "no_cache": []}
    prompt_tokens = 0
    for _ in range(rounds):
        for name, size in (("cache", 256 << 20), ("no_cache", 0)):
            engine = Engine(decoder, tokenizer, prompt_cache_bytes=size)
            history = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            for turn in TURNS:
                history += f"<|im_start|>user\n{turn}<|im_end|>\n<|im_start|>assistant\n"
                request = Request(tokenizer.encode(history, add_special_tokens=False).ids,  # type: ignore[attr-defined]
                                  max_tokens=24, eos_token_ids=EOS)
                events = list(engine.generate(request))
                history += "".join(getattr(e, "text", "") for e in events) + "<|im_end|>\n"
            engine.close()
            figures[name].append(events[-1].time_to_first_token_s)  # type: ignore[union-attr]
            prompt_tokens = len(request.prompt_ids)
    cache, none = (statistics.median(figures[m]) for m in ("cache", "no_cache"))
    return {"turn5_prompt_tokens": prompt_tokens, "ttft_ms_cache": round(cache * 1000, 1),
            "ttft_ms_no_cache": round(none * 1000, 1), "ratio": round(cache / none, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--dtypes", nargs="+", default=["int4", "fp32"])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--parts", nargs="+", default=["concurrency", "kv", "ttft"])
    args = parser.parse_args()
    report = {}
    for dtype in args.dtypes:
        decoder, tokenizer = _open(args.models, dtype, args.threads)
        part = {}
        if "concurrency" in args.parts:
            part["concurrency"] = concurrency(decoder, tokenizer, args.requests, args.new_tokens, args.rounds)
        if "kv" in args.parts:
            part["kv"] = kv_layouts(decoder, args.requests, 700, 16, args.rounds)
        if "ttft" in args.parts:
            part["ttft"] = ttft(decoder, tokenizer, args.rounds)
        report[dtype] = part
        print(json.dumps({dtype: part}), flush=True)


if __name__ == "__main__":
    main()
