"""What constrained decoding costs: the grammar mask per token, and decode speed with and without it.

- mask: microseconds per token to compute and apply a JSON-schema mask while feeding a
  valid answer, at the sample's 49,152-token vocabulary and at a synthetic 150,000-token one
  (the sample's vocabulary plus 100,848 extra byte-level tokens, unreachable by BPE but
  part of every mask, as a large vocabulary's are).
- decode: the int4 sample generating the same number of tokens for the same prompt, free
  and constrained to a schema (an array of 40 integers, so the answer is long), through
  the engine; tokens/s of each and their ratio.

Rounds alternate the two; medians are reported. Noisy machine: compare ratios.

    python -m benchmarks.bench_constraints [--rounds 3] [--tokens 96]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import RESULTS, machine, versions, write_json
from ortmodels.engine import DecoderSession, Engine, Request
from ortmodels.engine.constraints import Grammar, GrammarCompiler, close_objects
from ortmodels.engine.session import create_session

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
SCHEMA = close_objects({"type": "object", "properties": {
    "numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 40, "maxItems": 40}},
    "required": ["numbers"]})
ANSWER = json.dumps({"numbers": list(range(100, 140))})
PROMPT = ("<|im_start|>user\nList forty numbers, from 100 upwards, as JSON with a key numbers."
          "<|im_end|>\n<|im_start|>assistant\n")


def synthetic_tokenizer(source: Path, size: int, folder: Path) -> Path:
    """The sample's tokenizer.json with extra byte-level tokens up to ``size`` entries."""
    data = json.loads(source.read_text(encoding="utf-8"))
    vocab: dict[str, int] = data["model"]["vocab"]
    pieces = [p for p in vocab if len(p) > 1]
    rng = random.Random(0)
    next_id = max(vocab.values()) + 1
    while next_id < size:
        word = rng.choice(pieces) + rng.choice(pieces)
        if word not in vocab:
            vocab[word] = next_id
            next_id += 1
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def mask_cost(tokenizer_path: Path, vocab: int, answer_ids: list[int], rounds: int) -> float:
    """Median microseconds per token to compute and apply the mask along a valid answer."""
    compiler = GrammarCompiler(tokenizer_path, vocab, [2])
    logits = np.zeros(vocab, dtype=np.float32)
    per_round = []
    for _ in range(rounds):
        processor = compiler.processor(Grammar("json_schema", SCHEMA))
        spent = 0.0
        for token in answer_ids:
            logits[:] = 0.0
            began = time.perf_counter()
            processor.mask(logits)
            spent += time.perf_counter() - began
            processor.accept(token)
        per_round.append(spent / len(answer_ids) * 1e6)
    return statistics.median(per_round)


def decode_rate(engine: Engine, prompt: list[int], tokens: int, compiler: GrammarCompiler | None) -> float:
    """Tokens/s after the first token, free or constrained, for exactly ``tokens`` tokens."""
    processor = compiler.processor(Grammar("json_schema", SCHEMA)) if compiler else None
    request = Request(prompt, max_tokens=tokens, processor=processor)  # no end token: the full count
    first = None
    for event in engine.generate(request):
        if first is None and getattr(event, "token_ids", ()):
            first = time.perf_counter()
    return (len(request.generated) - 1) / (time.perf_counter() - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    from tokenizers import Tokenizer

    folder = args.models / MODEL / "onnx" / "int4"
    tokenizer_path = folder / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    answer_ids = tokenizer.encode(ANSWER, add_special_tokens=False).ids
    with tempfile.TemporaryDirectory() as scratch:
        big = synthetic_tokenizer(tokenizer_path, 150_000, Path(scratch))
        masks = {"49k": mask_cost(tokenizer_path, 49_152, answer_ids, args.rounds),
                 "150k": mask_cost(big, 150_000, answer_ids, args.rounds)}

    decoder = DecoderSession(create_session(folder / "model.onnx", "cpu"))
    compiler = GrammarCompiler(tokenizer_path, 49_152, [2])
    prompt = tokenizer.encode(PROMPT, add_special_tokens=False).ids
    free, constrained = [], []
    with Engine(decoder, tokenizer) as engine:
        decode_rate(engine, prompt, 8, None)  # warm-up
        for _ in range(args.rounds):
            free.append(decode_rate(engine, prompt, args.tokens, None))
            constrained.append(decode_rate(engine, prompt, args.tokens, compiler))
    ratios = [c / f for c, f in zip(constrained, free)]
    figures = {
        "mask_us_per_token_49k": masks["49k"],
        "mask_us_per_token_150k": masks["150k"],
        "free_tokens_per_s": statistics.median(free),
        "constrained_tokens_per_s": statistics.median(constrained),
        "constrained_vs_free": statistics.median(ratios),
    }
    print(f"{'figure':32} value")
    for name, value in figures.items():
        print(f"{name:32} {value:10.3f}")
    path = write_json("constraints", {
        "benchmark": "constraints", "model": MODEL, "variant": "int4", "rounds": args.rounds,
        "tokens": args.tokens, "schema": SCHEMA, "machine": machine(), "versions": versions(),
        "figures": figures, "results": {"free": free, "constrained": constrained},
    })
    _chart(figures).savefig(RESULTS / "constraints.png", dpi=120)
    print(f"wrote {path}")


def _chart(figures: dict[str, float]) -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(["49k", "150k"], [figures["mask_us_per_token_49k"], figures["mask_us_per_token_150k"]])
    left.set_ylabel("µs per token"), left.set_title("grammar mask (JSON schema)")
    right.bar(["free", "constrained"], [figures["free_tokens_per_s"], figures["constrained_tokens_per_s"]])
    right.set_ylabel("tokens/s"), right.set_title("int4 decode, same prompt")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
