"""The project's targets, and pass/miss against the figures the benchmarks wrote.

Each benchmark's JSON carries a flat ``figures`` mapping (figure name → number); a target
names one figure, a comparison and a threshold. Keeping targets as data lets the printed
summary and the README table show the same verdicts, and lets a test check the logic.
A figure a run did not produce (a peer that failed to load, a part skipped) is "n/a",
never a pass.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ORT = "ortmodels"
GENAI = "onnxruntime-genai"
LLAMA_CPP = "llama.cpp Q4_1"
ST = "sentence-transformers"
FASTEMBED = "fastembed"
CROSS_ENCODER = "sentence-transformers CrossEncoder"
LLAMA_SERVER = "llama-server Q4_1"
#: llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``), one request at a time.
LLAMA_CPP_SERVER = "llama_cpp.server Q4_1"


def ratio_key(measure: str, ours: str, theirs: str) -> str:
    """Name of the figure "``ours`` ÷ ``theirs``" for one measure (decode, ttft_short, ...)."""
    return f"{measure}: {ours} / {theirs}"


#: Figure: aggregate embed_query sentences/s, 32 threads ÷ 1 thread (bench_concurrency).
EMBED_QUERY_FIGURE = ratio_key("embed_query_sentences_per_s", f"{ORT} 32 threads", f"{ORT} 1 thread")


def chat_concurrency_figure(precision: str, mode: str, callers: int = 8) -> str:
    """Figure: aggregate chat tokens/s of ``callers`` concurrent callers (``threads`` or
    ``asyncio``) ÷ the same number of calls one after another (bench_concurrency)."""
    return ratio_key("chat_tokens_per_s", f"{ORT} {precision} {callers} {mode}", f"{ORT} {precision} {callers} sequential")


def same_as_solo_figure(precision: str, mode: str, callers: int = 8) -> str:
    """Figure: how many of ``callers`` concurrent greedy answers equal the same question asked alone."""
    return f"same_as_solo: {ORT} {precision} {callers} {mode}"


def prompt_cache_figure(precision: str) -> str:
    """Figure: time to first token of a conversation's 5th turn, prompt cache on ÷ off."""
    return ratio_key("ttft_turn5", f"{ORT} {precision} prompt cache", f"{ORT} {precision} no prompt cache")


def prompt_cache_same_figure(precision: str) -> str:
    """Figure: share of turns whose greedy answer is the same with the prompt cache as without."""
    return f"prompt_cache_same_answers: {ORT} {precision}"


def server_figure(ours: str, theirs: str) -> str:
    """Figure: aggregate tokens/s of streaming clients of one server ÷ another's (bench_server),
    e.g. ``server_figure("ortmodels int4 8 clients", "llama-server Q4_1 8 clients")``."""
    return ratio_key("server_tokens_per_s", ours, theirs)


#: Figure: ortmodels int4's cold start ÷ the faster peer's (onnxruntime-genai int4, llama.cpp) in the same round.
COLD_START_VS_PEERS_FIGURE = ratio_key("cold_start", f"{ORT} int4", f"faster of {GENAI} int4 and {LLAMA_CPP}")
#: The command-line answer (bench_startup): ``ortmodels chat NAME QUESTION --max-tokens 16`` on int4, and
#: llama-cpp-python loading the Q4_1 GGUF for one ``create_chat_completion`` of 16 tokens, fresh processes.
CLI_OURS = f"{ORT} chat int4"
CLI_LLAMA = "llama-cpp-python Q4_1"
#: Figure: the command's start-to-exit seconds ÷ llama-cpp-python's, median of interleaved rounds' ratios.
CLI_ANSWER_VS_LLAMA_FIGURE = ratio_key("cli_answer", CLI_OURS, CLI_LLAMA)
#: Figure: peak RSS of the int4 chat worker (load, both prompts, every round) ÷ llama.cpp's (bench_chat).
PEAK_RSS_VS_LLAMA_FIGURE = ratio_key("peak_rss", f"{ORT} int4", LLAMA_CPP)


def faster_peer_ratio(ours: list[float], *peers: list[float]) -> float | None:
    """Median over rounds of ours ÷ the fastest peer of that round (rounds paired by index);
    None unless every peer has runs."""
    if not ours or not all(peers):
        return None
    per_round = [a / min(theirs) for a, *theirs in zip(ours, *peers)]
    return round(statistics.median(per_round), 3)


#: Figure: ortmodels serve int4, 8 streaming clients ÷ llama-server (its better --parallel), 8 clients.
SERVER_VS_LLAMA_FIGURE = server_figure(f"{ORT} int4 8 clients", f"{LLAMA_SERVER} 8 clients")
#: Figure: ortmodels serve int4, aggregate tokens/s with 8 streaming clients ÷ with 1.
SERVER_SCALING_FIGURE = server_figure(f"{ORT} int4 8 clients", f"{ORT} int4 1 client")
#: Figures of bench_ray_prefix (2 Ray replicas, conversations at once under one system prompt): the
#: last turns' time to first token p50, prefix routing ÷ Serve's; the share of last turns that found
#: the previous turn's whole prompt cached on the replica they reached, per routing.
PREFIX_TTFT_FIGURE = "ray 2 replicas, conversations at once: last-turn TTFT p50, prefix ÷ Serve's routing"
PREFIX_FOUND_FIGURE = "ray 2 replicas, conversations at once: last turns finding the previous prompt cached, prefix"
LOAD_FOUND_FIGURE = "ray 2 replicas, conversations at once: last turns finding the previous prompt cached, Serve's"


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


def _concurrency_targets() -> list[Target]:
    out = []
    for precision, bar in (("int4", 2.0), ("fp32", 3.5)):
        for mode, words in (("threads", "threads"), ("asyncio", "asyncio callers")):
            out.append(Target(f"chat tok/s, 8 concurrent {words} ÷ 8 calls in a row, {precision}",
                              chat_concurrency_figure(precision, mode), ">=", bar))
    for mode, words in (("threads", "threads"), ("asyncio", "asyncio callers")):
        out.append(Target(f"chat fp32, 8 concurrent {words}: greedy answers equal to solo (of 8)",
                          same_as_solo_figure("fp32", mode), ">=", 7))
    out.append(Target("embed_query sentences/s, 32 threads ÷ 1 thread", EMBED_QUERY_FIGURE, ">=", 1.3))
    for precision in ("int4", "fp32"):
        out.append(Target(f"first token, 5th turn, ~800-token system prompt, {precision}: prompt cache ÷ none",
                          prompt_cache_figure(precision), "<=", 0.25))
        out.append(Target(f"prompt cache, {precision}: share of turns with the same greedy answer as without",
                          prompt_cache_same_figure(precision), ">=", 1.0))
    return out


def _embedding_batch1_targets() -> list[Target]:
    """One query at a time (what a RAG query pays), for both variants: fp32 is the CPU default."""
    return [Target(f"embeddings {precision}, batch 1: × {peer}", ratio_key("embed_b1", f"{ORT} {precision}", peer),
                   ">=", bar)
            for precision in ("fp32", "int8") for peer, bar in ((FASTEMBED, 1.5), (ST, 3.0))]


def rerank_figure(precision: str, peer: str, documents: int = 100) -> str:
    """Figure: pairs/s reranking 1 query × ``documents``, ortmodels ``precision`` ÷ ``peer`` (bench_rerank)."""
    return ratio_key(f"rerank_q1x{documents}", f"{ORT} {precision}", peer)


def _rerank_targets() -> list[Target]:
    """One query × 100 documents, what a RAG app reranks after retrieval (issue 22)."""
    return [Target("rerank 1 × 100 documents, fp32: × sentence-transformers CrossEncoder",
                   rerank_figure("fp32", CROSS_ENCODER), ">=", 2.0),
            Target("rerank 1 × 100 documents, int8: × sentence-transformers CrossEncoder",
                   rerank_figure("int8", CROSS_ENCODER), ">=", 4.0),
            Target("rerank 1 × 100 documents, fp32: × fastembed on the same file",
                   rerank_figure("fp32", FASTEMBED), ">=", 1.3)]


def speculative_figure(precision: str, prompt: str) -> str:
    """Figure: greedy decode tokens/s with prompt-lookup speculative decoding ÷ without (bench_speculative)."""
    return f"speculative_ratio: {precision} {prompt}"


def _speculative_targets() -> list[Target]:
    """fp32 only: ``MODEL_SPECULATIVE=auto`` speculates on float variants (int4's multi-row logits differ)."""
    return [
        Target("prompt-lookup speculative decoding, fp32, editing a given text: × without",
               speculative_figure("fp32", "edit"), ">=", 2.0),
        Target("prompt-lookup speculative decoding, fp32, answering from a given context: × without",
               speculative_figure("fp32", "rag"), ">=", 2.0),
        Target("prompt-lookup speculative decoding, fp32, story (nothing to copy): × without",
               speculative_figure("fp32", "story"), ">=", 0.95),
    ]


#: bench_sizes' result file (and its figures' prefix) per checkpoint shape: the 1B shape's carries
#: the speed targets; the 3B shape's the export peak target beside it.
SIZES_PARTS = {"llama-3.2-1b": "sizes", "llama-3.2-3b": "sizes_3b"}


def sizes_part(shape: str) -> str:
    """The result part bench_sizes writes for ``shape`` (`SIZES_PARTS`, else ``sizes_<shape>``)."""
    return SIZES_PARTS.get(shape, f"sizes_{shape}")


def sizes_figure(measure: str, peer: str, variant: str = "int4", part: str = "sizes") -> str:
    """Figure: on a size checkpoint (bench_sizes; ``part``: the 1B shape's), ortmodels ``variant`` ÷ ``peer``."""
    return ratio_key(f"{part}_{measure}", f"{ORT} {variant}", peer)


def sizes_export_peak_figure(part: str = "sizes") -> str:
    """Figure: the ortmodels export's peak resident memory ÷ the checkpoint's bytes (bench_sizes, from the manifest)."""
    return f"{part}_export_peak: ortmodels / checkpoint"


SIZES_EXPORT_PEAK_FIGURE = sizes_export_peak_figure()


def _sizes_targets() -> list[Target]:
    """Issue 20, at Llama 3.2 1B's shape (random weights), 2 threads; the export's peak at 3B too."""
    return [
        Target("1B shape, int4 decode, 1 stream: × onnxruntime-genai int4",
               sizes_figure("decode", f"{GENAI} int4"), ">=", 1.2),
        Target("1B shape, int4 decode, 1 stream: × llama.cpp Q4_K_M", sizes_figure("decode", "llama.cpp Q4_K_M"),
               ">=", 1.0),
        Target("1B shape, int4, 8 streams: × llama-server Q4_K_M --parallel 8",
               sizes_figure("8_streams", "llama-server Q4_K_M parallel 8"), ">=", 1.5),
        Target("1B shape, int4, first token of a 2,000-token prompt: × llama.cpp Q4_K_M",
               sizes_figure("ttft_long", "llama.cpp Q4_K_M"), "<=", 0.8),
        Target("1B shape, int4, peak RSS with a 4,000-token conversation: × llama.cpp Q4_K_M",
               sizes_figure("peak_rss", "llama.cpp Q4_K_M"), "<=", 1.2),
        Target("1B shape, export peak memory ÷ the checkpoint's bytes", SIZES_EXPORT_PEAK_FIGURE, "<=", 1.5),
        Target("3B shape, export peak memory ÷ the checkpoint's bytes",
               sizes_export_peak_figure(SIZES_PARTS["llama-3.2-3b"]), "<=", 1.5),
    ]


TARGETS: list[Target] = [
    *_chat_targets(),
    Target("perplexity int8 × fp32", f"perplexity_ratio: {ORT} int8", "<=", 1.02),
    Target("perplexity int4 × fp32", f"perplexity_ratio: {ORT} int4", "<=", 1.10),
    Target("embeddings fp32, batch 32: × sentence-transformers",
           ratio_key("embed_b32", f"{ORT} fp32", ST), ">=", 2.2),
    Target("embeddings fp32, batch 32: × fastembed",
           ratio_key("embed_b32", f"{ORT} fp32", FASTEMBED), ">=", 2.0),
    Target("embeddings int8, batch 32: × sentence-transformers",
           ratio_key("embed_b32", f"{ORT} int8", ST), ">=", 4.0),
    *_embedding_batch1_targets(),
    Target("embeddings int8: cosine to fp32, mean", f"cosine_mean: {ORT} int8", ">=", 0.99),
    Target("embeddings int8: cosine to fp32, worst", f"cosine_worst: {ORT} int8", ">=", 0.97),
    Target("embeddings int8: top-10 neighbours shared with fp32", f"top10_agreement: {ORT} int8", ">=", 0.9),
    *_rerank_targets(),
    Target("`import ortmodels`, fresh process (s)", "import_s: ortmodels", "<=", 0.5),
    Target("cold start, int4 chat: import, load, first token (s)", f"cold_start_s: {ORT} int4", "<=", 1.5),
    Target("cold start, int4 chat: × the faster of genai int4 and llama.cpp", COLD_START_VS_PEERS_FIGURE, "<=", 0.9),
    Target("`ortmodels chat` int4, fresh process, 16 tokens: × llama-cpp-python Q4_1", CLI_ANSWER_VS_LLAMA_FIGURE,
           "<=", 1.0),
    Target("peak RSS, int4 chat: × llama.cpp Q4_1", PEAK_RSS_VS_LLAMA_FIGURE, "<=", 1.3),
    *_speculative_targets(),
    *_concurrency_targets(),
    Target("`ortmodels serve` int4, 8 streaming clients: tok/s × llama-server Q4_1", SERVER_VS_LLAMA_FIGURE, ">=", 1.2),
    Target("`ortmodels serve` int4, tok/s: 8 streaming clients ÷ 1", SERVER_SCALING_FIGURE, ">=", 2.0),
    *_sizes_targets(),
]


def evaluate(figures: Mapping[str, float], targets: list[Target] = TARGETS) -> list[dict[str, object]]:
    """One row per target: label, measured value (or None), wanted, verdict."""
    return [
        {"label": t.label, "figure": t.figure, "value": figures.get(t.figure), "wanted": t.wanted,
         "verdict": t.verdict(figures)}
        for t in targets
    ]
