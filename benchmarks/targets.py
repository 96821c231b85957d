"""The project's targets, and pass/miss against the figures the benchmarks wrote.

Each benchmark's JSON carries a flat ``figures`` mapping (figure name → number); a target
names one figure, a comparison and a threshold. Keeping targets as data lets the printed
summary and the README table show the same verdicts, and lets a test check the logic.
A figure a run did not produce (a peer that failed to load, a part skipped) is "n/a",
never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ORT = "ortmodels"
GENAI = "onnxruntime-genai"
LLAMA_CPP = "llama.cpp Q4_1"
ST = "sentence-transformers"
FASTEMBED = "fastembed"


def ratio_key(measure: str, ours: str, theirs: str) -> str:
    """Name of the figure "``ours`` ÷ ``theirs``" for one measure (decode, ttft_short, ...)."""
    return f"{measure}: {ours} / {theirs}"


@dataclass(frozen=True)
class Target:
    label: str
    figure: str
    op: Literal[">=", "<="]
    threshold: float

    def verdict(self, figures: Mapping[str, float]) -> str:
        value = figures.get(self.figure)
        if value is None:
            return "n/a"
        ok = value >= self.threshold if self.op == ">=" else value <= self.threshold
        return "pass" if ok else "miss"

    @property
    def wanted(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.threshold:g}"


def _chat_targets() -> list[Target]:
    out = []
    for precision, bar in (("fp32", 1.0), ("int8", 1.1), ("int4", 1.2)):
        out.append(Target(f"chat decode tok/s, {precision}: × genai {precision}",
                          ratio_key("decode", f"{ORT} {precision}", f"{GENAI} {precision}"), ">=", bar))
    out.append(Target("chat decode tok/s, int4: × llama.cpp Q4_1",
                      ratio_key("decode", f"{ORT} int4", LLAMA_CPP), ">=", 1.2))
    for prompt, words in (("ttft_short", "~40"), ("ttft_long", "~1,000")):
        for precision in ("fp32", "int8", "int4"):
            out.append(Target(f"time to first token, {words}-token prompt, {precision}: × genai {precision}",
                              ratio_key(prompt, f"{ORT} {precision}", f"{GENAI} {precision}"), "<=", 1.0))
    return out


TARGETS: list[Target] = [
    *_chat_targets(),
    Target("perplexity int8 × fp32", f"perplexity_ratio: {ORT} int8", "<=", 1.02),
    Target("perplexity int4 × fp32", f"perplexity_ratio: {ORT} int4", "<=", 1.10),
    Target("embeddings fp32, batch 32: × sentence-transformers",
           ratio_key("embed_b32", f"{ORT} fp32", ST), ">=", 2.0),
    Target("embeddings fp32, batch 32: × fastembed",
           ratio_key("embed_b32", f"{ORT} fp32", FASTEMBED), ">=", 2.0),
    Target("embeddings int8, batch 32: × sentence-transformers",
           ratio_key("embed_b32", f"{ORT} int8", ST), ">=", 4.0),
    Target("embeddings int8: cosine to fp32, mean", f"cosine_mean: {ORT} int8", ">=", 0.99),
    Target("embeddings int8: cosine to fp32, worst", f"cosine_worst: {ORT} int8", ">=", 0.97),
    Target("embeddings int8: top-10 neighbours shared with fp32", f"top10_agreement: {ORT} int8", ">=", 0.9),
    Target("`import ortmodels`, fresh process (s)", "import_s: ortmodels", "<=", 0.5),
    Target("cold start, int4 chat: import, load, first token (s)", f"cold_start_s: {ORT} int4", "<=", 1.5),
]


def evaluate(figures: Mapping[str, float], targets: list[Target] = TARGETS) -> list[dict[str, object]]:
    """One row per target: label, measured value (or None), wanted, verdict."""
    return [
        {"label": t.label, "figure": t.figure, "value": figures.get(t.figure), "wanted": t.wanted,
         "verdict": t.verdict(figures)}
        for t in targets
    ]
